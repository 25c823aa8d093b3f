"""The wrapper's FastAPI app: POST /generate in front of an Ollama-API backend, /health, /ready, /metrics.

Every error is a JSON `{"error": ...}` body; every /generate request is counted, admitted or not.
"""

from __future__ import annotations

import asyncio
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

from labkit.errors import ClientGoneError
from labkit.faults import JsonInt, json_integer
from labkit.services.wrapper._admin import admin_router, read_admin_token
from labkit.services.wrapper._backend import UpstreamError, backend_session, missing_model_reason
from labkit.services.wrapper._faults import InjectedFaultError
from labkit.services.wrapper._generation import (
    Generation,
    MeteredStreamingResponse,
    WrapperState,
    collect_generation,
    run_until_client_leaves,
)
from labkit.services.wrapper._metrics import GENERATE_ENDPOINT, WrapperMetrics
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

__all__ = ["GenerateRequest", "create_app"]

logger = logging.getLogger(__name__)

_ROUTES_HINT = (
    "the API has POST /generate, GET /health, GET /ready, GET /metrics "
    "and the token-protected fault API at /admin/faults"
)


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


def _backend_payload(body: GenerateRequest, settings: WrapperSettings) -> dict[str, Any]:
    options = dict(body.options or {})
    if "num_predict" in options:
        options["num_predict"] = json_integer(options["num_predict"])  # 21.0 is 21 (checked before)
    # Always bounded: Ollama's own default (-1) would generate until the context is full.
    options["num_predict"] = body.max_tokens or options.get("num_predict") or settings.max_tokens_limit
    # Always streamed from the backend, so TTFT and inter-token gaps are measured for every request.
    return {"model": body.model or settings.model, "prompt": body.prompt, "stream": True, "options": options}


def create_app(settings: WrapperSettings | None = None) -> FastAPI:
    """Build the wrapper app: one backend client for the app's lifespan, metrics in their own registry.

    Reads the admin token file and the API key file now, if settings name them (ConfigError when one is
    unreadable or empty).
    """
    settings = settings or WrapperSettings()
    admin_token = read_admin_token(settings.admin_token_file) if settings.admin_token_file else None
    api_key = (
        read_token_file(settings.api_key_file, what="API key", flag="--api-key-file")
        if settings.api_key_file
        else None
    )
    package_version = _package_version()
    state = WrapperState(settings, WrapperMetrics(model=settings.model, version=package_version))
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
        summary="The lab's public LLM API in front of an Ollama-API model server.",
        lifespan=lifespan,
        docs_url=None,  # the Swagger page loads its assets from a CDN; the lab runs offline
        redoc_url=None,
    )
    app.state.wrapper = state

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_detail(exc.errors())
        if request.url.path == GENERATE_ENDPOINT:
            state.count_request(422)
        message = "; ".join(f"{_field_name(d['loc'])}: {d['msg']}" for d in detail) or "invalid request"
        if "json" not in request.headers.get("content-type", ""):
            # FastAPI only parses a JSON body sent as JSON (curl -d sends a form content type).
            message += "; send a JSON object with the header Content-Type: application/json"
        return error_response(422, message, detail=detail)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if request.url.path == GENERATE_ENDPOINT:
            state.count_request(exc.status_code)
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message = f"no such endpoint: {where}; {_ROUTES_HINT}"
        elif exc.status_code == 405:
            message = f"method not allowed: {where}; {_ROUTES_HINT}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, f"internal error in the wrapper: {type(exc).__name__}; see its log")

    def count_unauthorized() -> None:
        # The status itself is counted by on_http_error, like every HTTPException on /generate.
        state.metrics.rejected.labels("unauthorized").inc()

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
            state.count_request(422)
            message = "; ".join(f"{_field_name(p['loc'])}: {p['msg']}" for p in problems)
            return error_response(422, message, detail=problems)
        if not state.try_admit():
            state.metrics.rejected.labels("in_flight_limit").inc()
            state.count_request(503)
            return error_response(
                503,
                f"too many requests in flight ({state.in_flight} of {settings.max_in_flight}); "
                f"retry after {settings.retry_after_s} s",
                headers=retry_after,
            )
        payload = _backend_payload(body, settings)
        generation = Generation(state, model=payload["model"], started=started)
        handed_over = False
        try:
            if body.stream:
                first = await run_until_client_leaves(request, generation.open(payload))
                handed_over = True
                return MeteredStreamingResponse(generation, first)
            answer = await run_until_client_leaves(request, collect_generation(generation, payload))
            return JSONResponse(answer)
        except InjectedFaultError as exc:
            # Counted as the status the client got; the backend did not fail, so no backend error.
            generation.finish(exc.status_code)
            return error_response(exc.status_code, exc.message)
        except UpstreamError as exc:
            generation.fail(exc)
            headers = retry_after if exc.retry_after else None
            return error_response(exc.status_code, exc.message, headers=headers)
        except ClientGoneError:
            generation.finish(499)
            return Response(status_code=499)  # nobody reads it; the connection is gone
        except asyncio.CancelledError:
            generation.finish(499)
            raise
        except Exception:
            generation.finish(500)
            raise
        finally:
            if not handed_over:
                await generation.close()

    @app.get("/health", response_model=HealthAnswer)
    async def health() -> dict[str, str]:
        """Liveness: the process serves requests."""
        return {"status": "ok"}

    @app.get("/ready", response_model=ReadyAnswer, responses=error_responses(503))
    async def ready() -> dict[str, str] | JSONResponse:
        """Readiness: the backend answers in time and has the configured model."""
        reason = await missing_model_reason(
            state.backend_client(),
            backend_url=settings.backend_url,
            model=settings.model,
            timeout_s=settings.ready_timeout_s,
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
    # then skips the admin router's matching on every request.
    app.include_router(admin_router(state.faults, admin_token))
    document_settings_limits(app, settings)
    return app
