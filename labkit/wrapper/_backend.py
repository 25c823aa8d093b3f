"""Talking to the Ollama-API model backend: open a generate stream, read its NDJSON chunks, check readiness.

Every failure becomes an `UpstreamError` that says which HTTP status the wrapper answers and which
`llm_backend_errors_total{kind}` it counts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from labkit.errors import LabkitError

__all__ = ["UpstreamError", "missing_model_reason", "open_generate_stream", "read_chunks"]

logger = logging.getLogger(__name__)

_MAX_ERROR_TEXT = 300


class UpstreamError(LabkitError):
    """The model backend failed a request; carries the wrapper's answer and the metric kind."""

    def __init__(self, message: str, *, status_code: int, kind: str, retry_after: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.kind = kind
        self.retry_after = retry_after


def _backend_message(response: httpx.Response) -> str:
    """The backend's `{"error": ...}` text, or the start of its body when it is not Ollama-shaped."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    text = response.text.strip()
    return text[:_MAX_ERROR_TEXT] if text else f"HTTP {response.status_code} with an empty body"


def _transport_error(exc: httpx.TransportError, backend_url: str, timeout_s: float) -> UpstreamError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        reason = (
            "no connection within the connect timeout"
            if isinstance(exc, httpx.ConnectTimeout)
            else str(exc) or type(exc).__name__
        )
        return UpstreamError(
            f"model backend unreachable at {backend_url}: {reason}",
            status_code=502,
            kind="connect",
        )
    if isinstance(exc, httpx.TimeoutException):
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


async def open_generate_stream(
    client: httpx.AsyncClient, payload: dict[str, Any], *, backend_url: str, timeout_s: float
) -> httpx.Response:
    """POST /api/generate and return the open streaming response once its status says 200.

    On any failure the response is closed and an UpstreamError raised.
    """
    request = client.build_request("POST", "/api/generate", json=payload)
    try:
        response = await client.send(request, stream=True)
    except httpx.TransportError as exc:
        raise _transport_error(exc, backend_url, timeout_s) from exc
    if response.status_code == 200:
        return response
    try:
        await response.aread()
    except httpx.TransportError as exc:
        raise _transport_error(exc, backend_url, timeout_s) from exc
    finally:
        await response.aclose()
    message = _backend_message(response)
    code = response.status_code
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


async def read_chunks(
    response: httpx.Response, *, backend_url: str, timeout_s: float
) -> AsyncIterator[dict[str, Any]]:
    """Yield the backend's NDJSON chunks up to and including the `done` one.

    A broken connection, an `{"error": ...}` line, a line that is not JSON, a read timeout or an end
    without a `done` chunk raise UpstreamError.
    """
    lines = response.aiter_lines()
    while True:
        try:
            line = await anext(lines)
        except StopAsyncIteration:
            break
        except httpx.TransportError as exc:
            raise _transport_error(exc, backend_url, timeout_s) from exc
        if not line.strip():
            continue
        try:
            chunk = json.loads(line)
        except ValueError as exc:
            raise UpstreamError(
                f"model backend at {backend_url} sent a line that is not JSON: {line[:80]!r}",
                status_code=502,
                kind="stream",
            ) from exc
        if not isinstance(chunk, dict):
            raise UpstreamError(
                f"model backend at {backend_url} sent a line that is not a JSON object: {line[:80]!r}",
                status_code=502,
                kind="stream",
            )
        if "error" in chunk:
            raise UpstreamError(
                f"model backend failed mid-stream: {chunk['error']}", status_code=502, kind="stream"
            )
        yield chunk
        if chunk.get("done"):
            return
    raise UpstreamError(
        f"model backend at {backend_url} ended the stream before its final chunk",
        status_code=502,
        kind="stream",
    )


def _with_tag(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


async def missing_model_reason(
    client: httpx.AsyncClient, *, backend_url: str, model: str, timeout_s: float
) -> str | None:
    """None when the backend answers GET /api/tags in time and lists `model`; else why not.

    `x` and `x:latest` name the same model, as they do in Ollama.
    """
    try:
        response = await client.get("/api/tags", timeout=timeout_s)
    except httpx.TimeoutException:
        return f"model backend at {backend_url} did not answer /api/tags within {timeout_s:g} s"
    except httpx.TransportError as exc:
        return f"model backend unreachable at {backend_url}: {str(exc) or type(exc).__name__}"
    if response.status_code != 200:
        return f"model backend at {backend_url} answered /api/tags with HTTP {response.status_code}"
    try:
        models = response.json().get("models") or []
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
