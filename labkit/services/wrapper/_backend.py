"""Talking to the Ollama-API model backend: open a generate stream, read its NDJSON chunks, check readiness.

Every failure becomes an `UpstreamError` that says which HTTP status the wrapper answers and which
`llm_backend_errors_total{kind}` it counts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

from labkit.errors import LabkitError

__all__ = [
    "UpstreamError",
    "backend_session",
    "missing_model_reason",
    "open_generate_stream",
    "read_chunks",
]

logger = logging.getLogger(__name__)

_MAX_ERROR_TEXT = 300
_END_OF_BODY_WAIT_S = 0.5
_JSON_HEADERS = {"Content-Type": "application/json"}
# Below the 5 s after which uvicorn (labkit's model server) drops an idle connection: a connection the
# server is closing at the moment of reuse would fail a POST, which aiohttp does not retry.
_KEEPALIVE_S = 4.0


class UpstreamError(LabkitError):
    """The model backend failed a request; carries the wrapper's answer and the metric kind."""

    def __init__(self, message: str, *, status_code: int, kind: str, retry_after: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.kind = kind
        self.retry_after = retry_after


def backend_session(*, connect_timeout_s: float, read_timeout_s: float) -> aiohttp.ClientSession:
    """The wrapper's one connection pool to the backend, for the app's lifespan (open it in a running loop).

    `read_timeout_s` bounds each wait for the backend's next bytes, not a whole request.
    """
    # limit=0: max_in_flight already bounds the connections, and a pool wait would hide it.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=_KEEPALIVE_S)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=read_timeout_s),
        # trust_env=False: a proxy from the environment must never sit between the wrapper and its backend.
        trust_env=False,
        # The backend sets no cookies; without a jar no request pays for cookie filtering.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def _backend_message(status: int, body: bytes) -> str:
    """The backend's `{"error": ...}` text, or the start of its body when it is not Ollama-shaped."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    text = body.decode("utf-8", errors="replace").strip()
    return text[:_MAX_ERROR_TEXT] if text else f"HTTP {status} with an empty body"


def _transport_error(exc: Exception, backend_url: str, timeout_s: float) -> UpstreamError:
    """An aiohttp error (or a timeout) while talking to the backend, as the wrapper's answer."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        reason = (
            "no connection within the connect timeout"
            if isinstance(exc, aiohttp.ConnectionTimeoutError)
            else str(exc.os_error) or type(exc).__name__
        )
        return UpstreamError(
            f"model backend unreachable at {backend_url}: {reason}",
            status_code=502,
            kind="connect",
        )
    if isinstance(exc, TimeoutError):
        return UpstreamError(
            f"model backend at {backend_url} sent nothing for {timeout_s:g} s (backend timeout)",
            status_code=504,
            kind="timeout",
        )
    return UpstreamError(
        f"model backend at {backend_url} broke the connection: {str(exc) or type(exc).__name__}",
        status_code=502,
        kind="stream",
    )


@functools.lru_cache(maxsize=64)
def _endpoint(backend_url: str, path: str) -> URL:
    # Parsed once per backend: a URL object passes through aiohttp without being parsed again.
    return URL(backend_url + path)


