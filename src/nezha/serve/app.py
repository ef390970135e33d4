"""The HTTP API: ``POST /predict``, ``GET /info``, ``/health``, ``/ready``, the try-it page at ``/`` and OpenAPI.

Request bodies are read and checked here, not by a schema library, so every bad request gets a 4xx with one line
saying what is wrong and where (``texts[3]: text is empty``): a body over ``max_body_bytes`` (413), bytes that are
not UTF-8 or not JSON (400), the wrong shape or fields, too many inputs, a text over ``max_chars`` (422). Nothing a
client sends reaches the model unchecked, and an unexpected error is a 500 that leaves the server running.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass
from importlib import resources

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline  # /docs with Swagger UI files from the package, no CDN
from starlette.exceptions import HTTPException as StarletteHTTPException

from nezha.inference import InputError, Pipeline
from nezha.serve.batching import DynamicBatcher

logger = logging.getLogger("nezha")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20  # request body
    max_inputs: int = 64  # texts (or question/context pairs) per request
    max_chars: int = 4000  # characters per text, question or context; 0: no limit (long texts are windowed)


class RequestError(Exception):
    """A client error: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def input_field(task: str) -> str:
    return "inputs" if task == "mrc" else "texts"


def parse_body(body: bytes, task: str, limits: Limits) -> list:
    """The request's inputs, or a :class:`RequestError` naming the first problem."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes; the limit is {limits.max_body_bytes}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(400, f"request body is not valid UTF-8 (byte {e.start})") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise RequestError(400, f"request body is not valid JSON ({e})") from None
    field = input_field(task)
    example = ('{"inputs": [{"question": "...", "context": "..."}]}' if task == "mrc" else '{"texts": ["..."]}')
    if not isinstance(data, dict):
        raise RequestError(422, f"expected a JSON object like {example}, got {type(data).__name__}")
    unknown = sorted(set(data) - {field})
    if unknown or field not in data:
        raise RequestError(422, f"this {task} model takes {example}; got field(s) {sorted(data)}")
    items = data[field]
    if not isinstance(items, list):
        raise RequestError(422, f"{field} must be a list, got {type(items).__name__}")
    if not items:
        raise RequestError(422, f"{field} is empty")
    if len(items) > limits.max_inputs:
        raise RequestError(422, f"{field} has {len(items)} entries; the limit is {limits.max_inputs} per request")
    for i, item in enumerate(items):
        _check_item(item, f"{field}[{i}]", task, limits)
    return items


def _check_item(item, where: str, task: str, limits: Limits) -> None:
    if task == "mrc":
        if not isinstance(item, dict):
            raise RequestError(422, f'{where} must be an object {{"question": ..., "context": ...}}, '
                                    f"got {type(item).__name__}")
        extra = sorted(set(item) - {"question", "context"})
        missing = [k for k in ("question", "context") if k not in item]
        if missing or extra:
            what = "; ".join(f"{k} {v}" for k, v in (("missing", missing), ("unknown", extra)) if v)
            raise RequestError(422, f"{where} needs exactly the fields question and context; {what}")
        for key in ("question", "context"):
            _check_text(item[key], f"{where}.{key}", limits)
    else:
        _check_text(item, where, limits)


def _check_text(value, where: str, limits: Limits) -> None:
    if not isinstance(value, str):
        raise RequestError(422, f"{where} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RequestError(422, f"{where} is empty")
    if limits.max_chars and len(value) > limits.max_chars:
        raise RequestError(422, f"{where} has {len(value)} characters; the limit is {limits.max_chars}")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it passes ``limit`` bytes, declared or streamed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class ServerState:
    """In-flight request count and the draining flag set by SIGTERM."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False


PREDICT_SCHEMA = {
    "content": {"application/json": {"schema": {"oneOf": [
        {"type": "object", "required": ["texts"], "additionalProperties": False,
         "properties": {"texts": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}},
         "description": "classification, NER and fill-mask models", "example": {"texts": ["这家酒店很干净"]}},
        {"type": "object", "required": ["inputs"], "additionalProperties": False,
         "properties": {"inputs": {"type": "array", "minItems": 1, "items": {
             "type": "object", "required": ["question", "context"], "additionalProperties": False,
             "properties": {"question": {"type": "string"}, "context": {"type": "string"}}}}},
         "description": "reading-comprehension (MRC) models"},
    ]}}},
    "required": True,
}


def create_app(pipe: Pipeline, batcher: DynamicBatcher, limits: Limits, state: ServerState | None = None,
               settings: dict | None = None) -> DrainGate:
    """The ASGI application (FastAPI behind the drain gate) around a loaded pipeline and its batcher."""
    import nezha

    state = state or ServerState()
    app = FastAPIOffline(title="nezha serve", version=nezha.__version__,
                  description=f"NEZHA {pipe.task} model. POST /predict; the page at / tries it in a browser.")
    page = resources.files("nezha.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, exc: RequestError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception):
        logger.exception("request failed")
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="the process is up")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="the model is loaded and requests are accepted")
    async def ready() -> dict:
        return {"status": "ready"}

    @app.get("/info", summary="task, labels, limits and batching settings")
    async def info() -> dict:
        return {**pipe.info(), "input_field": input_field(pipe.task), "limits": asdict(limits),
                "batching": {"max_batch": batcher.max_batch, "max_wait_ms": batcher.max_wait_s * 1000,
                             "batches_run": batcher.batches}, **(settings or {})}

    @app.post("/predict", summary="answers for a list of inputs, in order",
              openapi_extra={"requestBody": PREDICT_SCHEMA})
    async def predict(request: Request) -> JSONResponse:
        items = parse_body(await _read_body(request, limits.max_body_bytes), pipe.task, limits)
        field = input_field(pipe.task)
        try:
            pipe.check(items)  # bad input is answered before it is queued (the pipeline checks again when run)
            answers = await asyncio.wrap_future(batcher.submit(items))
        except InputError as e:
            raise RequestError(422, f"{field}[{e.index}]: {e.reason}") from None
        return JSONResponse({"predictions": answers})  # already plain JSON types: skip FastAPI's encoder

    return DrainGate(app, state)


class DrainGate:
    """ASGI wrapper: counts requests in flight and answers 503 to new ones while the server drains.

    A plain ASGI layer rather than an ``@app.middleware("http")`` function, which costs about a millisecond of
    event-loop time per request (a quarter of a small model's whole request at high concurrency).
    """

    def __init__(self, app: FastAPIOffline, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.state.draining and scope["path"] != "/health":
            body = b'{"detail":"server is shutting down"}'
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        self.state.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.in_flight -= 1
