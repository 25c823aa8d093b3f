"""One admitted /generate request: its backend stream, its timings and its metric accounting.

Accounting is exactly-once: `finish` decrements `llm_requests_in_flight` and counts the outcome a single
time, whichever way the request ends (success, backend failure, client gone, cancellation, bug).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar

import aiohttp
import anyio
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from labkit.errors import ClientGoneError
from labkit.services.wrapper._backend import UpstreamError, open_generate_stream, read_chunks
from labkit.services.wrapper._faults import FaultTable, InjectedFaultError
from labkit.services.wrapper._metrics import GENERATE_ENDPOINT, WrapperMetrics
from labkit.services.wrapper._settings import WrapperSettings

__all__ = [
    "Generation",
    "MeteredStreamingResponse",
    "WrapperState",
    "collect_generation",
    "run_until_client_leaves",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class WrapperState:
    """What one wrapper app's requests share: settings, metrics, faults, backend client, in-flight count."""

    def __init__(self, settings: WrapperSettings, metrics: WrapperMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.faults = FaultTable(metrics)
        self.client: aiohttp.ClientSession | None = None
        self.in_flight = 0
        # Labelled children looked up once, not per request (a labels() call takes a lock and a dict lookup).
        self.request_duration = metrics.request_duration.labels(GENERATE_ENDPOINT)
        self._requests_by_status: dict[str, Counter] = {}

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

    def count_request(self, status_code: int | str) -> None:
        code = str(status_code)
        counter = self._requests_by_status.get(code)
        if counter is None:
            counter = self._requests_by_status[code] = self.metrics.requests.labels(GENERATE_ENDPOINT, code)
        counter.inc()

    def backend_client(self) -> aiohttp.ClientSession:
        if self.client is None:
            raise RuntimeError("the wrapper's backend client is not open; run the app under its lifespan")
        return self.client


def _count(chunk: dict[str, Any], key: str, default: int) -> int:
    value = chunk.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


class Generation:
    """An admitted request's life: open the backend stream, time its chunks, finish exactly once."""

    def __init__(self, state: WrapperState, *, model: str, started: float) -> None:
        self._state = state
        self.model = model
        self.started = started
        self._response: aiohttp.ClientResponse | None = None
        self._chunks: AsyncIterator[dict[str, Any]] | None = None
        self._first_token_at: float | None = None
        self._last_token_at: float | None = None
        self._token_chunks = 0
        self.finished = False

    async def open(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Start the backend generation; return its first chunk that carries text (or the final one).

        Injected faults act first: a latency fault sleeps (inside the timed request, so TTFT grows), then
        an error fault may raise InjectedFaultError instead of calling the backend.
        """
        delay_s = self._state.faults.latency_delay_s()
        if delay_s:
            await asyncio.sleep(delay_s)
        injected = self._state.faults.injected_error()
        if injected is not None:
            raise injected
        settings = self._state.settings
        self._response = await open_generate_stream(
            self._state.backend_client(),
            payload,
            backend_url=settings.backend_url,
            timeout_s=settings.backend_timeout_s,
        )
        self._chunks = read_chunks(
            self._response, backend_url=settings.backend_url, timeout_s=settings.backend_timeout_s
        )
        while True:
            chunk = await self.next_chunk()
            if chunk.get("response") or chunk.get("done"):
                return chunk

    async def next_chunk(self) -> dict[str, Any]:
        """The backend's next chunk; observes TTFT for the first text chunk and ITL for each one after.

        Raises InjectedFaultError instead when a stream_cut fault's token count has been reached.
        """
        if self._chunks is None:
            raise RuntimeError("next_chunk() before open()")
        cut = self._state.faults.stream_cut(self._token_chunks)
        if cut is not None:
            raise cut
        chunk = await anext(self._chunks)
        now = time.perf_counter()
        if isinstance(chunk.get("response"), str) and chunk["response"]:
            if self._last_token_at is None:
                self._first_token_at = now
                self._state.metrics.time_to_first_token.observe(now - self.started)
            else:
                self._state.metrics.inter_token_latency.observe(now - self._last_token_at)
            self._last_token_at = now
            self._token_chunks += 1
        return chunk

    def complete(self, final: dict[str, Any]) -> dict[str, Any]:
        """Account a successful end from the backend's final chunk; return the summary fields."""
        duration = time.perf_counter() - self.started
        prompt_tokens = _count(final, "prompt_eval_count", 0)
        # Ollama sends one token per chunk, so the chunk count stands in if eval_count is missing.
        output_tokens = _count(final, "eval_count", self._token_chunks)
        metrics = self._state.metrics
        metrics.prompt_tokens.inc(prompt_tokens)
        metrics.output_tokens.inc(output_tokens)
        self._state.request_duration.observe(duration)
        self.finish(200)
        ttft = None if self._first_token_at is None else round(self._first_token_at - self.started, 6)
        return {
            "model": str(final.get("model") or self.model),
            "done_reason": final.get("done_reason"),
            "prompt_tokens": prompt_tokens,
            "output_tokens": output_tokens,
            "time_to_first_token_seconds": ttft,
            "duration_seconds": round(duration, 6),
        }

    def fail(self, error: UpstreamError) -> None:
        """Account a backend failure (counted once per request by kind)."""
        metrics = self._state.metrics
        metrics.backend_errors.labels(error.kind).inc()
        if error.kind == "busy":
            metrics.rejected.labels("backend_busy").inc()
        logger.warning("backend failure (%s): %s", error.kind, error.message)
        self.finish(error.status_code)

    def finish(self, status_code: int | str) -> None:
        """Release the in-flight slot and count the outcome; later calls do nothing."""
        if self.finished:
            return
        self.finished = True
        self._state.release()
        self._state.count_request(status_code)

    async def close(self) -> None:
        """Close the backend stream (the backend sees the disconnect and stops generating).

        A response read to its end has already gone back to the pool; closing it then does nothing.
        """
        response, self._response = self._response, None
        if response is not None:
            # Synchronous, so a disconnect that cancels the request cannot interrupt it.
            response.close()


async def collect_generation(generation: Generation, payload: dict[str, Any]) -> dict[str, Any]:
    """Run a whole generation and return the non-streamed answer (the backend is still streamed)."""
    chunk = await generation.open(payload)
    pieces: list[str] = []
    while True:
        piece = chunk.get("response")
        if isinstance(piece, str):
            pieces.append(piece)
        if chunk.get("done"):
            summary = generation.complete(chunk)
            return {
                "model": summary.pop("model"),
                "response": "".join(pieces),
                **summary,
            }
        chunk = await generation.next_chunk()


# json.dumps escapes newlines inside strings, so each object is exactly one non-blank line.
_NDJSON_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _ndjson(obj: dict[str, Any]) -> bytes:
    return _NDJSON_ENCODER.encode(obj).encode() + b"\n"


def _token_line(piece: str) -> bytes:
    """The bytes of `_ndjson({"response": piece, "done": False})`, built without encoding a dict (the one
    line sent per token: json.dumps of a lone string takes its fast path, a dict's encoder setup does not)."""
    return b'{"response":' + json.dumps(piece).encode() + b',"done":false}\n'


async def _stream_lines(generation: Generation, first: dict[str, Any]) -> AsyncGenerator[bytes, None]:
    try:
        chunk = first
        while True:
            piece = chunk.get("response")
            if isinstance(piece, str) and piece:
                yield _token_line(piece)
            if chunk.get("done"):
                # Accounted before the last line goes out, so a client that has read it sees the metrics.
                yield _ndjson({"done": True, **generation.complete(chunk)})
                return
            chunk = await generation.next_chunk()
    except UpstreamError as exc:
        # The 200 status is already sent; the error travels as the stream's last line.
        generation.fail(exc)
        yield _ndjson({"error": exc.message, "done": True})
    except InjectedFaultError as exc:
        # A cut stream: counted with the fault's status (502), then MeteredStreamingResponse drops the
        # connection without a last line, as a real cut would.
        generation.finish(exc.status_code)
        raise
    except Exception:
        generation.finish(500)
        raise
    finally:
        generation.finish(499)  # reached unfinished only when the client left or the task was cancelled
        await generation.close()


class MeteredStreamingResponse(StreamingResponse):
    """An NDJSON stream of one generation that finishes its accounting however the response ends."""

    def __init__(self, generation: Generation, first: dict[str, Any]) -> None:
        self._generation = generation
        self._lines = _stream_lines(generation, first)
        super().__init__(self._lines, media_type="application/x-ndjson")

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
