"""The bodies of the wrapper's OpenAI-compatible API: what /v1/chat/completions and /v1/completions accept
(the fields the wrapper acts on, strictly typed; any other field an OpenAI client sends is ignored), and
what it answers, for validation and for the OpenAPI document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from labkit.faults import JsonInt

__all__ = [
    "MAX_MESSAGES",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Completion",
    "CompletionChunk",
    "CompletionRequest",
    "ModelList",
    "ModelObject",
    "OpenAIErrorBody",
    "SamplingRequest",
    "StreamOptions",
    "TextPart",
]

MAX_MESSAGES = 256  # messages of one chat request; each content is bounded by the wrapper's prompt limit


class TextPart(BaseModel):
    """A text part of a message's content (the only kind the wrapper passes on)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(
        default=None, description="text, or text parts (joined by newlines); null is empty"
    )

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = Field(default=False, description="end the stream with a chunk that carries usage")


class SamplingRequest(BaseModel):
    """What both generation endpoints accept. Unknown fields are ignored, as OpenAI clients send many."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(min_length=1, pattern=r"\S", description="the model server's model")
    stream: bool = Field(default=False, description="answer as server-sent events ending in data: [DONE]")
    stream_options: StreamOptions | None = None
    max_tokens: JsonInt | None = Field(default=None, ge=1, description="most tokens to generate")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: JsonInt | None = None
    stop: str | list[str] | None = Field(default=None, description="stop sequences")
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: Literal[1] | None = Field(default=None, description="choices to generate: only 1")

    def sampling_options(self) -> dict[str, Any]:
        """The sampling parameters given, under the names Ollama's options and the OpenAI API share."""
        names = ("temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty")
        return {name: value for name in names if (value := getattr(self, name)) is not None}

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: JsonInt | None = Field(
        default=None, ge=1, description="most tokens to generate; wins over max_tokens"
    )


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] = Field(description="the text to continue (a list of one text at most)")

    def prompt_text(self) -> str | None:
        """The prompt, or None when a list holds more than one (the wrapper answers one at a time)."""
        if isinstance(self.prompt, str):
            return self.prompt
        return self.prompt[0] if len(self.prompt) == 1 else None


class OpenAIError(BaseModel):
    message: str = Field(description="what went wrong and what to do")
    type: str = Field(description="invalid_request_error (400), not_found_error (404), else api_error")
    param: str | None = Field(description="the request field at fault, if one is")
    code: str | None = Field(description="invalid_api_key, model_not_found, rate_limit_exceeded or null")


class OpenAIErrorBody(BaseModel):
    """Every error answer of /v1/, in OpenAI's shape."""

    error: OpenAIError


class Usage(BaseModel):
    prompt_tokens: int | None = Field(description="null when the model server did not count them")
    completion_tokens: int
    total_tokens: int | None


class _Message(BaseModel):
    role: Literal["assistant"]
    content: str


class _ChatChoice(BaseModel):
    index: int
    message: _Message
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[_ChatChoice]
    usage: Usage


class _Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class _ChunkChoice(BaseModel):
    index: int
    delta: _Delta
    finish_reason: Literal["stop", "length"] | None


class ChatCompletionChunk(BaseModel):
    """One server-sent event's data (`data: {...}`); the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[_ChunkChoice] = Field(description="empty in the usage chunk")
    usage: Usage | None = None


class _TextChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: Literal["stop", "length"] | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[_TextChoice]
    usage: Usage


class CompletionChunk(BaseModel):
    """One server-sent event's data (`data: {...}`); the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[_TextChoice] = Field(description="empty in the usage chunk")
    usage: Usage | None = None


class ModelObject(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]
