"""Serves `/api/generate` and `/api/chat`: queueing, loading, streaming and the final statistics.

Ollama's shapes: NDJSON chunks, a final chunk with integer-nanosecond durations, `{"error"}` lines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from labkit.errors import ClientGoneError
from labkit.services.modelserver._api_errors import ModelServerAPIError
from labkit.services.modelserver._api_requests import ChatRequest, GenerateRequest, KeepAlive
from labkit.services.modelserver._engine import ChatMessage, Engine, GenerationResult, TokenStream
from labkit.services.modelserver._http_streaming import (
    DisconnectWatcher,
    NDJSONStreamingResponse,
    ndjson_line,
    rfc3339_now,
)
from labkit.services.modelserver._lifecycle import ModelLifecycle
from labkit.services.modelserver._metrics import ModelServerMetrics
from labkit.services.modelserver._request_metrics import record_outcome
from labkit.services.modelserver._scheduler import SlotScheduler
from labkit.services.modelserver._token_pump import Failed, Finished, Piece, TokenPump

__all__ = ["GenerationService", "error_response"]

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's code, which Ollama logs for a client that went away


def error_response(error: ModelServerAPIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code)


@dataclass
class _Job:
    """One generate or chat request on its way through the server."""

    endpoint: str  # "/api/generate" or "/api/chat"
    model: str
    stream: bool
    keep_alive: float | None
    make_stream: Callable[[threading.Event], TokenStream]
    arrived_ns: int = field(default_factory=time.perf_counter_ns)
    load_ns: int = 0
    started_ns: int = 0
    first_token_ns: int | None = None
    outcome: int | None = None

    def chunk(self, text: str, *, done: bool) -> dict[str, Any]:
        return _chunk(self.endpoint, self.model, text, done=done)

    def final(self, text: str, result: GenerationResult, finished_ns: int) -> dict[str, Any]:
        first = self.first_token_ns if self.first_token_ns is not None else finished_ns
        body = self.chunk(text, done=True)
        body.update(
            done_reason="stop" if result.done_reason == "cancelled" else result.done_reason,
            total_duration=max(0, time.perf_counter_ns() - self.arrived_ns),
            load_duration=self.load_ns,
            prompt_eval_count=result.prompt_tokens,
            prompt_eval_duration=max(0, first - self.started_ns),
            eval_count=result.output_tokens,
            eval_duration=max(0, finished_ns - first),
        )
        return body


@dataclass(kw_only=True, eq=False, repr=False)
class GenerationService:
    """Runs generations on `engine` within the scheduler's slots and the lifecycle's loads."""

    engine: Engine
    lifecycle: ModelLifecycle
    scheduler: SlotScheduler
    metrics: ModelServerMetrics
    executor: Executor
    _running: set[threading.Event] = field(init=False, default_factory=set)

    def cancel_all(self) -> None:
        """Shutdown: ask every running generation to stop before its next token."""
        for cancel in list(self._running):
            cancel.set()

    async def generate(self, request: GenerateRequest, http: Request) -> Response:
        keep_alive = self._keep_alive(request.keep_alive)
        if not request.prompt:
            return await self._load_or_unload("/api/generate", request.model, request.keep_alive, keep_alive)
        engine, options = self.engine, request.options
        if request.raw:
            prompt = request.prompt

            def make_stream(cancel: threading.Event) -> TokenStream:
                return engine.generate(prompt, options, cancel)

        else:
            messages = [ChatMessage(role="user", content=request.prompt)]
            if request.system:
                messages.insert(0, ChatMessage(role="system", content=request.system))

            def make_stream(cancel: threading.Event) -> TokenStream:
                return engine.chat(messages, options, cancel)

        job = _Job("/api/generate", request.model, request.stream, keep_alive, make_stream)
        return await self._run(job, http)

    async def chat(self, request: ChatRequest, http: Request) -> Response:
        keep_alive = self._keep_alive(request.keep_alive)
        if not request.messages:
            return await self._load_or_unload("/api/chat", request.model, request.keep_alive, keep_alive)
        engine, options, messages = self.engine, request.options, request.messages

        def make_stream(cancel: threading.Event) -> TokenStream:
            return engine.chat(messages, options, cancel)

        job = _Job("/api/chat", request.model, request.stream, keep_alive, make_stream)
        return await self._run(job, http)

    def _keep_alive(self, requested: KeepAlive | None) -> float | None:
        return self.lifecycle.default_keep_alive if requested is None else requested.seconds

    async def _load_or_unload(
        self, endpoint: str, model: str, requested: KeepAlive | None, keep_alive: float | None
    ) -> Response:
        """An empty prompt (or no messages): load the model, or unload it for keep_alive 0."""
        arrived = time.perf_counter_ns()
        load_ns = 0
        if requested is not None and requested.seconds == 0:
            await self.lifecycle.unload_when_idle()
            reason = "unload"
        else:
            try:
                load_ns = await self.lifecycle.load_only(keep_alive)
            except Exception as exc:  # the client gets the reason; the log gets the traceback
                logger.exception("loading the model failed")
                return JSONResponse({"error": f"failed to load model: {exc}"}, status_code=500)
            reason = "load"
        body = _chunk(endpoint, model, "", done=True)
        body.update(
            done_reason=reason, total_duration=time.perf_counter_ns() - arrived, load_duration=load_ns
        )
        return JSONResponse(body)

    async def _run(self, job: _Job, http: Request) -> Response:
        watcher = DisconnectWatcher(http.receive)
        try:
            await watcher.race(self.scheduler.acquire())
        except ModelServerAPIError as exc:  # queue full
            watcher.stop()
            return error_response(exc)
        except ClientGoneError:
            watcher.stop()
            record_outcome(http.scope, CLIENT_CLOSED_REQUEST)
            self._observe_duration(job)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        try:
            job.load_ns = await self.lifecycle.acquire(job.keep_alive)
        except Exception as exc:  # the client gets the reason; the log gets the traceback
            watcher.stop()
            self.scheduler.release()
            logger.exception("loading the model failed")
            return JSONResponse({"error": f"failed to load model: {exc}"}, status_code=500)
        job.started_ns = time.perf_counter_ns()
        pump = TokenPump(job.make_stream, self.executor)
        self._running.add(pump.cancel)
        pump.start()

        async def finish() -> None:
            pump.cancel.set()  # a no-op for a generation that ended on its own
            await pump.wait()
            self._running.discard(pump.cancel)
            if pump.result is not None:  # tokens count even when the client left half-way
                self.metrics.prompt_tokens.inc(pump.result.prompt_tokens)
                self.metrics.output_tokens.inc(pump.result.output_tokens)
            self.scheduler.release()
            await self.lifecycle.release()
            if job.outcome is None:  # the stream ended without its final line: the client left
                job.outcome = CLIENT_CLOSED_REQUEST
            record_outcome(http.scope, job.outcome)
            self._observe_duration(job)

        if job.stream:
            watcher.stop()  # from here on the streaming response notices a disconnect itself
            return NDJSONStreamingResponse(self._stream_body(job, pump), on_close=finish)
        watcher.on_disconnect(pump.cancel.set)
        try:
            response = await self._collect(job, pump)
        finally:
            watcher.stop()
            if watcher.gone:
                job.outcome = CLIENT_CLOSED_REQUEST
            await finish()
        return response if not watcher.gone else Response(status_code=CLIENT_CLOSED_REQUEST)

    async def _stream_body(self, job: _Job, pump: TokenPump) -> AsyncIterator[bytes]:
        async for event in pump.events():
            if isinstance(event, Piece):
                self._note_first_token(job, event)
                yield ndjson_line(job.chunk(event.text, done=False))
            elif isinstance(event, Finished):
                job.outcome = 200
                yield ndjson_line(job.final("", event.result, event.at_ns))
            else:
                job.outcome = 500
                yield ndjson_line({"error": _describe(event)})

    async def _collect(self, job: _Job, pump: TokenPump) -> Response:
        pieces: list[str] = []
        async for event in pump.events():
            if isinstance(event, Piece):
                self._note_first_token(job, event)
                pieces.append(event.text)
            elif isinstance(event, Finished):
                job.outcome = 200
                return JSONResponse(job.final("".join(pieces), event.result, event.at_ns))
            else:
                job.outcome = 500
                return JSONResponse({"error": _describe(event)}, status_code=500)
        raise AssertionError("a token pump always ends with Finished or Failed")  # pragma: no cover

    def _note_first_token(self, job: _Job, piece: Piece) -> None:
        if job.first_token_ns is None:
            job.first_token_ns = piece.at_ns
            ttft = (piece.at_ns - job.arrived_ns) / 1e9
            self.metrics.time_to_first_token.labels(endpoint=job.endpoint).observe(max(0.0, ttft))

    def _observe_duration(self, job: _Job) -> None:
        elapsed = (time.perf_counter_ns() - job.arrived_ns) / 1e9
        self.metrics.request_duration.labels(endpoint=job.endpoint).observe(elapsed)


def _describe(event: Failed) -> str:
    return f"generation failed: {event.error}"


def _chunk(endpoint: str, model: str, text: str, *, done: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "created_at": rfc3339_now()}
    if endpoint == "/api/chat":
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["response"] = text
    body["done"] = done
    return body
