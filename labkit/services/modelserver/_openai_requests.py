"""The OpenAI-compatible request bodies (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`) as
pydantic models, validated strictly so that the OpenAPI document they generate says exactly what is accepted.

Fields OpenAI clients send that change nothing here (`user`, `metadata`, `store`, ...) are accepted and
ignored, as Ollama does; fields asking for what the engines cannot do (`n` > 1, tools, logprobs, JSON
output, `echo`, `suffix`) are refused with a 400 naming the field.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import models_json_schema

from labkit.services.modelserver._api_requests import BLANK
from labkit.services.modelserver._engine import ChatMessage, GenerationOptions

__all__ = [
    "REQUEST_MODELS",
    "ChatCompletionRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "OpenAIMessage",
    "StreamOptions",
    "request_schemas",
]

logger = logging.getLogger(__name__)

# Ollama's OpenAI layer samples with these when a request sets none (OpenAI's own defaults).
OPENAI_DEFAULT_TEMPERATURE = 1.0
OPENAI_DEFAULT_TOP_P = 1.0


def _stops(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError("must be a string or a list of strings")


def _text_content(value: object) -> str:
    """A message's content: a string, null (empty), or a list of text parts (joined by newlines)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, dict) and part.get("type") != "text":
                raise ValueError(
                    f"only text content parts are supported (type 'text'), got {part.get('type')!r}: "
                    "the served model reads text only"
                )
            if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                raise ValueError("a content part must be an object with a string `text`")
            texts.append(part["text"])
        return "\n".join(texts)
    raise ValueError("must be a string, null or a list of text parts")


def _integral(value: object) -> object:
    """JSON has one number type: 5.0 is the integer 5 (as JSON Schema says), 5.5 is no integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _model_name(value: str) -> str:
    if not value.strip(BLANK):
        raise ValueError("model is required")
    return value


def _embedding_input(value: object) -> object:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return value
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return value
        if all(isinstance(item, list) and all(type(token) is int for token in item) for item in value):
            return value
    raise ValueError(
        "must be a string, or a non-empty list of strings, of token ids or of lists of token ids"
    )


def _one_prompt(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    raise ValueError("must be a string (or a list of exactly one string); send one request per prompt")


_MODEL_SCHEMA = {
    "type": "string",
    "pattern": r"\S",
    "description": "the model to use",
    "example": "smollm2:135m",
}
_INPUT_SCHEMA = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "minItems": 1, "items": {"type": "string"}},
        {"type": "array", "minItems": 1, "items": {"type": "integer"}},
        {"type": "array", "minItems": 1, "items": {"type": "array", "items": {"type": "integer"}}},
    ],
}
_STOP_SCHEMA = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]
}
_TEXT_PART = {
    "type": "object",
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    "required": ["type", "text"],
}
_CONTENT_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "null"}, {"type": "array", "items": _TEXT_PART}]}
_PROMPT_SCHEMA = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1},
    ],
}

Integer = Annotated[int, BeforeValidator(_integral)]
# The bound before the validator, so that the schema says `minimum` (pydantic writes none for one after it).
PositiveInteger = Annotated[int, Field(ge=1), BeforeValidator(_integral)]
ModelName = Annotated[str, AfterValidator(_model_name), WithJsonSchema(_MODEL_SCHEMA)]
EmbeddingInput = Annotated[Any, BeforeValidator(_embedding_input), WithJsonSchema(_INPUT_SCHEMA)]
Stops = Annotated[tuple[str, ...], BeforeValidator(_stops), WithJsonSchema(_STOP_SCHEMA)]
Content = Annotated[str, BeforeValidator(_text_content), WithJsonSchema(_CONTENT_SCHEMA)]
Prompt = Annotated[str, BeforeValidator(_one_prompt), WithJsonSchema(_PROMPT_SCHEMA)]
# What the engines cannot do, refused by a validator; the schema says the one value (or null) accepted.
OnlyOne = Annotated[Integer | None, WithJsonSchema({"enum": [1, None]})]
OnlyFalse = Annotated[bool | None, WithJsonSchema({"enum": [False, None]})]
OnlyNull = Annotated[Any, WithJsonSchema({"type": "null"})]
NoTools = Annotated[list[Any] | None, WithJsonSchema({"type": ["array", "null"], "maxItems": 0})]
NoSuffix = Annotated[
    str | None, WithJsonSchema({"anyOf": [{"type": "string", "maxLength": 0}, {"type": "null"}]})
]


class _Body(BaseModel):
    """Strict (no "1" for 1, no 1 for true); unknown fields accepted and ignored. Bodies come from
    `parse_json_object`, which has already replaced lone surrogates, as Go's decoder in Ollama does."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class StreamOptions(_Body):
    include_usage: bool | None = Field(
        default=None, description="a last chunk with empty `choices` and the request's `usage`"
    )


