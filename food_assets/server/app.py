"""The HTTP API of `food-assets serve` (FastAPI): predict, health, readiness, metrics, OpenAPI.

- `POST /predict?k=5`: one image as the raw body (`image/*`, `application/octet-stream`) or the
  multipart field `image`; JSON with the model, its registry version, backend, precision and
  the top-k. Requests are batched (`Batcher`).
- `GET /health`: the process answers (liveness). `GET /ready`: 200 once a model is loaded, 503
  before (readiness). `GET /metrics`: Prometheus text. `GET /docs`, `/openapi.json`: the API.
- A client's mistake is a 4xx with `{"error": {"code", "message"}}`; anything else a 500 with
  the same shape and no traceback (the log has it).
- With a token (`ServerSettings.token`), every path but /health and /ready needs
  `Authorization: Bearer <token>` (probes stay open for the orchestrator).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from food_assets.server import uploads
from food_assets.server.batcher import Batcher
from food_assets.server.metrics import Metrics
from food_assets.server.models import ChampionWatcher, ModelSlot, ServedModel, load_served
from food_assets.server.uploads import ApiError

log = logging.getLogger("food_assets.server")
OPEN_PATHS = ("/health", "/ready")


@dataclass
class ServerSettings:
    """Everything `food-assets serve` can set. Sizes in bytes and pixels."""

    data: Path
    ref: str | None = None
    precision: str = "auto"
    backend: str = "auto"
    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_body_bytes: int = 8 * 2**20
    max_pixels: int = 25_000_000
    default_k: int = 5
    max_k: int = 20
    token: str | None = None
    poll_s: float = 30.0  # how often `champion` (any alias) is looked up; 0: never


@dataclass
class ServerState:
    settings: ServerSettings
    slot: ModelSlot = field(default_factory=ModelSlot)
    metrics: Metrics = field(default_factory=Metrics)
    batcher: Batcher | None = None
    watcher: ChampionWatcher | None = None
    on_fatal: Callable[[str], None] | None = None  # the server stops when the first load fails

    def load_initial(self) -> None:
        s = self.settings
        try:
            model = load_served(s.ref, s.data, s.precision, s.backend)
        except Exception as exc:  # reported through /ready and the log; the server stops
            self.slot.error = str(exc)
            log.error("could not load the model: %s", exc)
            if self.on_fatal is not None:
                self.on_fatal(str(exc))
            return
        self.slot.set(model)
        self.metrics.model_loaded(model)
        log.info(
            "serving %s (%s, %s %s; %s)",
            model.name,
            model.source,
            model.backend,
            model.precision,
            model.reason,
        )
        if s.poll_s > 0 and follows_alias(s.ref):
            self.watcher = ChampionWatcher(
                self.slot,
                str(s.ref),
                s.data,
                precision=s.precision,
                backend=s.backend,
                interval_s=s.poll_s,
                on_swap=self.metrics.model_loaded,
            )
            self.watcher.start()


def follows_alias(ref: str | None) -> bool:
    """`champion` or `models:/<name>@<alias>`: a reference whose version can move."""
    from food_assets.tracking import model_registry

    if not model_registry.is_registry_reference(ref):
        return False
    return ref == model_registry.CHAMPION or "@" in str(ref)


def _answer(model: ServedModel, probs: Any, k: int) -> dict[str, Any]:
    top = model.predictor.top_k(probs, k)
    return {
        "model": model.name,
        "version": model.version,
        "source": model.source,
        "backend": model.backend,
        "precision": model.precision,
        "label": top[0][0],
        "probability": top[0][1],
        "top_k": [{"label": c, "probability": p} for c, p in top],
    }


_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {uploads.FIELD: {"type": "string", "format": "binary"}},
                    "required": [uploads.FIELD],
                }
            },
        },
    },
    "parameters": [
        {
            "name": "k",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1},
            "description": "How many classes to return (default 5, at most --max-k and the "
            "number of classes).",
        }
    ],
}


def create_app(settings: ServerSettings, state: ServerState | None = None) -> FastAPI:
    """The FastAPI app; the model loads in a background thread once the app starts."""
    state = state or ServerState(settings)
    state.batcher = Batcher(
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        on_batch=state.metrics.batch_size.observe,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.batcher.start()
        threading.Thread(target=state.load_initial, name="model-loader", daemon=True).start()
        yield
        if state.watcher is not None:
            state.watcher.stop()
        await state.batcher.stop()

    app = FastAPI(
        title="food_assets model server",
        summary="Food-101 classifiers over HTTP (food-assets serve)",
        lifespan=lifespan,
    )
    app.state.server = state

    @app.middleware("http")
    async def auth_and_metrics(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        path = request.url.path
        if settings.token and path not in OPEN_PATHS and not _authorized(request, settings.token):
            response: Response = JSONResponse(
                {"error": {"code": "unauthorized", "message": "missing or wrong bearer token"}},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        else:
            response = await call_next(request)
        state.metrics.request(path, response.status_code, time.perf_counter() - start)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = {"error": {"code": code, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        body = {"error": {"code": "internal", "message": f"{type(exc).__name__} (see the log)"}}
        return JSONResponse(body, status_code=500)

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: 200 once a model is loaded, 503 before")
    async def ready() -> JSONResponse:
        model = state.slot.current
        if model is None:
            reason = state.slot.error or "loading the model"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        body = {"ready": True, "model": model.name, "version": model.version}
        return JSONResponse(body | {"backend": model.backend, "precision": model.precision})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.post("/predict", summary="Top-k classes of one image", openapi_extra=_PREDICT_BODY)
    async def predict(request: Request) -> dict[str, Any]:
        model = state.slot.current
        if model is None:
            raise ApiError(503, "not_ready", state.slot.error or "the model is still loading")
        upper = min(settings.max_k, model.num_classes)
        k = uploads.parse_k(request.query_params.get("k"), settings.default_k, upper)
        kind = uploads.check_content_type(request.headers)
        body = await uploads.read_body(request, settings.max_body_bytes)
        if kind == "multipart":
            body = await uploads.multipart_image(request, body, settings.max_body_bytes)
        tensor = await run_in_threadpool(_decode, model, body, settings.max_pixels)
        assert state.batcher is not None
        probs = await state.batcher.submit(tensor, model)
        return _answer(model, probs, k)

    return app


def _decode(model: ServedModel, body: bytes, max_pixels: int) -> Any:
    from food_assets.ml.data.images import ImageDecodeError

    if not body:
        raise ApiError(400, "empty_body", "the body is empty: send the image's bytes")
    try:
        return model.tensor(body, max_pixels)
    except ImageDecodeError as exc:
        status, code = uploads.DECODE_ERRORS.get(exc.reason, (400, "corrupt_image"))
        detail = f" ({exc.detail})" if exc.detail else ""
        raise ApiError(status, code, f"{exc.reason}{detail}") from None


def _authorized(request: Request, token: str) -> bool:
    got = request.headers.get("authorization", "")
    scheme, _, value = got.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)
