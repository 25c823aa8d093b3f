"""HTTP plumbing for generations: NDJSON lines (Ollama), server-sent events (OpenAI), a streaming response
that always cleans up, and a watcher that notices a client gone while its request waits or generates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from labkit.errors import ClientGoneError

__all__ = [
    "NDJSON_MEDIA_TYPE",
    "SSE_DONE",
    "SSE_MEDIA_TYPE",
    "ClosingStreamingResponse",
    "DisconnectWatcher",
    "ndjson_line",
    "rfc3339_now",
    "sse_event",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


NDJSON_MEDIA_TYPE = "application/x-ndjson"
SSE_MEDIA_TYPE = "text/event-stream"
# The event that ends an OpenAI stream that completed (a failed one ends with an error event instead).
SSE_DONE = b"data: [DONE]\n\n"


def _compact_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def ndjson_line(obj: dict[str, Any]) -> bytes:
    """One JSON object and a newline: never a blank line, which breaks Ollama's client."""
    return _compact_json(obj) + b"\n"


def sse_event(obj: dict[str, Any]) -> bytes:
    """One server-sent event carrying a JSON object: `data: {...}` and the blank line that ends an event."""
    return b"data: " + _compact_json(obj) + b"\n\n"


def rfc3339_now() -> str:
    """`created_at` as Ollama writes it: RFC 3339 in UTC with a `Z`."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class ClosingStreamingResponse(StreamingResponse):
    """A stream (NDJSON or server-sent events) whose `on_close` runs once the response ends, however it ends.

    Starlette cancels the body when the client disconnects (ASGI 2.3) or raises on send (2.4);
    in both cases, and on success, the body iterator is closed and `on_close` awaited, so that
    a generation slot is never left behind.
    """

    def __init__(
        self, content: AsyncIterator[bytes], *, media_type: str, on_close: Callable[[], Awaitable[None]]
    ) -> None:
        # No proxy may buffer a token stream (nginx honours X-Accel-Buffering); SSE clients expect no-cache.
        headers = (
            {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"} if media_type == SSE_MEDIA_TYPE else None
        )
        super().__init__(content, media_type=media_type, headers=headers)
        self._content = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (OSError, ClientDisconnect):
            logger.debug("client went away during a stream")
        finally:
            aclose = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._on_close()


class DisconnectWatcher:
    """Listens for `http.disconnect` while a request waits for a slot or generates (non-streaming).

    Call it only after the request body was read; `stop()` it before a response streams.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._gone = asyncio.Event()
        self._callbacks: list[Callable[[], object]] = []
        self._task = asyncio.create_task(self._listen())

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    def on_disconnect(self, callback: Callable[[], object]) -> None:
        if self.gone:
            callback()
        else:
            self._callbacks.append(callback)

    async def race(self, awaitable: Awaitable[T]) -> T:
        """The awaitable's result; ClientGoneError (awaitable cancelled) if the client leaves first."""
        work = asyncio.ensure_future(awaitable)
        gone = asyncio.create_task(self._gone.wait())
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            gone.cancel()
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        raise ClientGoneError()

    def stop(self) -> None:
        self._task.cancel()

    async def _listen(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._gone.set()
                for callback in self._callbacks:
                    callback()
                return
