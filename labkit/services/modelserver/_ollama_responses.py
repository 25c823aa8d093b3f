"""Ollama's `/api/generate` and `/api/chat` on the shared generation path: NDJSON chunks, a final chunk with
integer-nanosecond durations, `{"error": ...}` bodies and lines, and the empty prompt that loads or unloads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from labkit.services.modelserver._api_errors import ModelServerAPIError
from labkit.services.modelserver._api_requests import ChatRequest, GenerateRequest
from labkit.services.modelserver._engine import GenerationResult
from labkit.services.modelserver._generation import Generation, GenerationService, chat_tokens, prompt_tokens
from labkit.services.modelserver._http_streaming import NDJSON_MEDIA_TYPE, ndjson_line, rfc3339_now

__all__ = ["OllamaShape", "ollama_error", "run_ollama"]

logger = logging.getLogger(__name__)


def ollama_error(error: ModelServerAPIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code)


@dataclass(frozen=True)
class OllamaShape:
    """/api/generate (`response`) or /api/chat (`message`) chunks; implements `ResponseShape`."""

    chat: bool

    @property
    def stream_media_type(self) -> str:
        return NDJSON_MEDIA_TYPE

    def stream_piece(self, generation: Generation, text: str) -> bytes:
        return ndjson_line(self._chunk(generation.model, text, done=False))

    def stream_end(self, generation: Generation, result: GenerationResult) -> bytes:
        return ndjson_line(self.answer(generation, "", result))

    def stream_error(self, generation: Generation, error: ModelServerAPIError) -> bytes:
        return ndjson_line(error.body())  # the status stays 200: it was sent with the first chunk

    def answer(self, generation: Generation, text: str, result: GenerationResult) -> dict[str, Any]:
        """The final chunk (or the one object of `"stream": false`), with Ollama's statistics."""
        finished = generation.finished_ns if generation.finished_ns is not None else time.perf_counter_ns()
        first = generation.first_token_ns if generation.first_token_ns is not None else finished
        body = self._chunk(generation.model, text, done=True)
        body.update(
            done_reason="stop" if result.done_reason == "cancelled" else result.done_reason,
            total_duration=max(0, time.perf_counter_ns() - generation.arrived_ns),
            load_duration=generation.load_ns,
            prompt_eval_count=result.prompt_tokens,
            prompt_eval_duration=max(0, first - generation.started_ns),
            eval_count=result.output_tokens,
            eval_duration=max(0, finished - first),
        )
        return body

    def error(self, error: ModelServerAPIError) -> JSONResponse:
        return ollama_error(error)

    def _chunk(self, model: str, text: str, *, done: bool) -> dict[str, Any]:
        return _chunk(model, text, chat=self.chat, done=done)


def _chunk(model: str, text: str, *, chat: bool, done: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "created_at": rfc3339_now()}
    if chat:
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["response"] = text
    body["done"] = done
    return body


async def run_ollama(
    service: GenerationService, request: GenerateRequest | ChatRequest, http: Request
) -> Response:
    """/api/generate or /api/chat: a generation, or for an empty prompt (no messages) a load or an unload."""
    chat = isinstance(request, ChatRequest)
    requested = request.keep_alive
    keep_alive = service.lifecycle.default_keep_alive if requested is None else requested.seconds
    if not (request.messages if isinstance(request, ChatRequest) else request.prompt):
        arrived = time.perf_counter_ns()
        unload = requested is not None and requested.seconds == 0
        try:
            reason, load_ns = await service.load_or_unload(unload=unload, keep_alive=keep_alive)
        except ModelServerAPIError as exc:
            return ollama_error(exc)
        body = _chunk(request.model, "", chat=chat, done=True)
        body.update(
            done_reason=reason, total_duration=time.perf_counter_ns() - arrived, load_duration=load_ns
        )
        return JSONResponse(body)
    engine = service.engine
    if isinstance(request, ChatRequest):
        tokens = chat_tokens(engine, request.messages, request.options)
    else:
        tokens = prompt_tokens(
            engine, request.prompt, request.options, system=request.system, raw=request.raw
        )
    generation = Generation(
        endpoint="/api/chat" if chat else "/api/generate",
        model=request.model,
        stream=request.stream,
        keep_alive=keep_alive,
        tokens=tokens,
        shape=OllamaShape(chat=chat),
    )
    return await service.run(generation, http)
