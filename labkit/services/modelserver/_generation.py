"""The one path every generation takes, whatever the API that asked for it (Ollama's `/api/generate` and
`/api/chat`, OpenAI's `/v1/completions` and `/v1/chat/completions`): a slot from the scheduler, the model
from the lifecycle, tokens from the engine in a worker thread, cancellation when the client leaves, token
counts and metrics. How the answer is written (NDJSON or server-sent events, which fields) is the
`ResponseShape` the route passes in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from labkit.errors import ClientGoneError
from labkit.services.modelserver._api_errors import ModelServerAPIError
from labkit.services.modelserver._engine import (
    ChatMessage,
    Engine,
    GenerationOptions,
    GenerationResult,
    TokenStream,
)
from labkit.services.modelserver._http_streaming import ClosingStreamingResponse, DisconnectWatcher
from labkit.services.modelserver._lifecycle import ModelLifecycle
from labkit.services.modelserver._metrics import ModelServerMetrics
from labkit.services.modelserver._request_metrics import record_outcome
from labkit.services.modelserver._scheduler import SlotScheduler
from labkit.services.modelserver._token_pump import Failed, Finished, Piece, TokenPump

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "Generation",
    "GenerationService",
    "ResponseShape",
    "TokenSource",
]

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's code, which Ollama logs for a client that went away

# Starts a generation's token stream in a worker thread; the event cancels it between tokens.
TokenSource = Callable[[threading.Event], TokenStream]


class ResponseShape(Protocol):
    """How one API writes a generation: its stream's media type and pieces, its one-object answer, its errors.

    Every method gets the `Generation` (its timings, its start time) and builds bytes or a body; none of them
    touches the engine, the slots or the metrics.
    """

    @property
    def stream_media_type(self) -> str: ...

    def stream_piece(self, generation: Generation, text: str) -> bytes: ...

    def stream_end(self, generation: Generation, result: GenerationResult) -> bytes: ...

    def stream_error(self, generation: Generation, error: ModelServerAPIError) -> bytes: ...

    def answer(self, generation: Generation, text: str, result: GenerationResult) -> dict[str, Any]: ...

    def error(self, error: ModelServerAPIError) -> JSONResponse: ...


@dataclass(kw_only=True, eq=False)
class Generation:
    """One generation request on its way through the server: what to run, how to answer, and its timings
    (`time.perf_counter_ns()` values; `wall_time` is the arrival's Unix time for the answer's `created`)."""

    endpoint: str  # the route, the metrics' label: "/api/generate", "/v1/chat/completions", ...
    model: str  # the name as the request spelled it, echoed in the answer
    stream: bool
    keep_alive: float | None
    tokens: TokenSource
    shape: ResponseShape
    arrived_ns: int = field(default_factory=time.perf_counter_ns)
    wall_time: float = field(default_factory=time.time)
    load_ns: int = 0
    started_ns: int = 0
    first_token_ns: int | None = None
    finished_ns: int | None = None
    outcome: int | None = None


def chat_tokens(engine: Engine, messages: Sequence[ChatMessage], options: GenerationOptions) -> TokenSource:
    """A chat through the model's own chat template (the engine renders it), as /api/chat runs it."""
    fixed = tuple(messages)

    def start(cancel: threading.Event) -> TokenStream:
        return engine.chat(fixed, options, cancel)

    return start


