"""What the wrapper's OpenAPI document says about its answers: bodies, error statuses, NDJSON and SSE streams.

Every status a route really answers is listed here, so that schemathesis can hold the wrapper to it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from labkit.faults import WrapperFaultRequest
from labkit.services.wrapper._openai_schema import MAX_MESSAGES, OpenAIErrorBody
from labkit.services.wrapper._settings import WrapperSettings

__all__ = [
    "ERROR_STATUS_TEXT",
    "EndedFaults",
    "ErrorBody",
    "FaultList",
    "FaultView",
    "GenerateAnswer",
    "HealthAnswer",
    "InjectedFault",
    "ReadyAnswer",
    "ValidationErrorBody",
    "document_settings_limits",
    "error_responses",
    "fault_spec_request_body",
    "generate_ok_response",
    "metrics_ok_response",
    "openai_error_responses",
    "sse_ok_response",
]

ERROR_STATUS_TEXT: dict[int, str] = {
    400: "Bad request",
    401: "Missing or wrong credentials",
    403: "Forbidden",
    404: "Not found",
    422: "The request body is invalid; `detail` names each field",
    429: "Too many requests in flight, here or at the model backend; retry after Retry-After seconds",
    500: "Internal error (or an injected `error` fault)",
    502: "The model backend is unreachable or failed (or an injected fault)",
    503: "Overloaded or not ready; retry later",
    504: "The model backend sent nothing in time (or an injected fault)",
}


class ErrorBody(BaseModel):
    """Every error answer: one human-readable sentence."""

    error: str = Field(description="what went wrong and what to do")


class ValidationProblem(BaseModel):
    loc: list[str | int] = Field(description="where: `body`, then the field path")
    msg: str
    type: str


class ValidationErrorBody(ErrorBody):
    """A 422: the sentence, and one entry per invalid field."""

    detail: list[ValidationProblem]


class GenerateAnswer(BaseModel):
    """The answer of a non-streamed POST /generate (the streamed one's last line carries the same fields)."""

    model: str
    response: str = Field(description="the generated text")
    done_reason: str | None = Field(description="the backend's reason to stop: stop, length, ...")
    prompt_tokens: int | None = Field(ge=0, description="null when the model backend did not count them")
    output_tokens: int = Field(ge=0)
    time_to_first_token_seconds: float | None = Field(description="None when no token came")
    duration_seconds: float = Field(ge=0)


class _TokenLine(BaseModel):
    model_config = ConfigDict(title="TokenLine")

    response: str
    done: bool = Field(description="false on every token line")


class _FinalLine(BaseModel):
    model_config = ConfigDict(title="FinalLine")

    done: bool = Field(description="true on the last line")
    model: str
    done_reason: str | None
    prompt_tokens: int | None
    output_tokens: int
    time_to_first_token_seconds: float | None
    duration_seconds: float


class _ErrorLine(BaseModel):
    model_config = ConfigDict(title="ErrorLine")

    error: str = Field(description="the backend failed mid-stream; the status was already 200")
    done: bool


class HealthAnswer(BaseModel):
    status: str


class ReadyAnswer(BaseModel):
    status: str
    model: str
    backend_url: str


class FaultView(BaseModel):
    id: str
    kind: str
    params: dict[str, Any]
    duration_s: float
    started_at: float = Field(description="Unix time")
    expires_at: float = Field(description="Unix time")
    remaining_s: float


class InjectedFault(FaultView):
    replaced: str | None = Field(description="the id of the fault of the same kind this one replaced")


class FaultList(BaseModel):
    faults: list[FaultView]


class EndedFaults(BaseModel):
    ended: int = Field(ge=0)
    ids: list[str]


def error_responses(*codes: int, retry_after: bool = False) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` entries for `codes`: the JSON error body (422: with `detail`).

    `retry_after` documents the Retry-After header on 503 (sent when the wrapper or its backend is full,
    not when an injected fault answers 503, hence not required); 401 documents WWW-Authenticate.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "model": ValidationErrorBody if code == 422 else ErrorBody,
            "description": ERROR_STATUS_TEXT[code],
        }
        if code == 503 and retry_after:
            entry["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before retrying, when the wrapper or its backend is full",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            }
        if code == 401:
            entry["headers"] = {
                "WWW-Authenticate": {"required": True, "schema": {"type": "string", "enum": ["Bearer"]}}
            }
        responses[code] = entry
    return responses


def openai_error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` entries for the /v1/ routes: OpenAI's error body; 429 with Retry-After, 401
    with WWW-Authenticate."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": OpenAIErrorBody, "description": ERROR_STATUS_TEXT[code]}
        if code == 429:
            entry["headers"] = {
                "Retry-After": {
                    "required": True,
                    "description": "seconds to wait before retrying",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            }
        if code == 401:
            entry["headers"] = {
                "WWW-Authenticate": {"required": True, "schema": {"type": "string", "enum": ["Bearer"]}}
            }
        responses[code] = entry
    return responses


def sse_ok_response(answer: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """The 200 of a /v1/ generation: `answer` as JSON, or server-sent events with `"stream": true`."""
    return {
        200: {
            "model": answer,
            "description": f"{description}; with stream, server-sent events (data: <chunk JSON>, a blank "
            "line between events) ending in data: [DONE]",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    }


def _ndjson_line_schema() -> dict[str, Any]:
    lines = (_TokenLine, _FinalLine, _ErrorLine)
    return {
        "description": "one JSON object per line, never a blank line",
        "anyOf": [line.model_json_schema() for line in lines],
    }


def generate_ok_response() -> dict[int | str, dict[str, Any]]:
    """POST /generate's 200: one JSON object, or NDJSON lines with `"stream": true`."""
    return {
        200: {
            "model": GenerateAnswer,
            "description": "the completion; NDJSON (one object per token, then the summary) when streamed",
            "content": {"application/x-ndjson": {"schema": _ndjson_line_schema()}},
        }
    }


def metrics_ok_response() -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": "Prometheus text exposition",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with every `#/$defs/X` reference replaced by its definition (the schema must not recurse)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        # The discriminator's mapping points into $defs; each variant's `kind` const says the same.
        return {k: _inline_refs(v, defs) for k, v in node.items() if k not in ("$defs", "discriminator")}
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    return node


def fault_spec_request_body() -> dict[str, Any]:
    """`openapi_extra` for POST /admin/faults, whose body the route parses itself (after the token check)."""
    schema = TypeAdapter(WrapperFaultRequest).json_schema()
    inlined = _inline_refs(schema, schema.get("$defs", {}))
    for variant in inlined["oneOf"]:
        # `kind` has a default in Python, but the discriminated union needs it in every body.
        variant["required"] = sorted({*variant.get("required", []), "kind"})
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inlined}}}}


