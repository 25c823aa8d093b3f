"""What the wrapper asks of its model upstream, whatever API the upstream speaks: a `GenerationCall` in,
`Chunk`s out, every failure one `UpstreamError`. Two implementations read back into the same chunks:
Ollama's native API (`_ollama_backend`) and any OpenAI-compatible API (`_openai_backend`).

Also what both share: the connection pool, transport errors, and what an HTTP error status means.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp
from yarl import URL

from labkit.errors import LabkitError
from labkit.service_logs import REQUEST_ID_HEADER

__all__ = [
    "BACKEND_APIS",
    "OPERATIONS",
    "BackendApi",
    "Chunk",
    "GenerationCall",
    "Operation",
    "Upstream",
    "UpstreamError",
    "UpstreamModel",
    "UpstreamStream",
    "auth_headers",
    "backend_session",
    "error_for_status",
    "get_model_list",
    "missing_model_reason",
    "non_negative_int",
    "not_a_model_list",
    "read_to_end",
    "read_whole_body",
    "transport_error",
    "upstream_endpoint",
    "with_request_id",
]

logger = logging.getLogger(__name__)

# The APIs the wrapper can talk to its upstream in (the `--backend-api` flag).
BackendApi = Literal["ollama", "openai"]
BACKEND_APIS: tuple[BackendApi, ...] = ("ollama", "openai")
# What a generation is, by the OpenTelemetry GenAI convention's gen_ai.operation.name values.
Operation = Literal["chat", "text_completion"]
OPERATIONS: tuple[Operation, ...] = ("chat", "text_completion")

_MAX_ERROR_TEXT = 300
_END_OF_BODY_WAIT_S = 0.5
# Below the 5 s after which uvicorn (labkit's model server) drops an idle connection: a connection the
# server is closing at the moment of reuse would fail a POST, which aiohttp does not retry.
_KEEPALIVE_S = 4.0


class UpstreamError(LabkitError):
    """The model upstream failed a request; carries the wrapper's answer and the metric kind.

    `status_code` is what /generate answers; `kind` is the `llm_backend_errors_total{kind}` it counts
    (`busy` is the shed path: 503 with Retry-After on /generate, 429 on the OpenAI-compatible API).
    """

    def __init__(self, message: str, *, status_code: int, kind: str, retry_after: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.kind = kind
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class GenerationCall:
    """One generation the wrapper asks of its upstream, always streamed (so TTFT and gaps are measured).

    `options` are sampling parameters under the names Ollama's options and the OpenAI API share
    (temperature, top_p, seed, stop, frequency_penalty, presence_penalty, ...), passed through as given;
    `max_tokens` is always set (Ollama's num_predict), so no generation runs until the context is full.
    """

    operation: Operation
    model: str
    max_tokens: int
    prompt: str = ""  # text_completion
    messages: tuple[Mapping[str, Any], ...] = ()  # chat: {"role", "content"} each
    options: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None  # the client's request id, sent on as X-Request-ID (the upstream logs it)


class Chunk:
    """A piece of the upstream's stream: generated `text` (may be empty), and on the last one (`done`) what
    the upstream said about the whole generation. Counts are None when the upstream did not say."""

    __slots__ = ("done", "done_reason", "model", "output_tokens", "prompt_tokens", "text")

    def __init__(
        self,
        text: str = "",
        *,
        done: bool = False,
        model: str | None = None,
        done_reason: str | None = None,
        prompt_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        self.text = text
        self.done = done
        self.model = model
        self.done_reason = done_reason
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens

    def __repr__(self) -> str:
        return f"Chunk({self.text!r}, done={self.done})"


@dataclass(frozen=True, slots=True)
class UpstreamModel:
    """A model the upstream serves, as the OpenAI API lists it."""

    id: str
    created: int = 0
    owned_by: str = "unknown"


@dataclass(slots=True)
class UpstreamStream:
    """An open generation: its chunks, up to and including the `done` one, and the response to close."""

    chunks: AsyncIterator[Chunk]
    response: aiohttp.ClientResponse

    def close(self) -> None:
        """Drop the connection (the upstream sees the disconnect and stops); a no-op once read to its end."""
        # Synchronous, so a disconnect that cancels the request cannot interrupt it.
        self.response.close()


class Upstream(Protocol):
    """A model server the wrapper fronts. `url` is where it is; `provider` its gen_ai.provider.name."""

    url: str
    provider: str

    async def open(self, session: aiohttp.ClientSession, call: GenerationCall) -> UpstreamStream:
        """Start `call`; return once the upstream's status says 200. UpstreamError otherwise."""
        ...

    async def models(self, session: aiohttp.ClientSession, *, timeout_s: float) -> list[UpstreamModel]:
        """The models the upstream serves; UpstreamError when it cannot say in time."""
        ...


def backend_session(*, connect_timeout_s: float, read_timeout_s: float) -> aiohttp.ClientSession:
    """The wrapper's one connection pool to the upstream, for the app's lifespan (open it in a running loop).

    `read_timeout_s` bounds each wait for the upstream's next bytes, not a whole request.
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


@functools.lru_cache(maxsize=64)
def upstream_endpoint(base_url: str, path: str) -> URL:
    # Parsed once per upstream: a URL object passes through aiohttp without being parsed again.
    return URL(base_url + path)


def transport_error(exc: Exception, url: str, timeout_s: float) -> UpstreamError:
    """An aiohttp error (or a timeout) while talking to the upstream, as the wrapper's answer."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        reason = (
            "no connection within the connect timeout"
            if isinstance(exc, aiohttp.ConnectionTimeoutError)
            else str(exc.os_error) or type(exc).__name__
        )
        return UpstreamError(f"model backend unreachable at {url}: {reason}", status_code=502, kind="connect")
    if isinstance(exc, TimeoutError):
        return UpstreamError(
            f"model backend at {url} sent nothing for {timeout_s:g} s (backend timeout)",
            status_code=504,
            kind="timeout",
        )
    return UpstreamError(
        f"model backend at {url} broke the connection: {str(exc) or type(exc).__name__}",
        status_code=502,
        kind="stream",
    )


