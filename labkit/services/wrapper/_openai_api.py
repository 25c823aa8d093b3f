"""The wrapper's OpenAI-compatible API: POST /v1/chat/completions and /v1/completions, GET /v1/models and
/v1/models/{model}, whatever API the upstream speaks. Generations go through the same code path as
POST /generate (labkit.services.wrapper._generation: metrics, faults, in-flight bound, shedding); only the
encoding differs: server-sent events ending in `data: [DONE]`, and errors in OpenAI's shape.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse, Response

from labkit.service_logs import request_id_of
from labkit.services.wrapper._generation import GenerationSummary, StreamEncoder, WrapperState, run_generation
from labkit.services.wrapper._metrics import CHAT_COMPLETIONS_ENDPOINT, COMPLETIONS_ENDPOINT
from labkit.services.wrapper._openai_schema import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ModelList,
    ModelObject,
    SamplingRequest,
)
from labkit.services.wrapper._openapi import openai_error_responses, sse_ok_response
from labkit.services.wrapper._settings import WrapperSettings
from labkit.services.wrapper._upstream import GenerationCall, Operation, UpstreamError, UpstreamModel

__all__ = ["V1_PREFIX", "openai_error", "openai_error_type", "openai_router", "sse_token"]

V1_PREFIX = "/v1"
_BUSY = 429  # what /v1 answers when full (the wrapper's bound or the upstream's); /generate answers 503
_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


def openai_error_type(status_code: int) -> str:
    """The `type` of an error answer, as Ollama's OpenAI layer maps statuses."""
    return {400: "invalid_request_error", 404: "not_found_error"}.get(status_code, "api_error")


def openai_error(
    status_code: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An error answer in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""
    body = {
        "error": {
            "message": message,
            "type": openai_error_type(status_code),
            "param": param,
            "code": code if code is not None else _CODES.get(status_code),
        }
    }
    return JSONResponse(body, status_code=status_code, headers=headers)


def _finish_reason(done_reason: str | None) -> str:
    return "length" if done_reason == "length" else "stop"


def _usage(summary: GenerationSummary) -> dict[str, int | None]:
    prompt = summary.prompt_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": summary.output_tokens,
        "total_tokens": None if prompt is None else prompt + summary.output_tokens,
    }


_SSE_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _event(obj: Mapping[str, Any]) -> bytes:
    return b"data: " + _SSE_ENCODER.encode(obj).encode() + b"\n\n"


def sse_token(prefix: bytes, piece: str, suffix: bytes) -> bytes:
    """One token's event, built around `json.dumps(piece)` without encoding a dict (the one event sent per
    token: the request's fixed head and tail are encoded once, in `_SseEncoder`)."""
    return prefix + json.dumps(piece).encode() + suffix


class _SseEncoder:
    """A /v1 stream: one `data:` event per token, the finish reason, the usage chunk when asked for, then
    `data: [DONE]`; an upstream failure after the 200 as an error event."""

    media_type = "text/event-stream"

    def __init__(self, operation: Operation, *, model: str, include_usage: bool) -> None:
        chat = operation == "chat"
        self._head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self._chat = chat
        self._include_usage = include_usage
        token_choice: dict[str, Any] = (
            {"index": 0, "delta": {"role": "assistant", "content": "\0"}, "finish_reason": None}
            if chat
            else {"index": 0, "text": "\0", "logprobs": None, "finish_reason": None}
        )
        # The token event with a placeholder where the text goes, split there once per request.
        template = _event({**self._head, "choices": [token_choice]})
        # rsplit: the text is the last string of the event; a model name could hold the placeholder too.
        self._prefix, self._suffix = template.rsplit(b'"\\u0000"', 1)

    def token(self, piece: str) -> bytes:
        return sse_token(self._prefix, piece, self._suffix)

    def end(self, summary: GenerationSummary) -> bytes:
        reason = _finish_reason(summary.done_reason)
        choice: dict[str, Any] = (
            {"index": 0, "delta": {}, "finish_reason": reason}
            if self._chat
            else {"index": 0, "text": "", "logprobs": None, "finish_reason": reason}
        )
        events = _event({**self._head, "choices": [choice]})
        if self._include_usage:
            events += _event({**self._head, "choices": [], "usage": _usage(summary)})
        return events + b"data: [DONE]\n\n"

    def error(self, error: UpstreamError) -> bytes:
        status = _BUSY if error.kind == "busy" else error.status_code
        body = {"message": error.message, "type": openai_error_type(status), "param": None, "code": None}
        return _event({"error": body})


def _problem(max_tokens: int | None, texts: Sequence[str], settings: WrapperSettings) -> str:
    """Checks whose bounds come from settings: the first problem as a sentence, or ""."""
    if max_tokens is not None and max_tokens > settings.max_tokens_limit:
        return f"more than the limit of {settings.max_tokens_limit} tokens"
    if any(len(text) > settings.max_prompt_chars for text in texts):
        return f"longer than the limit of {settings.max_prompt_chars} characters"
    return ""


