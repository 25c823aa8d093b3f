"""The wrapper's FastAPI app: POST /generate and the OpenAI-compatible /v1/ in front of an Ollama or
OpenAI-compatible model server, /health, /ready, /metrics.

Every error is a JSON body (`{"error": ...}`, in OpenAI's shape under /v1/); every generation request is
counted, admitted or not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from labkit.faults import JsonInt, json_integer
from labkit.measure.histograms import GENERATION_ENDPOINTS
from labkit.service_logs import REQUEST_ID_HEADER, RequestLogMiddleware, request_id_of
from labkit.services.wrapper._admin import admin_router, read_admin_token
from labkit.services.wrapper._generation import (
    NDJSON,
    GenerationSummary,
    WrapperState,
    run_generation,
    upstream_for,
)
from labkit.services.wrapper._metrics import GENERATE_ENDPOINT, WrapperMetrics
from labkit.services.wrapper._openai_api import V1_PREFIX, openai_error, openai_router
from labkit.services.wrapper._openapi import (
    HealthAnswer,
    ReadyAnswer,
    document_settings_limits,
    error_responses,
    generate_ok_response,
    metrics_ok_response,
)
from labkit.services.wrapper._settings import WrapperSettings
from labkit.services.wrapper._tokens import api_key_checker, read_token_file
from labkit.services.wrapper._upstream import GenerationCall, backend_session, missing_model_reason

__all__ = ["GenerateRequest", "create_app"]

logger = logging.getLogger(__name__)

_ROUTES_HINT = (
    "the API has POST /generate, POST /v1/chat/completions, POST /v1/completions, GET /v1/models, "
    "GET /health, GET /ready, GET /metrics and the token-protected fault API at /admin/faults"
)


# GET paths polled several times a second (readiness, Prometheus): a success is not worth a log line.
_QUIET_PATHS = ("/health", "/ready", "/metrics")


class GenerateRequest(BaseModel):
    """The body of POST /generate. Strict types; unknown fields are rejected.

    The prompt's upper length and max_tokens' upper bound come from the wrapper's settings.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, description="the text to continue")
    model: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"\S",  # a blank name is no name: the backend would answer 400 "model is required"
        description="backend model; default: the wrapper's",
    )
    max_tokens: JsonInt | None = Field(
        default=None, ge=1, description="most tokens to generate (Ollama's num_predict)"
    )
    stream: bool = Field(default=False, description="answer as NDJSON lines instead of one JSON object")
    options: dict[str, Any] | None = Field(default=None, description="passed through to Ollama's options")


def _package_version() -> str:
    try:
        return version("labkit")
    except PackageNotFoundError:
        return "unknown"