class ResponseFormat(_Body):
    type: Annotated[str, WithJsonSchema({"const": "text"})] = Field(
        description="only `text`: the engines cannot constrain output to JSON"
    )

    @field_validator("type")
    @classmethod
    def _text_only(cls, value: str) -> str:
        if value != "text":
            raise ValueError(
                f"only 'text' is supported, got {value!r}: the engines cannot constrain output to JSON"
            )
        return value


class OpenAIMessage(_Body):
    role: str = Field(
        min_length=1, description="system, user, assistant, tool, ... (the chat template decides)"
    )
    content: Content = ""

    def as_chat_message(self) -> ChatMessage:
        return ChatMessage(role=self.role, content=self.content)


class _Sampling(_Body):
    """What chat and text completions share: the model, streaming and the sampling fields."""

    model: ModelName
    stream: bool | None = Field(default=False, description="server-sent events ending `data: [DONE]`")
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInteger | None = Field(
        default=None, description="most output tokens; none: until it stops"
    )
    temperature: float | None = Field(default=None, ge=0, le=2, description="default 1, as Ollama's /v1")
    top_p: float | None = Field(default=None, ge=0, le=1, description="default 1, as Ollama's /v1")
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: Integer | None = Field(default=None, description="the same seed and request give the same answer")
    stop: Stops = Field(
        default=(), description="a string or a list of strings; the answer ends before the first one it holds"
    )
    n: OnlyOne = Field(default=None, description="only 1: one choice per request")

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError(
                f"only n=1 is served (one choice per request), got {value}; send {value} requests"
            )
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options is not None and self.stream_options.include_usage)

    def token_limit(self) -> int | None:
        return self.max_tokens

    def options(self) -> GenerationOptions:
        return GenerationOptions(
            num_predict=self.token_limit(),
            temperature=OPENAI_DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
            top_p=OPENAI_DEFAULT_TOP_P if self.top_p is None else self.top_p,
            seed=self.seed,
            stop=self.stop,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
        )


class ChatCompletionRequest(_Sampling):
    """`POST /v1/chat/completions`."""

    messages: list[OpenAIMessage] = Field(min_length=1)
    max_completion_tokens: PositiveInteger | None = Field(
        default=None, description="most output tokens; wins over the older `max_tokens`"
    )
    tools: NoTools = Field(default=None, description="not supported: only null or an empty list")
    response_format: ResponseFormat | None = None
    logprobs: OnlyFalse = Field(default=None, description="not supported: only false or null")

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("tool calling is not supported by labkit's model server; send no tools")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError(
                "log probabilities are not returned by labkit's model server; leave logprobs out"
            )
        return value

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def chat_messages(self) -> tuple[ChatMessage, ...]:
        return tuple(message.as_chat_message() for message in self.messages)


class CompletionRequest(_Sampling):
    """`POST /v1/completions`: the prompt goes through the chat template, as Ollama's /v1/completions does."""

    prompt: Prompt
    echo: OnlyFalse = Field(default=None, description="not supported: only false or null")
    suffix: NoSuffix = Field(default=None, description="not supported: only empty or null")
    best_of: OnlyOne = Field(default=None, description="only 1")
    logprobs: OnlyNull = Field(default=None, description="not supported: only null")

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("echo is not supported by labkit's model server; leave it out")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix (fill in the middle) is not supported by labkit's model server")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_one(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError(f"only best_of=1 is served, got {value}")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "log probabilities are not returned by labkit's model server; leave logprobs out"
            )
        return value


class EmbeddingRequest(_Body):
    """`POST /v1/embeddings`: checked like the others, then refused (see `docs/openai.md`)."""

    model: ModelName
    input: EmbeddingInput = Field(description="text or token ids to embed")
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: PositiveInteger | None = None


REQUEST_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionRequest, CompletionRequest, EmbeddingRequest)


def request_schemas(ref_template: str) -> dict[str, Any]:
    """The JSON schemas of the request bodies and of the models they nest, by name, with `$ref`s written by
    `ref_template` (`#/components/schemas/{model}` for an OpenAPI document)."""
    _, schemas = models_json_schema(
        [(model, "validation") for model in REQUEST_MODELS], ref_template=ref_template
    )
    return dict(schemas.get("$defs", {}))
