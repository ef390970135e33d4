"""``nezha serve`` settings and the uvicorn process around the app, with a graceful SIGTERM.

On SIGTERM (or Ctrl-C) the server stops taking work: new requests get 503 while the requests already in flight
finish (up to ``drain_timeout_s``); then uvicorn closes the listening socket and the process exits with status 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import asdict, dataclass
from typing import Literal

from nezha.settings import arg

logger = logging.getLogger("nezha")


@dataclass
class ServeArgs:
    """Settings of ``nezha serve`` (each field is a flag)."""

    model_dir: str = arg(help="a `nezha finetune` model/ folder, or a pretrained folder (fill-mask)", positional=True)
    host: str = arg("127.0.0.1", "address to listen on (0.0.0.0 exposes the server to the network)")
    port: int = arg(8000, "TCP port (0: any free port, printed at start)")
    device: Literal["auto", "cpu", "cuda"] = arg("auto", "where the torch backend runs")
    backend: Literal["torch", "onnx"] = arg("torch", "torch, or onnx (ONNX Runtime over --onnx_file)")
    onnx_file: str = arg("", "the graph from `nezha export-onnx` (default MODEL_DIR/model.onnx)")
    int8: bool = arg(False, "onnx: quantize the weights to int8 at load (dynamic quantization)")
    max_batch: int = arg(32, "most inputs answered by one forward pass (1: no dynamic batching)")
    max_wait_ms: float = arg(5.0, "longest a request waits for others to share its batch")
    max_inputs: int = arg(64, "most texts (or question/context pairs) in one request")
    max_chars: int = arg(4000, "longest text, question or context in characters (0: no limit; NER and MRC window "
                               "long texts, classification and fill-mask read the first max_seq_length tokens)")
    max_body_kb: int = arg(1024, "largest request body in KiB")
    top_k: int = arg(5, "fill-mask: candidates per [MASK]")
    drain_timeout_s: float = arg(30.0, "after SIGTERM, longest wait for in-flight requests")

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_inputs", "max_body_kb", "top_k"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        for name in ("max_wait_ms", "max_chars", "drain_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"--port must be in [0, 65535], got {self.port}")
        if self.int8 and self.backend != "onnx":
            raise ValueError("--int8 applies to --backend onnx only")


def build(args: ServeArgs):
    """(ASGI app, batcher, task) for the settings: loads the model once."""
    from nezha.inference import pipeline
    from nezha.serve.app import Limits, ServerState, create_app
    from nezha.serve.batching import DynamicBatcher

    pipe = pipeline(args.model_dir, device=args.device, backend=args.backend, onnx_file=args.onnx_file or None,
                    int8=args.int8, top_k=args.top_k, batch_size=args.max_batch)
    batcher = DynamicBatcher(pipe.predict, max_batch=args.max_batch, max_wait_s=args.max_wait_ms / 1000)
    limits = Limits(max_body_bytes=args.max_body_kb * 1024, max_inputs=args.max_inputs, max_chars=args.max_chars)
    shown = {k: v for k, v in asdict(args).items() if k in ("backend", "int8", "model_dir")}
    return create_app(pipe, batcher, limits, ServerState(), shown), batcher, pipe.task


def serve(args: ServeArgs) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    import uvicorn

    app, batcher, task = build(args)
    state = app.state
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=max(1, int(args.drain_timeout_s)))

    class DrainingServer(uvicorn.Server):
        """The first signal starts draining (503 for new requests); the server stops once in-flight work is done."""

        _tasks: list = []

        def handle_exit(self, sig: int, frame) -> None:
            if state.draining:
                self.force_exit = sig == signal.SIGINT
                return
            state.draining = True
            logger.info("nezha serve: signal %d, finishing %d in-flight request(s)", sig, state.in_flight)
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(lambda: self._tasks.append(loop.create_task(self._drain())))

        async def _drain(self) -> None:
            deadline = time.monotonic() + args.drain_timeout_s
            while state.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            self.should_exit = True

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            for s in self.servers:
                for sock in s.sockets:
                    host, port = sock.getsockname()[:2]
                    print(f"nezha serve: {task} model at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)

    server = DrainingServer(config)
    try:
        server.run()
    finally:
        batcher.close()
    return 0