def openai_router(state: WrapperState, dependencies: Sequence[Depends], *, with_api_key: bool) -> APIRouter:
    """The /v1/ routes over `state`; `dependencies` check the API key (`with_api_key` documents the 401)."""
    settings = state.settings
    retry_after = {"Retry-After": str(settings.retry_after_s)}
    auth = (401,) if with_api_key else ()
    router = APIRouter(prefix=V1_PREFIX, dependencies=list(dependencies), tags=["openai"])

    def refuse(status_code: int, message: str, send_retry_after: bool) -> Response:
        return openai_error(status_code, message, headers=retry_after if send_retry_after else None)

    def refuse_request(endpoint: str, message: str, param: str) -> Response:
        state.count_request(endpoint, 400)
        return openai_error(400, f"{param}: {message}", param=param)

    async def generate(
        request: Request,
        body: SamplingRequest,
        call: GenerationCall,
        *,
        endpoint: str,
        started: float,
        answer: Callable[[str, GenerationSummary, dict[str, Any]], dict[str, Any]],
    ) -> Response:
        encoder: StreamEncoder = _SseEncoder(
            call.operation, model=call.model, include_usage=body.include_usage
        )
        head = {"id": f"{'chatcmpl' if call.operation == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"}
        return await run_generation(
            state,
            request,
            call,
            endpoint=endpoint,
            started=started,
            stream=body.stream,
            encoder=encoder,
            answer=lambda text, summary: answer(text, summary, {**head, "created": int(time.time())}),
            refuse=refuse,
            busy_status=_BUSY,
        )

    generation_errors = openai_error_responses(400, *auth, 404, 429, 500, 502, 503, 504)

    @router.post(
        "/chat/completions",
        response_model=None,
        responses={**sse_ok_response(ChatCompletion, "the chat completion"), **generation_errors},
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """Chat: one JSON object, or server-sent events with `"stream": true`."""
        started = time.perf_counter()
        endpoint = CHAT_COMPLETIONS_ENDPOINT
        max_tokens = body.max_completion_tokens or body.max_tokens
        messages = tuple({"role": m.role, "content": m.text()} for m in body.messages)
        problem = _problem(max_tokens, [m["content"] for m in messages], settings)
        if problem:
            field = "messages" if "characters" in problem else "max_tokens"
            return refuse_request(endpoint, problem, field)
        call = GenerationCall(
            "chat",
            model=body.model,
            max_tokens=max_tokens or settings.max_tokens_limit,
            messages=messages,
            options=body.sampling_options(),
            request_id=request_id_of(request.scope),
        )

        def answer(text: str, summary: GenerationSummary, head: dict[str, Any]) -> dict[str, Any]:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": _finish_reason(summary.done_reason),
            }
            return {
                **head, "object": "chat.completion", "model": summary.model, "choices": [choice],
                "usage": _usage(summary),
            }  # fmt: skip

        return await generate(request, body, call, endpoint=endpoint, started=started, answer=answer)

    @router.post(
        "/completions",
        response_model=None,
        responses={**sse_ok_response(Completion, "the completion"), **generation_errors},
    )
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """Text completion: one JSON object, or server-sent events with `"stream": true`."""
        started = time.perf_counter()
        endpoint = COMPLETIONS_ENDPOINT
        prompt = body.prompt_text()
        if prompt is None:
            return refuse_request(endpoint, "give one prompt per request", "prompt")
        problem = _problem(body.max_tokens, [prompt], settings)
        if problem:
            return refuse_request(endpoint, problem, "prompt" if "characters" in problem else "max_tokens")
        call = GenerationCall(
            "text_completion",
            model=body.model,
            max_tokens=body.max_tokens or settings.max_tokens_limit,
            prompt=prompt,
            options=body.sampling_options(),
            request_id=request_id_of(request.scope),
        )

        def answer(text: str, summary: GenerationSummary, head: dict[str, Any]) -> dict[str, Any]:
            choice = {
                "index": 0, "text": text, "logprobs": None,
                "finish_reason": _finish_reason(summary.done_reason),
            }  # fmt: skip
            return {
                **head, "object": "text_completion", "model": summary.model, "choices": [choice],
                "usage": _usage(summary),
            }  # fmt: skip

        return await generate(request, body, call, endpoint=endpoint, started=started, answer=answer)

    async def upstream_models() -> list[UpstreamModel] | Response:
        try:
            return await state.upstream.models(state.backend_client(), timeout_s=settings.ready_timeout_s)
        except UpstreamError as exc:
            return openai_error(exc.status_code, exc.message)

    def model_object(model: UpstreamModel) -> dict[str, Any]:
        return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}

    @router.get("/models", response_model=ModelList, responses=openai_error_responses(*auth, 502, 504))
    async def list_models() -> dict[str, Any] | Response:
        """The models the model server serves."""
        models = await upstream_models()
        if isinstance(models, Response):
            return models
        return {"object": "list", "data": [model_object(m) for m in models]}

    @router.get(
        "/models/{model:path}",
        response_model=ModelObject,
        responses=openai_error_responses(*auth, 404, 502, 504),
    )
    async def get_model(model: str) -> dict[str, Any] | Response:
        """One model the model server serves; 404 when it has none of that name."""
        models = await upstream_models()
        if isinstance(models, Response):
            return models
        for entry in models:
            if entry.id == model:
                return model_object(entry)
        return openai_error(404, f"model {model!r} not found", param="model")

    return router