def _options_schema(max_tokens: int) -> dict[str, Any]:
    """Ollama's options as the wrapper passes them through: the common ones typed, any other allowed."""
    number = {"type": "number"}
    return {
        "type": "object",
        "description": "passed through to Ollama's options; the backend answers 400 to a value it refuses",
        "properties": {
            "num_predict": {"type": "integer", "minimum": 1, "maximum": max_tokens},
            "temperature": number,
            "top_p": number,
            "top_k": {"type": "integer"},
            "seed": {"type": "integer"},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        },
        "additionalProperties": True,
    }


def _document_openai_limits(schemas: dict[str, Any], settings: WrapperSettings) -> None:
    """The settings' limits in the /v1/ request schemas: max_tokens, each text's length."""
    limit = settings.max_tokens_limit
    bounded = [{"type": "integer", "minimum": 1, "maximum": limit}, {"type": "null"}]
    text = {"type": "string", "maxLength": settings.max_prompt_chars}
    for name, fields in (
        ("ChatCompletionRequest", ("max_tokens", "max_completion_tokens")),
        ("CompletionRequest", ("max_tokens",)),
    ):
        props = schemas[name]["properties"]
        for field in fields:
            props[field]["anyOf"] = bounded
    completion = schemas["CompletionRequest"]["properties"]["prompt"]
    completion["anyOf"] = [text, {"type": "array", "items": text, "minItems": 1, "maxItems": 1}]
    message = schemas["ChatMessage"]["properties"]["content"]
    message["anyOf"] = [
        text,
        {"type": "array", "items": {"$ref": "#/components/schemas/TextPart"}},
        {"type": "null"},
    ]
    schemas["TextPart"]["properties"]["text"]["maxLength"] = settings.max_prompt_chars
    schemas["ChatCompletionRequest"]["properties"]["messages"]["maxItems"] = MAX_MESSAGES


def document_settings_limits(app: FastAPI, settings: WrapperSettings) -> None:
    """Put the limits that come from settings (prompt length, max_tokens) into the app's request schemas,
    so the document says exactly what this wrapper accepts; the /v1/ routes answer a bad body 400 in
    OpenAI's shape, not FastAPI's 422."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema["components"]["schemas"]
        props = schemas["GenerateRequest"]["properties"]
        props["prompt"]["maxLength"] = settings.max_prompt_chars
        limit = settings.max_tokens_limit
        props["max_tokens"]["anyOf"] = [{"type": "integer", "minimum": 1, "maximum": limit}, {"type": "null"}]
        props["options"]["anyOf"] = [_options_schema(limit), {"type": "null"}]
        _document_openai_limits(schemas, settings)
        for path, operations in schema["paths"].items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    operation["responses"].pop("422", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
