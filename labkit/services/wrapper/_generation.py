"""One admitted generation request, whatever endpoint asked and whatever API the upstream speaks: its
upstream stream, its timings, its faults and its metric accounting. /generate and the OpenAI-compatible
endpoints differ only in how they encode the answer (`StreamEncoder`, `answer`, `refuse`).

Accounting is exactly-once: `finish` decrements `llm_requests_in_flight` and counts the outcome a single
time, whichever way the request ends (success, backend failure, client gone, cancellation, bug).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
import anyio
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from labkit.errors import ClientGoneError
from labkit.measure.histograms import GENERATION_ENDPOINTS
from labkit.secret_files import read_token_file
from labkit.service_logs import note_request_outcome
from labkit.services.wrapper._faults import FaultTable, InjectedFaultError
from labkit.services.wrapper._metrics import WrapperMetrics
from labkit.services.wrapper._ollama_backend import OllamaUpstream
from labkit.services.wrapper._openai_backend import OpenAIUpstream
from labkit.services.wrapper._semconv import OTHER_VALUE
from labkit.services.wrapper._settings import WrapperSettings
from labkit.services.wrapper._upstream import Chunk, GenerationCall, Upstream, UpstreamError, UpstreamStream

__all__ = [
    "NDJSON",
    "Generation",
    "GenerationSummary",
    "MeteredStreamingResponse",
    "StreamEncoder",
    "WrapperState",
    "collect_generation",
    "run_generation",
    "run_until_client_leaves",
    "upstream_for",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def upstream_for(settings: WrapperSettings) -> Upstream:
    """The upstream the settings name, with its API key read now (ConfigError when unreadable or empty)."""
    key = (
        read_token_file(settings.backend_api_key_file, what="backend API key", flag="--backend-api-key-file")
        if settings.backend_api_key_file
        else None
    )
    kind = OpenAIUpstream if settings.backend_api == "openai" else OllamaUpstream
    return kind(settings.backend_url, timeout_s=settings.backend_timeout_s, api_key=key)


class WrapperState:
    """What one wrapper app's requests share: settings, upstream, metrics, faults, connection pool, in-flight
    count."""

    def __init__(self, settings: WrapperSettings, upstream: Upstream, metrics: WrapperMetrics) -> None:
        self.settings = settings
        self.upstream = upstream
        self.metrics = metrics
        self.faults = FaultTable(metrics)
        self.client: aiohttp.ClientSession | None = None
        self.in_flight = 0
        # Labelled children looked up once, not per request (a labels() call takes a lock and a dict lookup).
        self.request_durations = {ep: metrics.request_duration.labels(ep) for ep in GENERATION_ENDPOINTS}
        self._requests_by_status: dict[tuple[str, str], Counter] = {}

    def try_admit(self) -> bool:
        """Take an in-flight slot, or return False when all `max_in_flight` are taken."""
        if self.in_flight >= self.settings.max_in_flight:
            return False
        self.in_flight += 1
        self.metrics.in_flight.inc()
        return True

    def release(self) -> None:
        self.in_flight -= 1
        self.metrics.in_flight.dec()

    def count_request(self, endpoint: str, status_code: int | str) -> None:
        key = (endpoint, str(status_code))
        counter = self._requests_by_status.get(key)
        if counter is None:
            counter = self._requests_by_status[key] = self.metrics.requests.labels(*key)
        counter.inc()

    def backend_client(self) -> aiohttp.ClientSession:
        if self.client is None:
            raise RuntimeError("the wrapper's backend client is not open; run the app under its lifespan")
        return self.client


@dataclass(frozen=True, slots=True)
class GenerationSummary:
    """A finished generation: what the upstream said about it and what the wrapper measured."""

    model: str
    done_reason: str | None
    prompt_tokens: int | None  # None when the upstream did not count them
    output_tokens: int
    ttft_s: float | None  # None when no token came
    duration_s: float

    def generate_fields(self) -> dict[str, Any]:
        """The summary as /generate's answer (and its last NDJSON line) spells it."""
        return {
            "model": self.model,
            "done_reason": self.done_reason,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "time_to_first_token_seconds": None if self.ttft_s is None else round(self.ttft_s, 6),
            "duration_seconds": round(self.duration_s, 6),
        }