def prompt_tokens(
    engine: Engine, prompt: str, options: GenerationOptions, *, system: str | None = None, raw: bool = False
) -> TokenSource:
    """A prompt: as it is (`raw`), or as a user message (after `system`) through the chat template, as
    Ollama's /api/generate does without `raw`."""
    if raw:

        def start(cancel: threading.Event) -> TokenStream:
            return engine.generate(prompt, options, cancel)

        return start
    messages = [ChatMessage(role="user", content=prompt)]
    if system:
        messages.insert(0, ChatMessage(role="system", content=system))
    return chat_tokens(engine, messages, options)


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

    async def load_or_unload(self, *, unload: bool, keep_alive: float | None) -> tuple[str, int]:
        """An empty prompt (or no messages), Ollama's way to load the model or, with keep_alive 0, unload it.

        Returns the done_reason ("load" or "unload") and the load time in ns; a failed load raises a 500.
        """
        if unload:
            await self.lifecycle.unload_when_idle()
            return "unload", 0
        try:
            return "load", await self.lifecycle.load_only(keep_alive)
        except Exception as exc:  # the client gets the reason; the log gets the traceback
            logger.exception("loading the model failed")
            raise ModelServerAPIError(f"failed to load model: {exc}") from exc

    async def run(self, generation: Generation, http: Request) -> Response:
        """Queue, load, generate and answer in the generation's shape; every way out releases what it took
        and counts the request once (499 when the client left)."""
        shape = generation.shape
        watcher = DisconnectWatcher(http.receive)
        try:
            await watcher.race(self.scheduler.acquire())
        except ModelServerAPIError as exc:  # queue full
            watcher.stop()
            return shape.error(exc)
        except ClientGoneError:
            watcher.stop()
            record_outcome(http.scope, CLIENT_CLOSED_REQUEST)
            self._observe_duration(generation)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        try:
            generation.load_ns = await self.lifecycle.acquire(generation.keep_alive)
        except Exception as exc:  # the client gets the reason; the log gets the traceback
            watcher.stop()
            self.scheduler.release()
            logger.exception("loading the model failed")
            return shape.error(ModelServerAPIError(f"failed to load model: {exc}"))
        generation.started_ns = time.perf_counter_ns()
        pump = TokenPump(generation.tokens, self.executor)
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
            if generation.outcome is None:  # the stream ended without its final line: the client left
                generation.outcome = CLIENT_CLOSED_REQUEST
            record_outcome(http.scope, generation.outcome)
            self._observe_duration(generation)

        if generation.stream:
            watcher.stop()  # from here on the streaming response notices a disconnect itself
            return ClosingStreamingResponse(
                self._stream_body(generation, pump), media_type=shape.stream_media_type, on_close=finish
            )
        watcher.on_disconnect(pump.cancel.set)
        try:
            response = await self._collect(generation, pump)
        finally:
            watcher.stop()
            if watcher.gone:
                generation.outcome = CLIENT_CLOSED_REQUEST
            await finish()
        return response if not watcher.gone else Response(status_code=CLIENT_CLOSED_REQUEST)

    async def _stream_body(self, generation: Generation, pump: TokenPump) -> AsyncIterator[bytes]:
        shape = generation.shape
        async for event in pump.events():
            if isinstance(event, Piece):
                self._note_first_token(generation, event)
                yield shape.stream_piece(generation, event.text)
            elif isinstance(event, Finished):
                generation.outcome = 200
                generation.finished_ns = event.at_ns
                yield shape.stream_end(generation, event.result)
            else:
                generation.outcome = 500
                yield shape.stream_error(generation, _failure(event))

    async def _collect(self, generation: Generation, pump: TokenPump) -> Response:
        pieces: list[str] = []
        async for event in pump.events():
            if isinstance(event, Piece):
                self._note_first_token(generation, event)
                pieces.append(event.text)
            elif isinstance(event, Finished):
                generation.outcome = 200
                generation.finished_ns = event.at_ns
                return JSONResponse(generation.shape.answer(generation, "".join(pieces), event.result))
            else:
                generation.outcome = 500
                return generation.shape.error(_failure(event))
        raise AssertionError("a token pump always ends with Finished or Failed")  # pragma: no cover

    def _note_first_token(self, generation: Generation, piece: Piece) -> None:
        if generation.first_token_ns is None:
            generation.first_token_ns = piece.at_ns
            ttft = (piece.at_ns - generation.arrived_ns) / 1e9
            self.metrics.time_to_first_token.labels(endpoint=generation.endpoint).observe(max(0.0, ttft))

    def _observe_duration(self, generation: Generation) -> None:
        elapsed = (time.perf_counter_ns() - generation.arrived_ns) / 1e9
        self.metrics.request_duration.labels(endpoint=generation.endpoint).observe(elapsed)


def _failure(event: Failed) -> ModelServerAPIError:
    return ModelServerAPIError(f"generation failed: {event.error}")
