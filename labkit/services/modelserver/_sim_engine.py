"""The `sim` engine: no model, deterministic words and lognormal token timing.

Same seed and prompt give the same text; delays come from their own seeded stream per request.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labkit.services.modelserver._engine import ChatMessage, GenerationOptions, GenerationResult, TokenStream

__all__ = ["SIM_MAX_TOKENS", "SIM_MIN_TOKENS", "SimEngine", "render_sim_chat"]

logger = logging.getLogger(__name__)

# Length of an answer when the request sets no num_predict: drawn per (seed, prompt).
SIM_MIN_TOKENS = 16
SIM_MAX_TOKENS = 64

_VOCABULARY: tuple[str, ...] = (
    "the", "model", "server", "answers", "every", "request", "within", "its", "budget", "and",
    "latency", "stays", "below", "threshold", "while", "queue", "depth", "grows", "slowly", "under",
    "load", "a", "token", "stream", "flows", "to", "client", "which", "measures", "time",
    "first", "output", "error", "rate", "objective", "window", "burns", "fast", "alert", "pages",
    "engineer", "restarts", "process", "recovers", "steady", "state", "holds", "again", "after", "fault",
    "injection", "ends", "report", "shows", "good", "events", "over", "valid", "ones", "clearly",
    "capacity", "planning", "needs", "data",
)  # fmt: skip
_TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")


def render_sim_chat(messages: Sequence[ChatMessage]) -> str:
    """The text the sim engine 'sees' for a chat: one `role: content` line per message."""
    return "".join(f"{message.role}: {message.content}\n" for message in messages)


@dataclass(kw_only=True, eq=False, repr=False)
class SimEngine:
    """Simulated tokens for fast tests, capacity work and teaching; implements `Engine`.

    Text: words from a fixed vocabulary, drawn from `random.Random` seeded by (seed, prompt).
    Timing: the first token after a delay around `ttft_s`, each next one after a delay around
    `itl_s`, both lognormal with relative spread `jitter` and mean equal to the setting
    (0 jitter = exact). `temperature`, `top_p`, `top_k` and the penalties do not change the simulated text.
    """

    seed: int = 0
    ttft_s: float = 0.04
    itl_s: float = 0.009
    jitter: float = 0.1
    n_ctx: int = 2048
    _loaded: bool = field(init=False, default=False)
    _request_numbers: Iterator[int] = field(init=False, default_factory=itertools.count)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        self._loaded = True

    def unload(self) -> None:
        self._loaded = False

    def tokenize_count(self, text: str) -> int:
        """Words and punctuation marks: the sim's notion of a token."""
        return len(_TOKEN_PATTERN.findall(text))

    def model_info(self) -> Mapping[str, Any] | None:
        return None  # there is no model file to describe

    def template(self) -> str:
        return "{{ .Prompt }}"

    def generate(self, prompt: str, options: GenerationOptions, cancel: threading.Event) -> TokenStream:
        return self._stream(prompt, options, cancel)

    def chat(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, cancel: threading.Event
    ) -> TokenStream:
        return self._stream(render_sim_chat(messages), options, cancel)

    def _delays(self) -> Iterator[float]:
        with self._lock:
            number = next(self._request_numbers)
        rng = random.Random(f"{self.seed}\x1fdelays\x1f{number}")
        yield self._draw(rng, self.ttft_s)
        while True:
            yield self._draw(rng, self.itl_s)

    def _draw(self, rng: random.Random, mean: float) -> float:
        if mean <= 0:
            return 0.0
        if self.jitter <= 0:
            return mean
        sigma = self.jitter
        return rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)

    def _stream(self, prompt: str, options: GenerationOptions, cancel: threading.Event) -> TokenStream:
        seed = self.seed if options.seed is None else options.seed
        words = random.Random(f"{seed}\x1f{prompt}")
        natural_length = words.randint(SIM_MIN_TOKENS, SIM_MAX_TOKENS)
        limit = options.token_limit
        prompt_tokens = self.tokenize_count(prompt)
        if limit is not None:
            # Like the llama engine, stop where the context is full: a num_predict of 10**9 would
            # otherwise hold a slot for hours.
            limit = min(limit, max(0, self.n_ctx - prompt_tokens))
        length = natural_length if limit is None else limit
        stops = tuple(stop for stop in options.stop if stop)
        text, emitted, produced = "", 0, 0
        delays = self._delays()
        while produced < length:
            if cancel.wait(next(delays)):
                return GenerationResult(
                    prompt_tokens=prompt_tokens, output_tokens=produced, done_reason="cancelled"
                )
            word = words.choice(_VOCABULARY)
            text += word if produced == 0 else f" {word}"
            produced += 1
            cut = _first_stop(text, stops)
            if cut is not None:
                if cut > emitted:
                    yield text[emitted:cut]
                return GenerationResult(
                    prompt_tokens=prompt_tokens, output_tokens=produced, done_reason="stop"
                )
            safe = len(text) - _held_back(text, stops)
            if safe > emitted:
                yield text[emitted:safe]
                emitted = safe
        if len(text) > emitted:
            yield text[emitted:]
        return GenerationResult(
            prompt_tokens=prompt_tokens,
            output_tokens=produced,
            done_reason="stop" if limit is None else "length",
        )


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    positions = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    return min(positions) if positions else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters could still become a stop sequence (so are not sent yet)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
