"""The hot path: send one request (POST /generate, or an OpenAI-compatible completion) on the shared client
and time what comes back.

Cheap per request: bodies come encoded (`Workload`), token lines of the wrapper's own compact form are
recognised without parsing JSON, and only the final line (or an unusual one) is parsed. OpenAI answers are
read by `labkit.measure.load._openai`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import KW_ONLY, dataclass
from typing import Any

import httpx

from labkit.measure.load._openai import error_text, read_openai_stream, take_openai_answer
from labkit.measure.load._records import Attempt
from labkit.service_logs import REQUEST_ID_HEADER

__all__ = ["RequestSender"]

# The wrapper writes token chunks as exactly `{"response":"<text>","done":false}`.
_TOKEN_HEAD = b'{"response":"'
_TOKEN_TAIL = b'","done":false}'
_EMPTY_TOKEN_LEN = len(_TOKEN_HEAD) + len(_TOKEN_TAIL)
_ERROR_BODY_LIMIT = 64 * 1024


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _http_error_kind(status: int) -> str:
    return "http_4xx" if 400 <= status < 500 else "http_5xx" if status >= 500 else "protocol"


def _error_message(status: int, body: bytes) -> str:
    try:
        parsed = json.loads(body)
        message = parsed.get("error") if isinstance(parsed, dict) else None
    except ValueError:
        message = None
    text = error_text(message) if message is not None else body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


@dataclass(eq=False, repr=False)
class RequestSender:
    """Sends attempts on one shared `httpx.AsyncClient`; never raises for a failed request (only
    `CancelledError` passes through): every outcome lands in the attempt."""

    client: httpx.AsyncClient
    target: str
    _: KW_ONLY
    stream: bool
    openai: bool
    slots: asyncio.Semaphore | None

    async def send(self, attempt: Attempt, body: bytes, deadline: float) -> None:
        """Run `attempt` (POST `body`) until it ends or until `deadline` (monotonic) passes."""
        try:
            async with asyncio.timeout_at(deadline):
                if self.slots is None:
                    await self._exchange(attempt, body)
                else:
                    async with self.slots:
                        await self._exchange(attempt, body)
        except (TimeoutError, httpx.TimeoutException) as exc:
            where = "waiting for a connection slot" if attempt.actual is None else "in flight"
            attempt.fail("timeout", f"not finished in time ({where}): {type(exc).__name__}")
        except httpx.ConnectError as exc:
            attempt.fail("connect", f"could not connect: {exc}")
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            status, what = attempt.status, str(exc) or type(exc).__name__
            if status == 0:
                attempt.fail("reset", f"the connection broke before a response: {what}")
            elif status == 200:
                chunks = len(attempt.chunk_times)
                attempt.fail("stream_cut", f"the answer broke off after {chunks} chunks: {what}")
            else:  # the status says what went wrong; its body did not arrive whole
                attempt.fail(_http_error_kind(status), f"HTTP {status} (its body broke off: {what})")
        except httpx.HTTPError as exc:
            attempt.fail("protocol", f"{type(exc).__name__}: {exc}")
        if attempt.end is None:
            attempt.end = time.monotonic()

    async def _exchange(self, a: Attempt, body: bytes) -> None:
        if a.actual is None:
            a.actual = time.monotonic()
        headers = {REQUEST_ID_HEADER: a.x_request_id}  # the services log it: a failed row leads to its lines
        async with self.client.stream("POST", self.target, content=body, headers=headers) as resp:
            a.status = status = resp.status_code
            if status != 200:
                await self._read_error(a, resp)
            elif self.stream and self.openai:
                await read_openai_stream(a, resp)
            elif self.stream:
                await self._read_stream(a, resp)
            else:
                await self._read_answer(a, resp)

    async def _read_error(self, a: Attempt, resp: httpx.Response) -> None:
        body = b""
        async for data in resp.aiter_bytes():
            body += data
            if len(body) >= _ERROR_BODY_LIMIT:
                break
        a.fail(_http_error_kind(a.status), _error_message(a.status, body))

    async def _read_stream(self, a: Attempt, resp: httpx.Response) -> None:
        clock = time.monotonic
        chunk_times = a.chunk_times
        buffer = b""
        finished = False
        async for data in resp.aiter_bytes():
            now = clock()
            a.end = now
            if finished:
                continue  # the final line is in; read the rest so the connection can be reused
            buffer += data
            while (cut := buffer.find(b"\n")) >= 0:
                line, buffer = buffer[:cut], buffer[cut + 1 :]
                if line.startswith(_TOKEN_HEAD) and line.endswith(_TOKEN_TAIL):
                    if len(line) > _EMPTY_TOKEN_LEN:
                        chunk_times.append(now)
                    continue
                if not line.strip():
                    continue
                finished = self._other_line(a, line, now)
                if finished:
                    break
            if finished and a.error_kind == "protocol":
                break  # not the wrapper's API: nothing more worth reading
        if not finished:
            a.fail(
                "stream_cut", f"the stream ended without its final done line after {len(chunk_times)} chunks"
            )

    @staticmethod
    def _other_line(a: Attempt, line: bytes, now: float) -> bool:
        """A line that is not a plain token chunk; True when it ends the answer."""
        try:
            chunk = json.loads(line)
        except ValueError:
            a.fail("protocol", f"a stream line is not JSON: {line[:120]!r}", now)
            return True
        if not isinstance(chunk, dict):
            a.fail("protocol", f"a stream line is not a JSON object: {line[:120]!r}", now)
            return True
        if "error" in chunk:
            a.fail("stream_error", f"the stream ended with an error: {chunk['error']}", now)
            return True
        if chunk.get("done"):
            a.ok = True
            _take_summary(a, chunk)
            return True
        if chunk.get("response"):
            a.chunk_times.append(now)
        return False

    async def _read_answer(self, a: Attempt, resp: httpx.Response) -> None:
        body = await resp.aread()
        now = a.end = time.monotonic()
        try:
            answer = json.loads(body)
        except ValueError as exc:
            # Valid so far but unfinished (the error is at the very end) means the body was cut short.
            cut = (
                isinstance(exc, json.JSONDecodeError)
                and (exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string"))
                and body[:1] == b"{"
            )
            if cut:
                a.fail("stream_cut", f"the JSON answer ended early after {len(body)} bytes", now)
            else:
                a.fail("protocol", f"the answer is not one JSON object: {body[:120]!r}", now)
            return
        if not isinstance(answer, dict) or "error" in answer:
            a.fail("protocol", f"the 200 answer is not a completion: {body[:200]!r}", now)
            return
        if self.openai:
            take_openai_answer(a, answer, now)
            return
        a.ok = True
        _take_summary(a, answer)


def _take_summary(a: Attempt, final: dict[str, Any]) -> None:
    a.output_tokens = _int_or_none(final.get("output_tokens"))
    a.prompt_tokens = _int_or_none(final.get("prompt_tokens"))
    reason = final.get("done_reason")
    a.done_reason = reason if isinstance(reason, str) else None
    a.server_ttft = _float_or_none(final.get("time_to_first_token_seconds"))
    a.server_duration = _float_or_none(final.get("duration_seconds"))
