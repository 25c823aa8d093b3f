"""Parses Ollama API request bodies (`/api/generate`, `/api/chat`, `/api/show`, ...) into typed values.

Every problem becomes a `BadRequestError` whose message names the field, as Ollama answers 400.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labkit.services.modelserver._api_errors import BadRequestError
from labkit.services.modelserver._engine import ChatMessage, GenerationOptions
from labkit.services.modelserver._settings import parse_keep_alive

__all__ = [
    "BLANK",
    "ChatRequest",
    "GenerateRequest",
    "KeepAlive",
    "parse_chat_request",
    "parse_generate_request",
    "parse_json_object",
    "parse_model_name",
    "parse_options",
    "parse_stream_flag",
    "replace_lone_surrogates",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeepAlive:
    """A request's keep_alive: seconds the model stays loaded after it; None means forever."""

    seconds: float | None


@dataclass(frozen=True, kw_only=True)
class GenerateRequest:
    model: str
    prompt: str
    system: str | None
    raw: bool
    stream: bool
    keep_alive: KeepAlive | None
    options: GenerationOptions


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    stream: bool
    keep_alive: KeepAlive | None
    options: GenerationOptions


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    if not body.strip():
        raise BadRequestError("missing request body")
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"invalid JSON body: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequestError(f"invalid JSON body: expected an object, got {type(value).__name__}")
    if b"\\ud" in body.lower():  # the only way a lone surrogate gets in: an escape like \ud800
        value = replace_lone_surrogates(value)
    return value


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_lone_surrogates(value: Any) -> Any:
    """`value` with every lone surrogate (valid JSON, not encodable as UTF-8) replaced by U+FFFD, as
    Go's JSON decoder does in Ollama; left in, it fails the answer that echoes it (a 500)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {replace_lone_surrogates(k): replace_lone_surrogates(v) for k, v in value.items()}
    return value


# What a blank model name is made of: the whitespace JSON Schema's `\s` means too (our OpenAPI document asks
# for a `\S`), not all of Python's str.isspace(), which counts the control characters \x1c-\x1f as well.
# A name of those is a name like any other, answered 404 when no model has it.
BLANK = " \t\n\r\f\v"


def parse_model_name(body: Mapping[str, Any]) -> str:
    """The `model` field (older clients send `name`); 400 `model is required` when it is absent or blank."""
    model = body.get("model")
    if model is None or model == "":
        model = body.get("name")
    if model is None or (isinstance(model, str) and not model.strip(BLANK)):
        raise BadRequestError("model is required")
    if not isinstance(model, str):
        raise BadRequestError(f'"model" must be a string, got {_json_type(model)}')
    return model


def parse_generate_request(body: Mapping[str, Any]) -> GenerateRequest:
    return GenerateRequest(
        model=parse_model_name(body),
        prompt=_optional(body, "prompt", str) or "",
        system=_optional(body, "system", str),
        raw=bool(_optional(body, "raw", bool)),
        stream=parse_stream_flag(body),
        keep_alive=_keep_alive(body),
        options=parse_options(body.get("options")),
    )


def parse_chat_request(body: Mapping[str, Any]) -> ChatRequest:
    # "tools", "format" and "think" are accepted and ignored: the official client always sends tools.
    _optional(body, "tools", list)
    raw_messages = _optional(body, "messages", list) or []
    messages = []
    for index, item in enumerate(raw_messages):
        if not isinstance(item, dict):
            raise BadRequestError(f"messages[{index}] must be an object, got {_json_type(item)}")
        role = item.get("role")
        if not isinstance(role, str) or not role:
            raise BadRequestError(f'messages[{index}] needs a "role" string')
        content = item.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise BadRequestError(f'messages[{index}]."content" must be a string, got {_json_type(content)}')
        messages.append(ChatMessage(role=role, content=content))
    return ChatRequest(
        model=parse_model_name(body),
        messages=tuple(messages),
        stream=parse_stream_flag(body),
        keep_alive=_keep_alive(body),
        options=parse_options(body.get("options")),
    )


def parse_options(options: object) -> GenerationOptions:
    """Ollama's `options` object; the sampling options engines honour are checked, others ignored."""
    if options is None:
        return GenerationOptions()
    if not isinstance(options, dict):
        raise BadRequestError(f'"options" must be an object, got {_json_type(options)}')
    stop = options.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        stops = tuple(stop)
    else:
        raise BadRequestError('option "stop" must be a string or a list of strings')
    return GenerationOptions(
        num_predict=_int_option(options, "num_predict"),
        temperature=_float_option(options, "temperature"),
        top_p=_float_option(options, "top_p"),
        top_k=_int_option(options, "top_k"),
        seed=_int_option(options, "seed"),
        stop=stops,
        frequency_penalty=_float_option(options, "frequency_penalty"),
        presence_penalty=_float_option(options, "presence_penalty"),
    )


def _int_option(options: Mapping[str, Any], name: str) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequestError(f'option "{name}" must be an integer, got {json.dumps(value)}')
    if isinstance(value, float) and not value.is_integer():
        raise BadRequestError(f'option "{name}" must be an integer, got {json.dumps(value)}')
    return int(value)


def _float_option(options: Mapping[str, Any], name: str) -> float | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequestError(f'option "{name}" must be a number, got {json.dumps(value)}')
    return float(value)


def _optional(body: Mapping[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise BadRequestError(f'"{name}" must be {_JSON_NAMES[kind]}, got {_json_type(value)}')
    return value


def parse_stream_flag(body: Mapping[str, Any]) -> bool:
    """The `stream` field: true when absent or null; 400 when it is not a boolean."""
    stream = _optional(body, "stream", bool)
    return True if stream is None else stream


def _keep_alive(body: Mapping[str, Any]) -> KeepAlive | None:
    value = body.get("keep_alive")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRequestError(f'"keep_alive" must be a duration string or seconds, got {_json_type(value)}')
    try:
        return KeepAlive(parse_keep_alive(value))
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None


_JSON_NAMES: dict[type, str] = {str: "a string", bool: "a boolean", list: "an array", dict: "an object"}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
