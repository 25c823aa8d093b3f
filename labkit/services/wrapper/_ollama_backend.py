"""The upstream that speaks Ollama's native API: chat -> POST /api/chat, text -> POST /api/generate, both
read as NDJSON lines into the wrapper's chunks; the model list from GET /api/tags.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp

from labkit.services.wrapper._upstream import (
    Chunk,
    GenerationCall,
    UpstreamError,
    UpstreamModel,
    UpstreamStream,
    auth_headers,
    error_for_status,
    get_model_list,
    non_negative_int,
    not_a_model_list,
    read_to_end,
    read_whole_body,
    transport_error,
    upstream_endpoint,
    with_request_id,
)

__all__ = ["OllamaUpstream", "read_chunks"]

logger = logging.getLogger(__name__)

_PATHS = {"chat": "/api/chat", "text_completion": "/api/generate"}


class OllamaUpstream:
    """An Ollama-API model server at `url` (Ollama itself, or labkit's model server)."""

    provider = "ollama"

    def __init__(self, url: str, *, timeout_s: float, api_key: str | None = None) -> None:
        self.url = url
        self._timeout_s = timeout_s
        self._headers = auth_headers(api_key, [("Content-Type", "application/json")])
        self._get_headers = auth_headers(api_key)
        self._key_hint = "check --backend-api-key-file" if api_key else "give it with --backend-api-key-file"

    def payload(self, call: GenerationCall) -> dict[str, Any]:
        """The request body of `call`: always streamed, always bounded by num_predict."""
        # Always bounded: Ollama's own default (-1) would generate until the context is full.
        options = {**call.options, "num_predict": call.max_tokens}
        if call.operation == "chat":
            return {"model": call.model, "messages": list(call.messages), "stream": True, "options": options}
        return {"model": call.model, "prompt": call.prompt, "stream": True, "options": options}

    async def open(self, session: aiohttp.ClientSession, call: GenerationCall) -> UpstreamStream:
        """POST the call and return its stream once the status says 200; UpstreamError otherwise."""
        url, timeout_s = self.url, self._timeout_s
        try:
            # No redirects: a 3xx is the backend's answer, not somewhere to go.
            response = await session.post(
                upstream_endpoint(url, _PATHS[call.operation]),
                data=json.dumps(self.payload(call)).encode(),
                headers=with_request_id(self._headers, call),
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc, url, timeout_s) from exc
        if response.status != 200:
            body = await read_whole_body(response, url, timeout_s)
            raise error_for_status(response.status, body, url=url, key_hint=self._key_hint)
        return UpstreamStream(read_chunks(response, backend_url=url, timeout_s=timeout_s), response)

    async def models(self, session: aiohttp.ClientSession, *, timeout_s: float) -> list[UpstreamModel]:
        """GET /api/tags, as model entries."""
        listed = await get_model_list(
            session, self.url, "/api/tags", headers=self._get_headers, timeout_s=timeout_s
        )
        try:
            entries = listed.get("models") or []
            return [_model_entry(e) for e in entries if isinstance(e, dict) and _name(e)]
        except (AttributeError, TypeError) as exc:
            raise not_a_model_list(self.url, "/api/tags") from exc


def _name(entry: dict[str, Any]) -> str | None:
    for key in ("name", "model"):
        if isinstance(entry.get(key), str) and entry[key]:
            return str(entry[key])
    return None


def _model_entry(entry: dict[str, Any]) -> UpstreamModel:
    """An /api/tags entry as Ollama's /v1/models shows it: created from modified_at, owner the namespace."""
    name = _name(entry) or ""
    created = 0
    modified = entry.get("modified_at")
    if isinstance(modified, str):
        try:
            # Ollama writes nanoseconds; Python reads at most microseconds.
            head, dot, rest = modified.partition(".")
            if dot:
                digits = len(rest) - len(rest.lstrip("0123456789"))
                modified = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
            created = int(datetime.fromisoformat(modified).timestamp())
        except ValueError:
            created = 0
    owner = name.split("/", 1)[0] if "/" in name else "library"
    return UpstreamModel(id=name, created=created, owned_by=owner)


def _parse_line(line: bytes, backend_url: str) -> Chunk | None:
    """One NDJSON line as a chunk; None for a blank line. A line that is no chunk raises UpstreamError."""
    # Decoded as httpx did (UTF-8, bad bytes replaced); cheaper than json.loads' own encoding detection.
    text = line.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError as exc:
        if not text.strip():
            return None
        raise UpstreamError(
            f"model backend at {backend_url} sent a line that is not JSON: {text[:80]!r}",
            status_code=502,
            kind="stream",
        ) from exc
    if not isinstance(data, dict):
        raise UpstreamError(
            f"model backend at {backend_url} sent a line that is not a JSON object: {text[:80]!r}",
            status_code=502,
            kind="stream",
        )
    if "error" in data:
        raise UpstreamError(
            f"model backend failed mid-stream: {data['error']}", status_code=502, kind="stream"
        )
    # /api/generate's chunks carry `response`, /api/chat's a `message`.
    piece = data.get("response")
    if piece is None:
        message = data.get("message")
        piece = message.get("content") if isinstance(message, dict) else None
    if not isinstance(piece, str):
        piece = ""
    if not data.get("done"):
        return Chunk(piece)
    model = data.get("model")
    reason = data.get("done_reason")
    return Chunk(
        piece,
        done=True,
        model=model if isinstance(model, str) else None,
        done_reason=reason if isinstance(reason, str) else None,
        prompt_tokens=non_negative_int(data.get("prompt_eval_count")),
        output_tokens=non_negative_int(data.get("eval_count")),
    )


async def read_chunks(
    response: aiohttp.ClientResponse, *, backend_url: str, timeout_s: float
) -> AsyncIterator[Chunk]:
    """Yield the backend's NDJSON lines as chunks, up to and including the `done` one.

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
            raise transport_error(exc, backend_url, timeout_s) from exc
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
            if chunk.done:
                if not pending.strip() and not any(rest.strip() for rest in lines[i + 1 :]):
                    await read_to_end(content)
                yield chunk
                return
            yield chunk
    # The body ended: a last line without a newline still counts, as with any NDJSON reader.
    chunk = _parse_line(pending, backend_url)
    if chunk is not None:
        yield chunk
        if chunk.done:
            return
    raise UpstreamError(
        f"model backend at {backend_url} ended the stream before its final chunk",
        status_code=502,
        kind="stream",
    )
