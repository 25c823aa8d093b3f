"""The upstream that speaks the OpenAI-compatible API (vLLM, SGLang, TGI, llama.cpp's server, LM Studio,
LiteLLM, Ollama at /v1): chat -> POST {base}/chat/completions, text -> POST {base}/completions, streamed as
server-sent events with `stream_options.include_usage`, read into the wrapper's chunks; GET {base}/models.

`base` is the API's base URL as OpenAI clients take it (usually ending in /v1).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
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

__all__ = ["OpenAIUpstream", "read_events"]

logger = logging.getLogger(__name__)

_PATHS = {"chat": "/chat/completions", "text_completion": "/completions"}
_DONE = b"[DONE]"
_URL_HINT = "is the URL the API's base, as OpenAI clients take it (often ending in /v1)?"


class OpenAIUpstream:
    """An OpenAI-compatible model server whose API base is `url`."""

    provider = "openai"

    def __init__(self, url: str, *, timeout_s: float, api_key: str | None = None) -> None:
        self.url = url
        self._timeout_s = timeout_s
        self._headers = auth_headers(
            api_key, [("Content-Type", "application/json"), ("Accept", "text/event-stream")]
        )
        self._get_headers = auth_headers(api_key)
        self._key_hint = "check --backend-api-key-file" if api_key else "give it with --backend-api-key-file"

    def body(self, call: GenerationCall) -> dict[str, Any]:
        """The request body of `call`: its options as body fields, then what the wrapper always sets."""
        body: dict[str, Any] = {**call.options, "model": call.model}
        if call.operation == "chat":
            body["messages"] = list(call.messages)
        else:
            body["prompt"] = call.prompt
        body["max_tokens"] = call.max_tokens
        # Always streamed, with the usage chunk at the end (servers that do not know the option ignore it).
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        return body

    async def open(self, session: aiohttp.ClientSession, call: GenerationCall) -> UpstreamStream:
        """POST the call and return its event stream once the status says 200; UpstreamError otherwise."""
        url, timeout_s = self.url, self._timeout_s
        try:
            response = await session.post(
                upstream_endpoint(url, _PATHS[call.operation]),
                data=json.dumps(self.body(call)).encode(),
                headers=with_request_id(self._headers, call, uuid_only=True),
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc, url, timeout_s) from exc
        if response.status != 200:
            body = await read_whole_body(response, url, timeout_s)
            error = error_for_status(response.status, body, url=url, key_hint=self._key_hint)
            if response.status == 404 and b"model" not in body.lower():
                # A 404 that does not talk about a model is a wrong path, the lab's to fix, not the client's.
                error = UpstreamError(
                    f"model backend at {url} has no {_PATHS[call.operation]} (HTTP 404); {_URL_HINT}",
                    status_code=502,
                    kind="http_4xx",
                )
            raise error
        return UpstreamStream(read_events(response, backend_url=url, timeout_s=timeout_s), response)

    async def models(self, session: aiohttp.ClientSession, *, timeout_s: float) -> list[UpstreamModel]:
        """GET {base}/models."""
        hints = {404: _URL_HINT, 401: self._key_hint, 403: self._key_hint}
        listed = await get_model_list(
            session, self.url, "/models", headers=self._get_headers, timeout_s=timeout_s, hints=hints
        )
        try:
            entries = listed["data"]
            return [_model_entry(e) for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]
        except (KeyError, TypeError) as exc:
            raise not_a_model_list(self.url, "/models") from exc


def _model_entry(entry: dict[str, Any]) -> UpstreamModel:
    created = non_negative_int(entry.get("created")) or 0
    owner = entry.get("owned_by")
    return UpstreamModel(
        id=entry["id"], created=created, owned_by=owner if isinstance(owner, str) else "unknown"
    )


class _Summary:
    """What the events said about the whole generation so far."""

    __slots__ = ("done_reason", "model", "output_tokens", "prompt_tokens")

    def __init__(self) -> None:
        self.model: str | None = None
        self.done_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.output_tokens: int | None = None

    def final(self) -> Chunk:
        return Chunk(
            done=True,
            model=self.model,
            done_reason=self.done_reason,
            prompt_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens,
        )


def _stream_error(backend_url: str, what: str) -> UpstreamError:
    return UpstreamError(f"model backend at {backend_url} {what}", status_code=502, kind="stream")


def _event_text(data: bytes, summary: _Summary, backend_url: str) -> str:
    """The text one event's JSON carries (chat's delta.content or a completion's text); notes its model,
    finish reason and usage in `summary`. An error event or data that is no JSON object raises."""
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise _stream_error(backend_url, f"sent an event that is not JSON: {data[:80]!r}") from exc
    if not isinstance(event, dict):
        raise _stream_error(backend_url, f"sent an event that is not a JSON object: {data[:80]!r}")
    if "error" in event:
        error = event["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise UpstreamError(f"model backend failed mid-stream: {message}", status_code=502, kind="stream")
    model = event.get("model")
    if isinstance(model, str):
        summary.model = model
    usage = event.get("usage")
    if isinstance(usage, dict):
        summary.prompt_tokens = non_negative_int(usage.get("prompt_tokens"))
        summary.output_tokens = non_negative_int(usage.get("completion_tokens"))
    choices = event.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    reason = choice.get("finish_reason")
    if isinstance(reason, str):
        summary.done_reason = reason
    piece = choice.get("text")
    if piece is None:
        delta = choice.get("delta") or choice.get("message")
        piece = delta.get("content") if isinstance(delta, dict) else None
    return piece if isinstance(piece, str) else ""


async def read_events(
    response: aiohttp.ClientResponse, *, backend_url: str, timeout_s: float
) -> AsyncIterator[Chunk]:
    """Yield the upstream's server-sent events as chunks: one per event that carries text, then the `done`
    one at `data: [DONE]` with the finish reason and the usage the events carried.

    A broken connection, an error event, data that is not JSON, a read timeout or an end without
    `[DONE]` (and without a finish reason) raise UpstreamError. A server that ignored `stream` and answered
    one JSON object is read as one chunk and the end.
    """
    summary = _Summary()
    if response.content_type == "application/json":
        body = await read_whole_body(response, backend_url, timeout_s)
        text = _event_text(body, summary, backend_url)
        if text:
            yield Chunk(text)
        yield summary.final()
        return
    content = response.content
    pending = b""  # the start of a line whose newline has not arrived yet
    data_lines: list[bytes] = []  # the data of the event being read (SSE: joined by newlines)
    while True:
        try:
            received = await content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc, backend_url, timeout_s) from exc
        if not received:
            break
        pending += received
        if b"\n" not in received:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.startswith(b"data:"):
                value = line[5:]
                data_lines.append(value[1:] if value.startswith(b" ") else value)
                continue
            if line or not data_lines:
                continue  # a comment (": ping"), an event name or id, or a blank line between events
            data = data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines)
            data_lines.clear()
            if data == _DONE:
                await read_to_end(content)
                yield summary.final()
                return
            text = _event_text(data, summary, backend_url)
            if text:
                yield Chunk(text)
    if data_lines:  # the body ended without the blank line after the last event
        data = b"\n".join(data_lines)
        if data == _DONE:
            yield summary.final()
            return
        text = _event_text(data, summary, backend_url)
        if text:
            yield Chunk(text)
    if summary.done_reason is not None:
        # A server that ends the body after the finish reason, without [DONE]: the generation is whole.
        yield summary.final()
        return
    raise _stream_error(backend_url, "ended the stream before its final event (data: [DONE])")
