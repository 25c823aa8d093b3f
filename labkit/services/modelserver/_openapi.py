"""The model server's OpenAPI document: the Ollama request bodies its routes parse themselves, the OpenAI
answers of the /v1 routes (their request bodies are pydantic models), and every status they answer (Ollama's
`{"error": ...}` body, OpenAI's `{"error": {...}}`), so that schemathesis can hold the server to it."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CHAT_CHUNK",
    "CHAT_COMPLETION",
    "CHAT_REQUEST",
    "GENERATE_REQUEST",
    "MODEL_LIST",
    "MODEL_OBJECT",
    "MODEL_REQUEST",
    "OPENAI_ERROR_BODY",
    "PULL_REQUEST",
    "TEXT_CHUNK",
    "TEXT_COMPLETION",
    "complete_document",
    "error_responses",
    "generation_ok_response",
    "json_ok_response",
    "openai_error_responses",
    "openai_generation_ok_response",
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
        "frequency_penalty": _NUMBER,
        "presence_penalty": _NUMBER,
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


# --- the OpenAI-compatible routes (/v1) ---------------------------------------------------------------------

_OPENAI_STATUS_TEXT = {
    400: "invalid_request_error: the body is not what the API accepts (`param` names the field), "
    "or it asks for what the engine cannot do",
    404: 'not_found_error: unknown model (`model "x" not found, try pulling it first`)',
    500: "api_error: the engine failed (model load or generation)",
    503: "api_error: server busy, please try again.  maximum pending requests exceeded",
}
OPENAI_ERROR_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"enum": ["invalid_request_error", "not_found_error", "api_error"]},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
    "required": ["error"],
}
MODEL_OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
    "required": ["id", "object", "created", "owned_by"],
}
MODEL_LIST: dict[str, Any] = {
    "type": "object",
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": MODEL_OBJECT}},
    "required": ["object", "data"],
}
_USAGE = {
    "type": "object",
    "properties": {
        "prompt_tokens": {"type": "integer", "minimum": 0},
        "completion_tokens": {"type": "integer", "minimum": 0},
        "total_tokens": {"type": "integer", "minimum": 0},
    },
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
}
_FINISH_REASON = {"enum": ["stop", "length"]}
CHAT_COMPLETION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "object": {"const": "chat.completion"},
        "choices": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "message": {
                        "type": "object",
                        "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
                        "required": ["role", "content"],
                    },
                    "finish_reason": _FINISH_REASON,
                },
                "required": ["index", "message", "finish_reason"],
            },
        },
        "usage": _USAGE,
    },
    "required": ["id", "object", "created", "model", "choices", "usage"],
}
TEXT_COMPLETION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "object": {"const": "text_completion"},
        "choices": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "finish_reason": _FINISH_REASON},
                "required": ["index", "text", "finish_reason"],
            },
        },
        "usage": _USAGE,
    },
    "required": ["id", "object", "created", "model", "choices", "usage"],
}
_NULLABLE_USAGE = {"anyOf": [_USAGE, {"type": "null"}]}
CHAT_CHUNK: dict[str, Any] = {
    "type": "object",
    "properties": {
        "object": {"const": "chat.completion.chunk"},
        "choices": {
            "type": "array",
            "maxItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "delta": {"type": "object", "properties": {"content": {"type": "string"}}},
                    "finish_reason": {"anyOf": [_FINISH_REASON, {"type": "null"}]},
                },
                "required": ["index", "delta", "finish_reason"],
            },
        },
        "usage": _NULLABLE_USAGE,
    },
    "required": ["id", "object", "created", "model", "choices"],
}
TEXT_CHUNK: dict[str, Any] = {
    "type": "object",
    "properties": {
        "object": {"const": "text_completion"},
        "choices": {
            "type": "array",
            "maxItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "finish_reason": {"anyOf": [_FINISH_REASON, {"type": "null"}]},
                },
                "required": ["index", "text", "finish_reason"],
            },
        },
        "usage": _NULLABLE_USAGE,
    },
    "required": ["id", "object", "created", "model", "choices"],
}


def _sse_event(chunk: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event (OpenAPI 3.1: the schema of a text/event-stream describes each event): a JSON
    chunk, the error that ends a failed stream, or the `[DONE]` that ends a whole one."""
    return {
        "type": "object",
        "description": "`data: {chunk}` events, each ended by a blank line; the last chunk carries "
        "`finish_reason`; with `stream_options.include_usage` one more chunk with empty `choices` and "
        '`usage`; then `data: [DONE]`. A generation that fails mid-stream ends with `data: {"error": {...}}` '
        "and no `[DONE]`.",
        "properties": {
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"anyOf": [chunk, OPENAI_ERROR_BODY]},
                    },
                ]
            }
        },
        "required": ["data"],
    }


def openai_error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "description": _OPENAI_STATUS_TEXT[code],
            "content": {"application/json": {"schema": OPENAI_ERROR_BODY}},
        }
        for code in codes
    }


def openai_generation_ok_response(
    answer: dict[str, Any], chunk: dict[str, Any], description: str
) -> dict[int | str, dict[str, Any]]:
    """A 200 that is one JSON object (`answer`) by default and server-sent events of `chunk`s with
    `"stream": true`."""
    return {
        200: {
            "description": description,
            "content": {
                "application/json": {"schema": answer},
                "text/event-stream": {"schema": _sse_event(chunk)},
            },
        }
    }


def complete_document(document: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document with the request bodies' `schemas` among its components (the routes that parse
    their own body refer to them), and without the 422 FastAPI adds to a route with path parameters: the
    server never answers 422 (a bad body is a 400)."""
    document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    components = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return document