class Generation:
    """An admitted request's life: open the upstream stream, time its chunks, finish exactly once."""

    def __init__(self, state: WrapperState, call: GenerationCall, *, endpoint: str, started: float) -> None:
        self._state = state
        self.call = call
        self.endpoint = endpoint
        self.started = started
        self._stream: UpstreamStream | None = None
        self._first_token_at: float | None = None
        self._last_token_at: float | None = None
        self._token_chunks = 0
        self.finished = False

    async def open(self) -> Chunk:
        """Start the upstream generation; return its first chunk that carries text (or the final one).

        Injected faults act first: a latency fault sleeps (inside the timed request, so TTFT grows), then
        an error fault may raise InjectedFaultError instead of calling the upstream.
        """
        state = self._state
        delay_s = state.faults.latency_delay_s()
        if delay_s:
            await asyncio.sleep(delay_s)
        injected = state.faults.injected_error()
        if injected is not None:
            raise injected
        self._stream = await state.upstream.open(state.backend_client(), self.call)
        while True:
            chunk = await self.next_chunk()
            if chunk.text or chunk.done:
                return chunk

    async def next_chunk(self) -> Chunk:
        """The upstream's next chunk; observes TTFT for the first text chunk and ITL for each one after.

        Raises InjectedFaultError instead when a stream_cut fault's token count has been reached.
        """
        if self._stream is None:
            raise RuntimeError("next_chunk() before open()")
        cut = self._state.faults.stream_cut(self._token_chunks)
        if cut is not None:
            raise cut
        chunk = await anext(self._stream.chunks)
        if chunk.text:
            now = time.perf_counter()
            if self._last_token_at is None:
                self._first_token_at = now
                self._state.metrics.time_to_first_token.observe(now - self.started)
            else:
                self._state.metrics.inter_token_latency.observe(now - self._last_token_at)
            self._last_token_at = now
            self._token_chunks += 1
        return chunk

    def complete(self, final: Chunk) -> GenerationSummary:
        """Account a successful end from the upstream's final chunk; return the summary."""
        duration = time.perf_counter() - self.started
        # Ollama sends one token per chunk, so the chunk count stands in if the upstream did not count.
        output_tokens = final.output_tokens if final.output_tokens is not None else self._token_chunks
        state = self._state
        metrics = state.metrics
        if final.prompt_tokens is not None:
            metrics.prompt_tokens.inc(final.prompt_tokens)
        metrics.output_tokens.inc(output_tokens)
        state.request_durations[self.endpoint].observe(duration)
        ttft = None if self._first_token_at is None else self._first_token_at - self.started
        model = final.model or self.call.model
        metrics.gen_ai.observe_success(
            self.call.operation,
            request_model=self.call.model,
            response_model=model,
            duration_s=duration,
            ttft_s=ttft,
            prompt_tokens=final.prompt_tokens,
            output_tokens=output_tokens,
        )
        self.finish(200)
        return GenerationSummary(model, final.done_reason, final.prompt_tokens, output_tokens, ttft, duration)

    def fail(self, error: UpstreamError, status_code: int | None = None) -> None:
        """Account an upstream failure (counted once per request by kind), answered `status_code`."""
        metrics = self._state.metrics
        metrics.backend_errors.labels(error.kind).inc()
        if error.kind == "busy":
            metrics.rejected.labels("backend_busy").inc()
        logger.warning("backend failure (%s): %s", error.kind, error.message)
        status = error.status_code if status_code is None else status_code
        self.finish(status, error_type=error.kind)
        note_request_outcome(status, f"{error.kind}: {error.message}")

    def finish(self, status_code: int | str, *, error_type: str | None = None) -> None:
        """Release the in-flight slot and count the outcome; later calls do nothing.

        A failure is recorded in gen_ai_server_request_duration_seconds with `error_type` (a backend error
        kind, `fault_<kind>`, `client_closed` for 499, else `_OTHER`).
        """
        if self.finished:
            return
        self.finished = True
        state = self._state
        state.release()
        state.count_request(self.endpoint, status_code)
        if status_code != 200:
            error_type = error_type or ("client_closed" if status_code == 499 else OTHER_VALUE)
            state.metrics.gen_ai.observe_failure(
                self.call.operation,
                request_model=self.call.model,
                error_type=error_type,
                duration_s=time.perf_counter() - self.started,
            )
            # The request's log line says how it ended, also when its 200 was sent before it failed.
            note_request_outcome(int(status_code), error_type)

    async def close(self) -> None:
        """Close the upstream stream (the upstream sees the disconnect and stops generating).

        A response read to its end has already gone back to the pool; closing it then does nothing.
        """
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


async def collect_generation(generation: Generation) -> tuple[str, GenerationSummary]:
    """Run a whole generation; return its text and summary (the upstream is still streamed)."""
    chunk = await generation.open()
    pieces: list[str] = []
    while True:
        if chunk.text:
            pieces.append(chunk.text)
        if chunk.done:
            return "".join(pieces), generation.complete(chunk)
        chunk = await generation.next_chunk()


class StreamEncoder(Protocol):
    """How one endpoint writes a streamed answer: a token, the end, an error after the 200 was sent."""

    media_type: str

    def token(self, piece: str) -> bytes: ...

    def end(self, summary: GenerationSummary) -> bytes: ...

    def error(self, error: UpstreamError) -> bytes: ...


# json.dumps escapes newlines inside strings, so each object is exactly one non-blank line.
_NDJSON_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _ndjson(obj: dict[str, Any]) -> bytes:
    return _NDJSON_ENCODER.encode(obj).encode() + b"\n"


def _token_line(piece: str) -> bytes:
    """The bytes of `_ndjson({"response": piece, "done": False})`, built without encoding a dict (the one
    line sent per token: json.dumps of a lone string takes its fast path, a dict's encoder setup does not)."""
    return b'{"response":' + json.dumps(piece).encode() + b',"done":false}\n'


