"""The Ollama-compatible FastAPI application: Ollama's routes, its OpenAI-compatible /v1 routes
(`_openai_routes`), error shapes and `/metrics`.

`create_app(settings)` wires an engine, the slot scheduler, the model lifecycle and the metrics together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.types import DecoratedCallable
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, PlainTextResponse, Response

from labkit.service_logs import RequestLogMiddleware
from labkit.services.modelserver._api_errors import ModelServerAPIError, UnknownModelError
from labkit.services.modelserver._api_requests import (
    parse_chat_request,
    parse_generate_request,
    parse_json_object,
    parse_model_name,
    parse_stream_flag,
)
from labkit.services.modelserver._engine import Engine
from labkit.services.modelserver._generation import GenerationService
from labkit.services.modelserver._http_streaming import NDJSON_MEDIA_TYPE, ndjson_line
from labkit.services.modelserver._lifecycle import ModelLifecycle
from labkit.services.modelserver._llama_engine import LlamaEngine
from labkit.services.modelserver._metrics import ModelServerMetrics
from labkit.services.modelserver._model_card import ModelCard
from labkit.services.modelserver._ollama_responses import ollama_error, run_ollama
from labkit.services.modelserver._openai_requests import request_schemas as openai_request_schemas
from labkit.services.modelserver._openai_responses import openai_error
from labkit.services.modelserver._openai_routes import (
    add_openai_routes,
    is_openai_path,
)
from labkit.services.modelserver._openapi import (
    CHAT_REQUEST,
    GENERATE_REQUEST,
    MODEL_REQUEST,
    PULL_REQUEST,
    complete_document,
    error_responses,
    generation_ok_response,
    json_ok_response,
    request_body,
    text_ok_response,
)
from labkit.services.modelserver._request_metrics import RequestMetricsMiddleware
from labkit.services.modelserver._scheduler import SlotScheduler
from labkit.services.modelserver._settings import ModelServerSettings
from labkit.services.modelserver._sim_engine import SimEngine

__all__ = ["API_VERSION", "build_engine", "create_app"]

logger = logging.getLogger(__name__)

# What /api/version answers: the Ollama API level this server follows, marked as labkit's.
API_VERSION = "0.6.0-labkit"
# GET paths polled several times a second (readiness, Prometheus): a success is not worth a log line.
_QUIET_PATHS = ("/", "/api/tags", "/api/version", "/api/ps", "/metrics", "/v1/models")


def build_engine(settings: ModelServerSettings) -> Engine:
    """The engine the settings ask for (nothing is loaded yet; a missing model file raises here)."""
    if settings.engine == "sim":
        return SimEngine(
            seed=settings.seed,
            ttft_s=settings.sim_ttft_s,
            itl_s=settings.sim_itl_s,
            jitter=settings.sim_jitter,
            n_ctx=settings.n_ctx,
        )
    return LlamaEngine(
        model_path=settings.resolved_model_path(),
        n_ctx=settings.n_ctx,
        n_threads=settings.n_threads,
        parallel=settings.num_parallel,
        seed=settings.seed,
    )


def create_app(settings: ModelServerSettings, *, engine: Engine | None = None) -> FastAPI:
    """The model server as an ASGI app; pass `engine` to serve one you built yourself.

    Raises ModelNotFoundError (a ConfigError) when the llama engine's model file is missing.
    """
    engine = engine if engine is not None else build_engine(settings)
    model_path = settings.resolved_model_path() if settings.engine == "llama" else None
    card = ModelCard(name=settings.model_name, model_path=model_path, n_ctx=settings.n_ctx)
    metrics = ModelServerMetrics(
        engine=settings.engine,
        model=settings.model_name,
        version=API_VERSION,
        num_parallel=settings.num_parallel,
        max_queue=settings.max_queue,
    )
    executor = ThreadPoolExecutor(max_workers=settings.num_parallel, thread_name_prefix="labkit-generate")
    lifecycle = ModelLifecycle(engine=engine, metrics=metrics, default_keep_alive=settings.keep_alive_seconds)
    scheduler = SlotScheduler(
        num_parallel=settings.num_parallel, max_queue=settings.max_queue, metrics=metrics
    )
    service = GenerationService(
        engine=engine, lifecycle=lifecycle, scheduler=scheduler, metrics=metrics, executor=executor
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.cancel_all()
            await lifecycle.close()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="labkit model server", version=API_VERSION, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.engine = engine
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    # Outermost: every answer carries its request id (the wrapper's, sent on), every request but a
    # successful probe or scrape is logged with it.
    app.add_middleware(RequestLogMiddleware, quiet_paths=_QUIET_PATHS)

    @app.exception_handler(ModelServerAPIError)
    async def _api_error(request: Request, exc: ModelServerAPIError) -> JSONResponse:
        return openai_error(exc) if is_openai_path(request.url.path) else ollama_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = f"404 page not found: {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        error = ModelServerAPIError(message)
        error.status_code = exc.status_code
        response = await _api_error(request, error)
        response.headers.update(exc.headers or {})
        return response

    async def served_model(request: Request) -> tuple[dict[str, Any], str]:
        body = parse_json_object(await request.body())
        model = parse_model_name(body)
        if not card.matches(model):
            raise UnknownModelError(model)
        return body, model

    async def model_info() -> Any:
        return await asyncio.to_thread(engine.model_info)

    async def model_entry() -> dict[str, Any]:
        return {
            "name": card.name,
            "model": card.name,
            "modified_at": _rfc3339(card.modified_at),
            "size": card.size,
            "digest": await asyncio.to_thread(card.digest),
            "details": card.details(await model_info()),
        }

    running = text_ok_response("`Ollama is running`")

    @app.get("/", response_class=PlainTextResponse, responses=running)
    async def root() -> str:
        return "Ollama is running"

    @app.head("/", response_class=PlainTextResponse, responses=running)
    async def root_head() -> str:
        return "Ollama is running"

    @app.get("/api/version", responses=json_ok_response(_VERSION, "the API level served"))
    async def version() -> dict[str, str]:
        return {"version": API_VERSION}

    @app.get("/api/tags", responses=json_ok_response(_MODEL_LIST, "the models this server has"))
    async def tags() -> dict[str, Any]:
        return {"models": [await model_entry()]}

    @app.get("/api/ps", responses=json_ok_response(_MODEL_LIST, "the models loaded now"))
    async def ps() -> dict[str, Any]:
        if not lifecycle.loaded:
            return {"models": []}
        entry = await model_entry()
        del entry["modified_at"]
        entry.update(
            size_vram=0,  # CPU only: llama.cpp here is built without a GPU backend
            expires_at=_rfc3339(lifecycle.expires_at()),
            context_length=card.context_length,
        )
        return {"models": [entry]}

    @app.post(
        "/api/show",
        responses={**json_ok_response(_SHOW, "the model's details"), **error_responses(400, 404)},
        openapi_extra=request_body(MODEL_REQUEST),
    )
    async def show(request: Request) -> dict[str, Any]:
        await served_model(request)
        info = await model_info()
        template = await asyncio.to_thread(engine.template)
        return {
            "modelfile": card.modelfile(template),
            "parameters": card.parameters(),
            "template": template,
            "details": card.details(info),
            "model_info": dict(info) if info is not None else None,
            "capabilities": ["completion"],
            "modified_at": _rfc3339(card.modified_at),
        }

    @app.post(
        "/api/pull",
        response_class=Response,
        responses={**generation_ok_response(_PULL, "nothing to download"), **error_responses(400, 404)},
        openapi_extra=request_body(PULL_REQUEST),
    )
    async def pull(request: Request) -> Response:
        """Nothing to download: succeeds for the served model only, so scripts that pull first work."""
        body = parse_json_object(await request.body())
        model = parse_model_name(body)
        if not card.matches(model):
            return JSONResponse(
                {"error": f'pull model manifest: file does not exist: labkit serves only "{card.name}" '
                          f"and downloads nothing"},
                status_code=404,
            )  # fmt: skip
        if not parse_stream_flag(body):
            return JSONResponse({"status": "success"})
        return Response(ndjson_line({"status": "success"}), media_type=NDJSON_MEDIA_TYPE)

    def generation_route(
        path: str, final: dict[str, Any], description: str, schema: dict[str, Any]
    ) -> Callable[[DecoratedCallable], DecoratedCallable]:
        """The POST route of a generation: NDJSON or one JSON object, and the errors one can end in."""
        return app.post(
            path,
            response_class=Response,
            responses={**generation_ok_response(final, description), **error_responses(400, 404, 500, 503)},
            openapi_extra=request_body(schema),
        )

    @generation_route("/api/generate", _GENERATE_FINAL, "the completion", GENERATE_REQUEST)
    async def generate(request: Request) -> Response:
        body, _ = await served_model(request)
        return await run_ollama(service, parse_generate_request(body), request)

    @generation_route("/api/chat", _CHAT_FINAL, "the chat reply", CHAT_REQUEST)
    async def chat(request: Request) -> Response:
        body, _ = await served_model(request)
        return await run_ollama(service, parse_chat_request(body), request)

    add_openai_routes(app, card=card, service=service)

    @app.get("/metrics", response_class=Response, responses=text_ok_response("Prometheus text exposition"))
    async def metrics_endpoint() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = default_openapi()
            app.openapi_schema = complete_document(document, openai_request_schemas(_COMPONENT_REF))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


_COMPONENT_REF = "#/components/schemas/{model}"
_VERSION = {"type": "object", "properties": {"version": {"type": "string"}}, "required": ["version"]}
_MODEL_LIST = {
    "type": "object",
    "properties": {"models": {"type": "array", "items": {"type": "object", "required": ["name", "model"]}}},
    "required": ["models"],
}
_SHOW = {
    "type": "object",
    # The official client's Client.show fails without model_info (null is fine).
    "required": ["modelfile", "parameters", "template", "details", "model_info"],
}
_PULL = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
_FINAL_FIELDS = ["model", "created_at", "done", "done_reason", "total_duration", "load_duration"]
_GENERATE_FINAL = {"type": "object", "required": ["response", *_FINAL_FIELDS]}
_CHAT_FINAL = {"type": "object", "required": ["message", *_FINAL_FIELDS]}


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
