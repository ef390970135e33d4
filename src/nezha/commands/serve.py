"""``nezha serve MODEL_DIR``: HTTP JSON API (POST /predict, GET /info, /health, /ready, OpenAPI at /docs) and a
page at / to try the model, with dynamic batching on PyTorch or ONNX Runtime. Needs the ``serve`` extra."""

from __future__ import annotations

import argparse

from nezha.serve.server import ServeArgs
from nezha.settings import add_dataclass_arguments, dataclass_from_namespace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Example: nezha serve out/clf/model --port 8000, then open http://127.0.0.1:8000/ or "
                     "curl -d '{\"texts\": [\"这家酒店很干净\"]}' http://127.0.0.1:8000/predict. SIGTERM finishes the "
                     "requests in flight (new ones get 503) and exits 0. See docs/serve.md.")
    add_dataclass_arguments(parser, ServeArgs)


def run(args: argparse.Namespace) -> int:
    from nezha.errors import UserError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("nezha serve needs the serve extra: pip install 'nezha-pytorch[serve]'") from None
    from nezha.serve.server import serve

    return serve(dataclass_from_namespace(ServeArgs, args))