class _NdjsonEncoder:
    """/generate's stream: one JSON object per line, then the summary line; an error as the last line."""

    media_type = "application/x-ndjson"

    def token(self, piece: str) -> bytes:
        return _token_line(piece)

    def end(self, summary: GenerationSummary) -> bytes:
        return _ndjson({"done": True, **summary.generate_fields()})

    def error(self, error: UpstreamError) -> bytes:
        return _ndjson({"error": error.message, "done": True})


NDJSON: StreamEncoder = _NdjsonEncoder()


async def _stream_body(
    generation: Generation, first: Chunk, encoder: StreamEncoder
) -> AsyncGenerator[bytes, None]:
    try:
        chunk = first
        while True:
            if chunk.text:
                yield encoder.token(chunk.text)
            if chunk.done:
                # Accounted before the end goes out, so a client that has read it sees the metrics.
                yield encoder.end(generation.complete(chunk))
                return
            chunk = await generation.next_chunk()
    except UpstreamError as exc:
        # The 200 status is already sent; the error travels in the stream's last line or event.
        generation.fail(exc)
        yield encoder.error(exc)
    except InjectedFaultError as exc:
        # A cut stream: counted with the fault's status (502), then MeteredStreamingResponse drops the
        # connection without a last line, as a real cut would.
        generation.finish(exc.status_code, error_type=f"fault_{exc.kind}")
        raise
    except Exception:
        generation.finish(500)
        raise
    finally:
        generation.finish(499)  # reached unfinished only when the client left or the task was cancelled
        await generation.close()


class MeteredStreamingResponse(StreamingResponse):
    """A streamed answer of one generation that finishes its accounting however the response ends."""

    def __init__(self, generation: Generation, first: Chunk, encoder: StreamEncoder) -> None:
        self._generation = generation
        self._lines = _stream_body(generation, first, encoder)
        super().__init__(self._lines, media_type=encoder.media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except InjectedFaultError:
            # Returning without the body's final message makes the server close the connection mid-body
            # (uvicorn logs one line, "ASGI callable returned without completing response").
            pass
        finally:
            # A generator left suspended at a `yield` (or never started) would otherwise finish only
            # when garbage-collected, leaving the in-flight gauge and the backend stream up meanwhile.
            with anyio.CancelScope(shield=True):
                await self._lines.aclose()
            self._generation.finish(499)
            await self._generation.close()


# An error answer of one endpoint: (status, message, send Retry-After) -> the response in its shape.
Refusal = Callable[[int, str, bool], Response]


async def run_generation(
    state: WrapperState,
    request: Request,
    call: GenerationCall,
    *,
    endpoint: str,
    started: float,
    stream: bool,
    encoder: StreamEncoder,
    answer: Callable[[str, GenerationSummary], dict[str, Any]],
    refuse: Refusal,
    busy_status: int,
) -> Response:
    """Admit, run and account one generation request of `endpoint`: the one code path of every endpoint.

    Full (the in-flight bound, or an upstream that says busy) is answered `busy_status` with Retry-After;
    an injected error fault its status; an upstream failure the status its kind means.
    """
    settings = state.settings
    if not state.try_admit():
        state.metrics.rejected.labels("in_flight_limit").inc()
        state.count_request(endpoint, busy_status)
        return refuse(
            busy_status,
            f"too many requests in flight ({state.in_flight} of {settings.max_in_flight}); "
            f"retry after {settings.retry_after_s} s",
            True,
        )
    generation = Generation(state, call, endpoint=endpoint, started=started)
    handed_over = False
    try:
        if stream:
            first = await run_until_client_leaves(request, generation.open())
            handed_over = True
            return MeteredStreamingResponse(generation, first, encoder)
        text, summary = await run_until_client_leaves(request, collect_generation(generation))
        return JSONResponse(answer(text, summary))
    except InjectedFaultError as exc:
        # Counted as the status the client got; the backend did not fail, so no backend error.
        generation.finish(exc.status_code, error_type=f"fault_{exc.kind}")
        return refuse(exc.status_code, exc.message, False)
    except UpstreamError as exc:
        status = busy_status if exc.kind == "busy" else exc.status_code
        generation.fail(exc, status)
        return refuse(status, exc.message, exc.retry_after)
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


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, but cancel it and raise ClientGoneError if the client disconnects first."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    try:
        await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        if work_task.done():
            return work_task.result()
        raise ClientGoneError("the client closed the connection")
    finally:
        if not watch_task.done():
            # Not awaited: it has no cleanup, and waiting would cost every request a loop iteration. The
            # cancel reaches it at once (its receive() wait is cancelled), so it takes no later message.
            watch_task.cancel()
        elif not watch_task.cancelled() and watch_task.exception() is not None:
            logger.warning("watching for a client disconnect failed: %r", watch_task.exception())
        if not work_task.done():
            work_task.cancel()
            # Waits for the cancelled work to run its cleanup.
            await asyncio.wait({work_task})
        # Retrieve what the losing task raised, so asyncio does not report it as never retrieved.
        if not work_task.cancelled():
            work_task.exception()
