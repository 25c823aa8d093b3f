"""OpenAI's shape of a generation's answer, as Ollama's /v1 writes it: `chat.completion` and `text_completion`
objects with `usage` and `finish_reason`, server-sent event chunks ending `data: [DONE]` (with
`stream_options.include_usage`, a last chunk whose `choices` is empty), and `{"error": {...}}` bodies.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

from labkit.services.modelserver._api_errors import ModelServerAPIError
from labkit.services.modelserver._engine import GenerationResult
from labkit.services.modelserver._generation import Generation
from labkit.services.modelserver._http_streaming import SSE_DONE, SSE_MEDIA_TYPE, sse_event

__all__ = ["SYSTEM_FINGERPRINT", "OpenAIErrorResponse", "OpenAIShape", "model_object", "openai_error"]

logger = logging.getLogger(__name__)

SYSTEM_FINGERPRINT = "fp_labkit"
# Who owns a model in /v1/models: Ollama names the namespace of the model's name, "library" for ours.
OWNED_BY = "library"


class OpenAIErrorResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error echoes what the client sent, which may hold a lone surrogate."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def openai_error(error: ModelServerAPIError) -> JSONResponse:
    return OpenAIErrorResponse(error.openai_body(), status_code=error.status_code)


def model_object(name: str, created: int) -> dict[str, Any]:
    """One entry of `GET /v1/models`, and what `GET /v1/models/{model}` answers."""
    return {"id": name, "object": "model", "created": created, "owned_by": OWNED_BY}


def _finish_reason(result: GenerationResult) -> str:
    return "length" if result.done_reason == "length" else "stop"


def _usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.output_tokens,
        "total_tokens": result.prompt_tokens + result.output_tokens,
    }


@dataclass(frozen=True)
class OpenAIShape:
    """`/v1/chat/completions` (`chat`) or `/v1/completions` answers; implements `ResponseShape`."""

    chat: bool
    include_usage: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])

    @property
    def stream_media_type(self) -> str:
        return SSE_MEDIA_TYPE

    def stream_piece(self, generation: Generation, text: str) -> bytes:
        return sse_event(self._chunk(generation, text, finish_reason=None))

    def stream_end(self, generation: Generation, result: GenerationResult) -> bytes:
        """The chunk with the finish_reason, the usage chunk if asked for, and `[DONE]`."""
        end = sse_event(self._chunk(generation, "", finish_reason=_finish_reason(result)))
        if self.include_usage:
            usage = self._base(generation, chunk=True)
            usage.update(choices=[], usage=_usage(result))
            end += sse_event(usage)
        return end + SSE_DONE

    def stream_error(self, generation: Generation, error: ModelServerAPIError) -> bytes:
        # No [DONE] after it: a client that waits for [DONE] never takes a failed answer for a whole one.
        return sse_event(error.openai_body())

    def answer(self, generation: Generation, text: str, result: GenerationResult) -> dict[str, Any]:
        body = self._base(generation, chunk=False)
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice.update(finish_reason=_finish_reason(result), logprobs=None)
        body.update(choices=[choice], usage=_usage(result))
        return body

    def error(self, error: ModelServerAPIError) -> JSONResponse:
        return openai_error(error)

    def _base(self, generation: Generation, *, chunk: bool) -> dict[str, Any]:
        if self.chat:
            object_name = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            object_name = "text_completion"
        return {
            "id": ("chatcmpl-" if self.chat else "cmpl-") + self.id,
            "object": object_name,
            "created": int(generation.wall_time),
            "model": generation.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    def _chunk(self, generation: Generation, text: str, *, finish_reason: str | None) -> dict[str, Any]:
        body = self._base(generation, chunk=True)
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["delta"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice.update(finish_reason=finish_reason, logprobs=None)
        body["choices"] = [choice]
        if self.include_usage:
            body["usage"] = None  # as OpenAI: every chunk but the last carries a null usage
        return body