async def get_model_list(
    session: aiohttp.ClientSession,
    url: str,
    path: str,
    *,
    headers: dict[str, str],
    timeout_s: float,
    hints: Mapping[int, str] | None = None,
) -> Any:
    """GET `path` of the upstream at `url` and its JSON body: the model list both APIs have (Ollama's
    /api/tags, OpenAI's /models). `timeout_s` bounds the connect and each read; every failure is one
    `UpstreamError` that names the path (`hints[status]` added to a non-200 answer's message)."""
    timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)
    try:
        async with session.get(
            upstream_endpoint(url, path), timeout=timeout, headers=headers, allow_redirects=False
        ) as response:
            status = response.status
            body = await response.read()
    except TimeoutError as exc:
        raise UpstreamError(
            f"model backend at {url} did not answer {path} within {timeout_s:g} s",
            status_code=504,
            kind="timeout",
        ) from exc
    except aiohttp.ClientError as exc:
        raise transport_error(exc, url, timeout_s) from exc
    if status != 200:
        hint = (hints or {}).get(status)
        raise UpstreamError(
            f"model backend at {url} answered {path} with HTTP {status}" + (f"; {hint}" if hint else ""),
            status_code=502,
            kind="http_4xx" if status < 500 else "http_5xx",
        )
    try:
        return json.loads(body)
    except ValueError as exc:
        raise not_a_model_list(url, path) from exc


def not_a_model_list(url: str, path: str) -> UpstreamError:
    return UpstreamError(
        f"model backend at {url} answered {path} with something that is not a model list",
        status_code=502,
        kind="stream",
    )


