"""What each API the load generator speaks needs on the wire (the names and paths are declared in
`labkit.measure.load_apis`): one request's body, and which model an OpenAI-compatible endpoint serves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from labkit.errors import ConfigError
from labkit.measure.load_apis import LoadApi, is_openai

__all__ = ["discover_model", "encode_body"]

_MODELS_PATH = "/models"
_DISCOVERY_TIMEOUT_S = 10.0


def encode_body(
    api: LoadApi,
    *,
    prompt: str | None = None,
    messages: Sequence[Mapping[str, Any]] | None = None,
    max_tokens: int | None,
    stream: bool,
    model: str | None,
    options: Mapping[str, Any] | None,
) -> bytes:
    """One request's JSON body for `api`, compact.

    `generate`: {prompt, stream, max_tokens, model, options}, `options` being the wrapper's (Ollama's)
    options object. The OpenAI APIs: {model, messages | prompt, max_tokens, stream, stream_options}, with
    `options` merged in as top-level fields (temperature, seed, stop, ...); a streamed request asks for the
    usage chunk (`stream_options.include_usage`). A chat request sends `messages`, or `prompt` as one user
    message; a text completion sends `prompt`.
    """
    body: dict[str, Any]
    if not is_openai(api):
        body = {"prompt": prompt, "stream": stream}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if model is not None:
            body["model"] = model
        if options is not None:
            body["options"] = dict(options)
        return json.dumps(body, separators=(",", ":")).encode()
    body = dict(options or {})
    body["model"] = model
    if api == "openai-chat":
        body["messages"] = (
            [dict(m) for m in messages] if messages is not None else [{"role": "user", "content": prompt}]
        )
    else:
        body["prompt"] = prompt
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


async def discover_model(client: httpx.AsyncClient, url: str) -> str:
    """The one model `GET {url}/models` lists (an OpenAI-compatible server's model list). A ConfigError when
    the list cannot be had, or holds no model or several: it says to pass the model by name."""
    where = f"{url}{_MODELS_PATH}"
    hint = "pass --model NAME (LoadSpec.model)"
    try:
        answer = await client.get(where, timeout=_DISCOVERY_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"could not ask GET {where} which model to request ({type(exc).__name__}: {exc}); start the "
            f"server, check --url (the OpenAI base URL, usually ending in /v1), or {hint}"
        ) from None
    if answer.status_code != 200:
        text = answer.text[:200].strip()
        raise ConfigError(
            f"GET {where} answered HTTP {answer.status_code}{': ' + text if text else ''}; check --url "
            f"(the OpenAI base URL, usually ending in /v1) and the API key, or {hint}"
        )
    try:
        listed = answer.json().get("data")
    except (ValueError, AttributeError):
        listed = None
    if not isinstance(listed, list):
        raise ConfigError(
            f'GET {where} did not answer an OpenAI model list ({{"data": [...]}}); check --url, or {hint}'
        )
    names = [m["id"] for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)]
    if not names:
        raise ConfigError(f"GET {where} lists no model; load one into the server, or {hint}")
    if len(names) > 1:
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise ConfigError(f"GET {where} lists {len(names)} models ({shown}); pass --model with one of them")
    return names[0]
