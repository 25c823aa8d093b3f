"""The model server's OpenAPI document: the Ollama request bodies its routes parse themselves, and every
status they answer (Ollama's `{"error": ...}` body), so that schemathesis can hold the server to it."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CHAT_REQUEST",
    "GENERATE_REQUEST",
    "MODEL_REQUEST",
    "PULL_REQUEST",
    "error_responses",
    "generation_ok_response",
    "json_ok_response",
    "request_body",
    "text_ok_response",
]

_STATUS_TEXT = {
    400: "The body is not what the Ollama API accepts (missing model, wrong type)",
    404: 'Unknown model: `model "x" not found, try pulling it first`',
    500: "The engine failed (model load or generation)",
    503: "server busy, please try again.  maximum pending requests exceeded",
}
ERROR_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` that also allows null: the server, like Ollama's Go decoding, takes null as absent."""
    return {"anyOf": [schema, {"type": "null"}]}


# The served model's name is a string like any other; a different one is answered 404.
_MODEL = {"type": "string", "pattern": r"\S", "description": "the model to use", "example": "smollm2:135m"}
# parse_keep_alive: seconds, or a Go duration ("5m", "1h30m", "-1s"), or a numeric string; negative = forever.
_KEEP_ALIVE = {
    "anyOf": [
        {"type": "null"},
        {"type": "number"},
        {"type": "string", "pattern": r"^\s*[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+\s*$"},
        {"type": "string", "pattern": r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*$"},
    ],
    "description": "how long the model stays loaded after this request; negative: forever, 0: unload",
}
_INTEGER = _or_null({"type": "integer"})
_NUMBER = _or_null({"type": "number"})
_BOOLEAN = _or_null({"type": "boolean"})
_STRING = _or_null({"type": "string"})
_OPTIONS = {
    "type": ["object", "null"],
    "description": "sampling options; these are checked, any other is accepted and ignored",
    "properties": {
        "num_predict": {**_INTEGER, "description": "most tokens; negative: until the model stops"},
        "temperature": _NUMBER,
        "top_p": _NUMBER,
        "top_k": _INTEGER,
        "seed": _INTEGER,
        "stop": {"type": ["string", "array", "null"], "items": {"type": "string"}},
    },
    "additionalProperties": True,
}
_COMMON = {
    "model": _MODEL,
    "stream": {**_BOOLEAN, "default": True, "description": "NDJSON lines (default) or one object"},
    "keep_alive": _KEEP_ALIVE,
    "options": _OPTIONS,
}

MODEL_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {"model": _MODEL},
    "required": ["model"],
    "additionalProperties": True,
}
PULL_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {"model": _MODEL, "stream": _COMMON["stream"]},
    "required": ["model"],
    "additionalProperties": True,
}
GENERATE_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_COMMON,
        "prompt": {**_STRING, "description": "empty: only load (or, with keep_alive 0, unload)"},
        "system": _STRING,
        "raw": _BOOLEAN,
    },
    "required": ["model"],
    # Ollama's other fields (format, images, context, template, suffix, think) are accepted and ignored.
    "additionalProperties": True,
}
CHAT_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_COMMON,
        "messages": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "properties": {
                    "role": {"type": "string", "minLength": 1},
                    "content": {"type": ["string", "null"]},
                },
                "required": ["role"],
                "additionalProperties": True,
            },
        },
        "tools": {"type": ["array", "null"], "description": "ignored (the official client sends it)"},
    },
    "required": ["model"],
    "additionalProperties": True,
}

_GENERATION_LINE = {
    "type": "object",
    "description": "a chunk (`done` false), the final chunk (`done` true, with durations in nanoseconds), "
    'or an `{"error": ...}` line when the generation fails mid-stream',
}


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON body that the route parses itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"description": _STATUS_TEXT[code], "content": {"application/json": {"schema": ERROR_BODY}}}
        for code in codes
    }


def json_ok_response(schema: dict[str, Any], description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}}


def text_ok_response(description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}}


def generation_ok_response(final: dict[str, Any], description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 that is NDJSON lines by default and one JSON object (`final`) with `"stream": false`."""
    return {
        200: {
            "description": description,
            "content": {
                "application/json": {"schema": final},
                "application/x-ndjson": {"schema": _GENERATION_LINE},
            },
        }
    }