def _error_text(status: int, body: bytes) -> str:
    """The upstream's own error sentence: Ollama's `{"error": "..."}`, OpenAI's `{"error": {"message"}}`,
    FastAPI's `{"detail": ...}`; else the start of the body."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for key in ("error", "message", "detail"):
            if isinstance(parsed.get(key), str):
                return str(parsed[key])
    text = body.decode("utf-8", errors="replace").strip()
    return text[:_MAX_ERROR_TEXT] if text else f"HTTP {status} with an empty body"


async def read_whole_body(response: aiohttp.ClientResponse, url: str, timeout_s: float) -> bytes:
    """The whole body (a refusal, or an answer that is not a stream): read to its end, so the connection
    goes back to the pool, or closed."""
    try:
        return await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise transport_error(exc, url, timeout_s) from exc
    finally:
        response.release()


def error_for_status(code: int, body: bytes, *, url: str, key_hint: str) -> UpstreamError:
    """What an upstream's non-200 answer to a generation means for the wrapper's client.

    503 and 429 mean full: the shed path. 404 is an unknown model and 400 or 422 a parameter the upstream
    refused: the client's to fix, since the wrapper passes model and options through. 401 and 403 mean the
    upstream refused the wrapper's own key (`key_hint` says where it comes from): the lab's to fix, a 502.
    """
    message = _error_text(code, body)
    if code in (429, 503):
        return UpstreamError(
            f"model backend is busy: {message}", status_code=503, kind="busy", retry_after=True
        )
    if code == 404:
        return UpstreamError(message, status_code=404, kind="model_not_found")
    if code in (400, 422):
        return UpstreamError(
            f"model backend rejected the request: {message}", status_code=400, kind="bad_request"
        )
    if code in (401, 403):
        return UpstreamError(
            f"model backend at {url} refused the wrapper's credentials (HTTP {code}): {message}; {key_hint}",
            status_code=502,
            kind="http_4xx",
        )
    kind = "http_4xx" if code < 500 else "http_5xx"
    return UpstreamError(f"model backend answered HTTP {code}: {message}", status_code=502, kind=kind)


def _with_tag(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


async def missing_model_reason(
    upstream: Upstream, session: aiohttp.ClientSession, *, model: str, timeout_s: float
) -> str | None:
    """None when the upstream lists `model` in time; else why not (readiness).

    `x` and `x:latest` name the same model, as they do in Ollama.
    """
    try:
        models = await upstream.models(session, timeout_s=timeout_s)
    except UpstreamError as exc:
        return exc.message
    names = {m.id for m in models}
    wanted = _with_tag(model)
    if any(_with_tag(name) == wanted for name in names):
        return None
    listed = ", ".join(sorted(names)) or "none"
    return (
        f"model {model!r} is not on the model backend at {upstream.url} (it has: {listed}); "
        "pull it there or start the wrapper with --model NAME"
    )


def non_negative_int(value: Any) -> int | None:
    """`value` when it is a count (an int >= 0, not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def with_request_id(
    headers: dict[str, str], call: GenerationCall, *, uuid_only: bool = False
) -> dict[str, str]:
    """`headers` and the call's request id as X-Request-ID, so the upstream's log lines carry it too. With
    `uuid_only` (an OpenAI-compatible upstream) only an id shaped as a UUID: llama-cpp-python's server
    answers 400 to any other, so another id stays in the wrapper's log alone."""
    if call.request_id is None or (uuid_only and not _is_uuid(call.request_id)):
        return headers
    return {**headers, REQUEST_ID_HEADER: call.request_id}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def auth_headers(api_key: str | None, base: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """Request headers for the upstream: `base`, and the wrapper's key as a bearer token when it has one."""
    headers = dict(base)
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


async def read_to_end(content: aiohttp.StreamReader) -> None:
    """Read what follows the final chunk: normally nothing but the end of the chunked body. A response read
    to its end goes back to aiohttp's pool, so the next request reuses its connection instead of opening a
    new one (found by bench/: a connect per request was most of the wrapper's added latency). A backend
    that sends more, or is slow to end the body, loses the connection instead (the stream's close closes
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
