"""The `Engine` protocol every model engine implements, and the values that cross it.

Engines are blocking and run in worker threads; a `threading.Event` cancels a generation between tokens.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ChatMessage",
    "DoneReason",
    "Engine",
    "GenerationOptions",
    "GenerationResult",
    "TokenStream",
]

logger = logging.getLogger(__name__)

DoneReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """One message of a chat; `role` is "system", "user", "assistant" or "tool"."""

    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, kw_only=True)
class GenerationOptions:
    """The sampling options of one request (Ollama's `options`, or an OpenAI request's fields). None means the
    engine's default.

    `num_predict` None (or negative, as Ollama allows) means "until the model stops".
    """

    num_predict: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    frequency_penalty: float | None = None
    presence_penalty: float | None = None

    @property
    def token_limit(self) -> int | None:
        """The output-token cap, or None when there is none."""
        if self.num_predict is None or self.num_predict < 0:
            return None
        return self.num_predict


@dataclass(frozen=True, kw_only=True)
class GenerationResult:
    """What a finished generation reports: real token counts and why it ended."""

    prompt_tokens: int
    output_tokens: int
    done_reason: DoneReason


# A blocking generator of text pieces (one per token, or a few when bytes of one character
# span tokens) whose return value is the GenerationResult.
TokenStream = Generator[str, None, GenerationResult]


@runtime_checkable
class Engine(Protocol):
    """A model engine. Every method blocks; the server calls them from worker threads.

    `generate` and `chat` may be called concurrently up to the server's num_parallel, and only
    while the engine is loaded. A set `cancel` event makes the stream stop before its next token
    and return a result with done_reason "cancelled".
    """

    @property
    def loaded(self) -> bool: ...

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def tokenize_count(self, text: str) -> int: ...

    def generate(self, prompt: str, options: GenerationOptions, cancel: threading.Event) -> TokenStream: ...

    def chat(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, cancel: threading.Event
    ) -> TokenStream: ...

    def model_info(self) -> Mapping[str, Any] | None: ...

    def template(self) -> str: ...