def error_response(
    status_code: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    detail: Sequence[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = list(detail)
    return JSONResponse(body, status_code=status_code, headers=headers)


def _field_name(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_detail(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's errors as loc/msg/type; pydantic's `input` would echo a 16 KiB prompt back."""
    detail = []
    for e in errors:
        loc, msg = list(e["loc"]), str(e["msg"])
        if e["type"] == "json_invalid":
            # FastAPI puts the character position into loc; say it in words instead.
            reason = (e.get("ctx") or {}).get("error")
            msg = f"invalid JSON at character {loc[-1]}" + (f" ({reason})" if reason else "")
            loc = ["body"]
        detail.append({"loc": loc, "msg": msg, "type": str(e["type"])})
    return detail


def _request_problems(body: GenerateRequest, settings: WrapperSettings) -> list[dict[str, Any]]:
    """Checks whose bounds come from settings, as validation errors in FastAPI's shape."""
    problems: list[dict[str, Any]] = []
    if len(body.prompt) > settings.max_prompt_chars:
        problems.append({
            "loc": ["body", "prompt"],
            "msg": f"longer than the limit of {settings.max_prompt_chars} characters",
            "type": "string_too_long",
        })  # fmt: skip
    limit = settings.max_tokens_limit
    if body.max_tokens is not None and body.max_tokens > limit:
        problems.append({
            "loc": ["body", "max_tokens"],
            "msg": f"more than the limit of {limit} tokens",
            "type": "less_than_equal",
        })  # fmt: skip
    # Checked even beside max_tokens (which wins): a request with a bad value is wrong either way.
    if body.options and "num_predict" in body.options:
        value = json_integer(body.options["num_predict"])
        if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= limit):
            problems.append({
                "loc": ["body", "options", "num_predict"],
                "msg": f"must be an integer from 1 to {limit} (or use max_tokens)",
                "type": "num_predict_out_of_range",
            })  # fmt: skip
    return problems


def _generation_call(
    body: GenerateRequest, settings: WrapperSettings, request_id: str | None
) -> GenerationCall:
    options = dict(body.options or {})
    num_predict = options.pop("num_predict", None)
    # Always bounded: Ollama's own default (-1) would generate until the context is full.
    max_tokens = body.max_tokens or json_integer(num_predict) or settings.max_tokens_limit  # 21.0 is 21
    return GenerationCall(
        "text_completion",
        model=body.model or settings.model,
        max_tokens=max_tokens,
        prompt=body.prompt,
        options=options,
        request_id=request_id,
    )


def _generate_answer(text: str, summary: GenerationSummary) -> dict[str, Any]:
    fields = summary.generate_fields()
    return {"model": fields.pop("model"), "response": text, **fields}


def create_app(settings: WrapperSettings | None = None) -> FastAPI:
    """Build the wrapper app: one backend client for the app's lifespan, metrics in their own registry.

    Reads the admin token file, the API key file and the backend's API key file now, if settings name them
    (ConfigError when one is unreadable or empty).
    """
    settings = settings or WrapperSettings()
    admin_token = read_admin_token(settings.admin_token_file) if settings.admin_token_file else None
    api_key = (
        read_token_file(settings.api_key_file, what="API key", flag="--api-key-file")
        if settings.api_key_file
        else None
    )
    package_version = _package_version()
    upstream = upstream_for(settings)
    state = WrapperState(
        settings,
        upstream,
        WrapperMetrics(
            model=settings.model,
            version=package_version,
            provider=upstream.provider,
            upstream_url=upstream.url,
        ),
    )
    retry_after = {"Retry-After": str(settings.retry_after_s)}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with backend_session(
            connect_timeout_s=settings.connect_timeout_s, read_timeout_s=settings.backend_timeout_s
        ) as client:
            state.client = client
            try:
                yield
            finally:
                state.client = None
                # Faults live only in memory: they die with the app, and a restarted wrapper has none.
                state.faults.end_all("shutdown")

    app = FastAPI(
        title="labkit wrapper",
        version=package_version,
        summary="The lab's public LLM API, its own and OpenAI's, in front of an Ollama or OpenAI-compatible "
        "model server.",
        lifespan=lifespan,
        docs_url=None,  # the Swagger page loads its assets from a CDN; the lab runs offline
        redoc_url=None,
    )
    app.state.wrapper = state
    # Every answer carries its request id; probes and scrapes that succeed are not logged.
    app.add_middleware(RequestLogMiddleware, quiet_paths=_QUIET_PATHS)

    def is_openai(request: Request) -> bool:
        path = request.url.path
        return path == V1_PREFIX or path.startswith(V1_PREFIX + "/")

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_detail(exc.errors())
        # OpenAI's API answers a bad body 400 (invalid_request_error), the lab's own 422 with `detail`.
        status = 400 if is_openai(request) else 422
        if request.url.path in GENERATION_ENDPOINTS:
            state.count_request(request.url.path, status)
        message = "; ".join(f"{_field_name(d['loc'])}: {d['msg']}" for d in detail) or "invalid request"
        if "json" not in request.headers.get("content-type", ""):
            # FastAPI only parses a JSON body sent as JSON (curl -d sends a form content type).
            message += "; send a JSON object with the header Content-Type: application/json"
        if status == 400:
            return openai_error(400, message, param=_field_name(detail[0]["loc"]) if detail else None)
        return error_response(422, message, detail=detail)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if request.url.path in GENERATION_ENDPOINTS:
            state.count_request(request.url.path, exc.status_code)
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message = f"no such endpoint: {where}; {_ROUTES_HINT}"
        elif exc.status_code == 405:
            message = f"method not allowed: {where}; {_ROUTES_HINT}"
        else:
            message = str(exc.detail)
        if is_openai(request):
            return openai_error(exc.status_code, message, headers=exc.headers)
        return error_response(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        message = f"internal error in the wrapper: {type(exc).__name__}; see its log"
        # Answered by Starlette's outermost middleware, outside RequestLogMiddleware: the id is echoed here.
        request_id = request_id_of(request.scope)
        headers = {REQUEST_ID_HEADER: request_id} if request_id is not None else None
        if is_openai(request):
            return openai_error(500, message, headers=headers)
        return error_response(500, message, headers=headers)

    def count_unauthorized() -> None:
        # The status itself is counted by on_http_error, like every HTTPException on a generation endpoint.
        state.metrics.rejected.labels("unauthorized").inc()

    def refuse(status_code: int, message: str, send_retry_after: bool) -> JSONResponse:
        return error_response(status_code, message, headers=retry_after if send_retry_after else None)

    generate_statuses: tuple[int, ...] = (400, 404, 422, 500, 502, 503, 504)
    generate_dependencies = []
    if api_key is not None:
        generate_statuses = (*generate_statuses, 401)
        generate_dependencies.append(Depends(api_key_checker(api_key, count_unauthorized)))

    @app.post(
        GENERATE_ENDPOINT,
        response_model=None,
        responses={**generate_ok_response(), **error_responses(*generate_statuses, retry_after=True)},
        dependencies=generate_dependencies,
    )
    async def generate(body: GenerateRequest, request: Request) -> Response:
        """Generate a completion: one JSON object, or NDJSON lines with `"stream": true`."""
        started = time.perf_counter()
        problems = _request_problems(body, settings)
        if problems:
            state.count_request(GENERATE_ENDPOINT, 422)
            message = "; ".join(f"{_field_name(p['loc'])}: {p['msg']}" for p in problems)
            return error_response(422, message, detail=problems)
        return await run_generation(
            state,
            request,
            _generation_call(body, settings, request_id_of(request.scope)),
            endpoint=GENERATE_ENDPOINT,
            started=started,
            stream=body.stream,
            encoder=NDJSON,
            answer=_generate_answer,
            refuse=refuse,
            busy_status=503,
        )

    @app.get("/health", response_model=HealthAnswer)
    async def health() -> dict[str, str]:
        """Liveness: the process serves requests."""
        return {"status": "ok"}

    @app.get("/ready", response_model=ReadyAnswer, responses=error_responses(503))
    async def ready() -> dict[str, str] | JSONResponse:
        """Readiness: the backend answers in time and has the configured model."""
        reason = await missing_model_reason(
            state.upstream, state.backend_client(), model=settings.model, timeout_s=settings.ready_timeout_s
        )
        if reason is not None:
            return error_response(503, reason)
        return {"status": "ready", "model": settings.model, "backend_url": settings.backend_url}

    @app.get("/metrics", response_class=Response, responses=metrics_ok_response())
    async def metrics() -> Response:
        """Prometheus text exposition of this app's registry."""
        state.faults.expire_due()  # llm_faults_active is right even if a TTL timer is late
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # Included after the app's own routes: routes are matched in order, and /generate, matched first,
    # then skips the other routers' matching on every request.
    app.include_router(openai_router(state, generate_dependencies, with_api_key=api_key is not None))
    app.include_router(admin_router(state.faults, admin_token))
    document_settings_limits(app, settings)
    return app