async def open_generate_stream(
    session: aiohttp.ClientSession, payload: dict[str, Any], *, backend_url: str, timeout_s: float
) -> aiohttp.ClientResponse:
    """POST /api/generate and return the open streaming response once its status says 200.

    On any failure the response is closed and an UpstreamError raised.
    """
    try:
        # No redirects, as before with httpx: a 3xx is the backend's answer, not somewhere to go.
        response = await session.post(
            _endpoint(backend_url, "/api/generate"),
            data=json.dumps(payload).encode(),
            headers=_JSON_HEADERS,
            allow_redirects=False,
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _transport_error(exc, backend_url, timeout_s) from exc
    code = response.status
    if code == 200:
        return response
    try:
        body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _transport_error(exc, backend_url, timeout_s) from exc
    finally:
        # Back to the pool when the body was read to its end; closed otherwise.
        response.release()
    message = _backend_message(code, body)
    if code == 503:
        raise UpstreamError(
            f"model backend is busy: {message}", status_code=503, kind="busy", retry_after=True
        )
    if code == 404:
        raise UpstreamError(message, status_code=404, kind="model_not_found")
    if code == 400:
        # The wrapper passes the client's model and options through, so a 400 is the client's to fix.
        raise UpstreamError(
            f"model backend rejected the request: {message}", status_code=400, kind="bad_request"
        )
    kind = "http_4xx" if code < 500 else "http_5xx"
    raise UpstreamError(f"model backend answered HTTP {code}: {message}", status_code=502, kind=kind)


def _parse_line(line: bytes, backend_url: str) -> dict[str, Any] | None:
    """One NDJSON line as a chunk; None for a blank line. A line that is no chunk raises UpstreamError."""
    # Decoded as httpx did (UTF-8, bad bytes replaced); cheaper than json.loads' own encoding detection.
    text = line.decode("utf-8", errors="replace")
    try:
        chunk = json.loads(text)
    except ValueError as exc:
        if not text.strip():
            return None
        raise UpstreamError(
            f"model backend at {backend_url} sent a line that is not JSON: {text[:80]!r}",
            status_code=502,
            kind="stream",
        ) from exc
    if not isinstance(chunk, dict):
        raise UpstreamError(
            f"model backend at {backend_url} sent a line that is not a JSON object: {text[:80]!r}",
            status_code=502,
            kind="stream",
        )
    if "error" in chunk:
        raise UpstreamError(
            f"model backend failed mid-stream: {chunk['error']}", status_code=502, kind="stream"
        )
    return chunk


async def read_chunks(
    response: aiohttp.ClientResponse, *, backend_url: str, timeout_s: float
) -> AsyncIterator[dict[str, Any]]:
    """Yield the backend's NDJSON chunks up to and including the `done` one.

    A broken connection, an `{"error": ...}` line, a line that is not JSON, a read timeout or an end
    without a `done` chunk raise UpstreamError.
    """
    content = response.content
    # Lines are split here rather than with content.readline(), which fails on lines over 128 KiB (an
    # Ollama final chunk carries the whole context's token ids); one read often holds several lines.
    pending = b""  # the start of a line whose newline has not arrived yet
    while True:
        try:
            data = await content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _transport_error(exc, backend_url, timeout_s) from exc
        if not data:
            break
        pending += data
        if b"\n" not in data:
            continue
        *lines, pending = pending.split(b"\n")
        for i, line in enumerate(lines):
            chunk = _parse_line(line, backend_url)
            if chunk is None:
                continue
            if chunk.get("done"):
                if not pending.strip() and not any(rest.strip() for rest in lines[i + 1 :]):
                    await _read_to_end(content)
                yield chunk
                return
            yield chunk
    # The body ended: a last line without a newline still counts, as with any NDJSON reader.
    chunk = _parse_line(pending, backend_url)
    if chunk is not None:
        yield chunk
        if chunk.get("done"):
            return
    raise UpstreamError(
        f"model backend at {backend_url} ended the stream before its final chunk",
        status_code=502,
        kind="stream",
    )


async def _read_to_end(content: aiohttp.StreamReader) -> None:
    """Read what follows the final chunk: normally nothing but the end of the chunked body. A response read
    to its end goes back to aiohttp's pool, so the next request reuses its connection instead of opening a
    new one (found by bench/: a connect per request was most of the wrapper's added latency). A backend
    that sends more, or is slow to end the body, loses the connection instead (Generation.close closes
    it); the answer is unaffected."""
    if content.at_eof():
        return  # the usual case: the body's end came with the final chunk
    try:
        async with asyncio.timeout(_END_OF_BODY_WAIT_S):
            while data := await content.readany():
                if data.strip():
                    return
    except (TimeoutError, aiohttp.ClientError):
        return


def _with_tag(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


async def missing_model_reason(
    session: aiohttp.ClientSession, *, backend_url: str, model: str, timeout_s: float
) -> str | None:
    """None when the backend answers GET /api/tags in time and lists `model`; else why not.

    `x` and `x:latest` name the same model, as they do in Ollama.
    """
    # timeout_s bounds the connect and each read, as httpx's `timeout=` did before.
    timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)
    try:
        async with session.get(
            _endpoint(backend_url, "/api/tags"), timeout=timeout, allow_redirects=False
        ) as response:
            status = response.status
            body = await response.read()
    except TimeoutError:
        return f"model backend at {backend_url} did not answer /api/tags within {timeout_s:g} s"
    except aiohttp.ClientError as exc:
        reason = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
        return f"model backend unreachable at {backend_url}: {str(reason) or type(exc).__name__}"
    if status != 200:
        return f"model backend at {backend_url} answered /api/tags with HTTP {status}"
    try:
        models = json.loads(body).get("models") or []
        names = {str(e[key]) for e in models for key in ("name", "model") if isinstance(e.get(key), str)}
    except (ValueError, AttributeError, TypeError):
        return f"model backend at {backend_url} answered /api/tags with something that is not a model list"
    wanted = _with_tag(model)
    if any(_with_tag(name) == wanted for name in names):
        return None
    listed = ", ".join(sorted(names)) or "none"
    return (
        f"model {model!r} is not on the model backend at {backend_url} (it has: {listed}); "
        "pull it there or start the wrapper with --model NAME"
    )
