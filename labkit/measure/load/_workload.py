"""What each request of a load run asks for: token-count distributions (`TokenDistribution`, seeded draws),
synthetic prompts of a given token length, and prompts files (JSON Lines, checked line by line).

The same spec gives the same workload: every draw comes from a generator seeded by the spec's seed, one per
quantity, so changing the output lengths does not change the prompts.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labkit.errors import ConfigError
from labkit.measure.load._api import encode_body
from labkit.measure.load._words import ONE_TOKEN_WORDS
from labkit.measure.load_apis import LoadApi
from labkit.validation import describe_validation_error

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "MAX_WORK_TOKENS",
    "PromptEntry",
    "RequestOverride",
    "TokenDistribution",
    "Workload",
    "read_prompts_file",
    "synthetic_prompt",
]

# The most tokens one prompt or answer may be asked for: above any served context window of today, and it
# bounds what one synthetic prompt costs to build (about 6 bytes a token).
MAX_WORK_TOKENS = 1_048_576

_DISTRIBUTION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(?::\s*([0-9]*\.?[0-9]+)\s*)?$")
_FILE_FORMAT = (
    'each line is one JSON object: {"prompt": "text"} or {"messages": [{"role": "user", "content": '
    '"text"}]}, with an optional "max_tokens": N'
)


class TokenDistribution(BaseModel):
    """A token count per request, normal with `mean` and `stddev`; each draw is rounded and clipped to
    [1, MAX_WORK_TOKENS] (so a stddev large beside the mean raises the mean of the draws). `stddev` 0 is a
    fixed count. Written `MEAN[:STDDEV]` on the command line (`128`, `128:32`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mean: float = Field(ge=1, le=MAX_WORK_TOKENS, description="tokens, on average")
    stddev: float = Field(default=0.0, ge=0, le=MAX_WORK_TOKENS, description="standard deviation, tokens")

    @model_validator(mode="before")
    @classmethod
    def _from_text_or_count(cls, value: Any) -> Any:
        """Also `MEAN[:STDDEV]` text and a plain number (a fixed count), so that every field of this type
        (a LoadSpec, an experiment file) takes what the command line takes."""
        if isinstance(value, str):
            match = _DISTRIBUTION.match(value)
            if match is None:
                raise ValueError(f"{value!r} is not MEAN[:STDDEV] (tokens, e.g. 128 or 128:32)")
            mean, stddev = match.groups()
            return {"mean": float(mean), "stddev": float(stddev or 0)}
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"mean": value}
        return value

    @classmethod
    def parse(cls, text: str) -> TokenDistribution:
        """`MEAN[:STDDEV]` as a distribution; a ValueError saying what is wrong when `text` is not one."""
        try:
            return cls.model_validate(text)
        except ValidationError as exc:
            raise ValueError(f"{text!r}: {describe_validation_error(exc)}") from None

    def draw(self, rng: random.Random) -> int:
        """One count: round(normal(mean, stddev)) clipped to [1, MAX_WORK_TOKENS]."""
        value = rng.gauss(self.mean, self.stddev) if self.stddev else self.mean
        return min(MAX_WORK_TOKENS, max(1, round(value)))

    def __str__(self) -> str:
        return f"{self.mean:g}:{self.stddev:g}" if self.stddev else f"{self.mean:g}"


def as_distribution(value: Any) -> Any:
    """A field's input as a TokenDistribution: text `MEAN[:STDDEV]`, a number (a fixed count), a mapping of
    mean and stddev. A ValueError says what is wrong; None and a TokenDistribution pass through."""
    if value is None or isinstance(value, TokenDistribution):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float | Mapping):
        raise ValueError(f"{value!r} is not a token count: give MEAN[:STDDEV] (e.g. 128 or 128:32)")
    try:
        return TokenDistribution.model_validate(value)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None


def as_max_tokens(value: Any) -> Any:
    """max_tokens' input: a whole number is a fixed count (also as text, `32`), `MEAN:STDDEV` (or a mapping)
    a distribution; a distribution without spread and with a whole mean is its count."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_WORK_TOKENS:
            raise ValueError(f"{value} tokens is outside [1, {MAX_WORK_TOKENS}]")
        return value
    parsed = as_distribution(value)
    fixed = isinstance(parsed, TokenDistribution) and parsed.stddev == 0
    if fixed and parsed.mean == math.floor(parsed.mean):
        return int(parsed.mean)
    return parsed


def synthetic_prompt(rng: random.Random, tokens: int) -> str:
    """`tokens` words drawn from ONE_TOKEN_WORDS, space-separated: a prompt of exactly `tokens` tokens in
    SmolLM2's tokenizer (each word is one token, with or without its leading space; a test checks this with
    the real tokenizer). Other tokenizers count close to it for such common English words."""
    return " ".join(rng.choices(ONE_TOKEN_WORDS, k=tokens))


class ChatMessage(BaseModel):
    """One message of a chat request; other OpenAI message fields (name, ...) pass through unchecked."""

    model_config = ConfigDict(extra="allow", frozen=True)

    role: str = Field(min_length=1)
    content: str | list[dict[str, Any]]


class PromptEntry(BaseModel):
    """One line of a prompts file: `prompt` (a text) or `messages` (a chat), and optionally `max_tokens`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = Field(default=None, min_length=1)
    messages: tuple[ChatMessage, ...] | None = Field(default=None, min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_WORK_TOKENS)

    @model_validator(mode="after")
    def _one_kind(self) -> PromptEntry:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError('give "prompt" or "messages", exactly one of them')
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError('"prompt" is blank')
        return self


class RequestOverride(BaseModel):
    """What one request asks for instead of the workload's draw (a trace line's own lengths): its own
    `prompt` text or a synthetic prompt of `prompt_tokens`, and its own `max_tokens`; what it leaves out
    comes from the workload as for any other request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = Field(default=None, min_length=1)
    prompt_tokens: int | None = Field(default=None, ge=1, le=MAX_WORK_TOKENS)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_WORK_TOKENS)

    @model_validator(mode="after")
    def _one_prompt(self) -> RequestOverride:
        if self.prompt is not None and self.prompt_tokens is not None:
            raise ValueError('give "prompt" or "prompt_tokens", not both: each says what to send')
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError('"prompt" is blank')
        return self

    @property
    def own_prompt(self) -> bool:
        """Whether the request sends a prompt of its own rather than the workload's."""
        return self.prompt is not None or self.prompt_tokens is not None


def read_model_lines(
    path: Path, model: type[M], *, what: str, flag: str, file_format: str
) -> list[tuple[str, M]]:
    """Each non-blank line of a JSON Lines file as a `model`, with its `file:line`; a ConfigError naming
    `file:line` and what is wrong there (not JSON, not an object, a field the model refuses), and what the
    file should hold (`file_format`); `what` ("prompts file") and `flag` ("--prompts") name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot read the {what} {path}: {reason}; give a readable UTF-8 file ({flag})"
        ) from None
    parsed: list[tuple[str, M]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where}: not JSON ({exc}); {file_format}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a JSON {type(data).__name__}, not an object; {file_format}")
        try:
            parsed.append((where, model(**data)))
        except ValidationError as exc:
            raise ConfigError(f"{where}: {describe_validation_error(exc)}; {file_format}") from None
    return parsed


def read_prompts_file(path: Path, api: LoadApi) -> tuple[PromptEntry, ...]:
    """The entries of a prompts file (JSON Lines; blank lines skipped), each checked. A ConfigError names
    `file:line` and what is wrong there; `messages` entries need the chat API."""
    entries: list[PromptEntry] = []
    for where, entry in read_model_lines(
        path, PromptEntry, what="prompts file", flag="--prompts", file_format=_FILE_FORMAT
    ):
        if entry.messages is not None and api != "openai-chat":
            raise ConfigError(
                f'{where}: "messages" need --api openai-chat (this run sends {api}); '
                'give "prompt" instead, or use the chat API'
            )
        entries.append(entry)
    if not entries:
        raise ConfigError(f"the prompts file {path} holds no prompt; {_FILE_FORMAT}")
    return tuple(entries)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, recorded with the run so that the prompts it sent can be matched later."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Workload:
    """The requests of one run in order: `next()` gives each one's prompt index and body, drawn from
    generators seeded by `seed` (the same arguments, the same sequence).

    Exactly one source of prompts: `texts` (chosen per request), `entries` of a prompts file (likewise,
    their own max_tokens winning), or `prompt_tokens` (a synthetic prompt per request; its index is the
    request's own number). `max_tokens` is a fixed count, a distribution, or None (the server decides).
    `overrides[n]`, where given, wins for request n (a trace line's lengths): a prompt of its own (its
    index is then the request's own number, as for synthetic prompts) and/or its own max_tokens.
    """

    def __init__(
        self,
        api: LoadApi,
        *,
        seed: int,
        stream: bool,
        model: str | None,
        options: Mapping[str, Any] | None,
        max_tokens: int | TokenDistribution | None,
        texts: tuple[str, ...] = (),
        entries: tuple[PromptEntry, ...] = (),
        prompt_tokens: TokenDistribution | None = None,
        overrides: Sequence[RequestOverride | None] = (),
    ) -> None:
        if sum((bool(texts), bool(entries), prompt_tokens is not None)) != 1:
            raise ConfigError("a workload needs exactly one of texts, entries or prompt_tokens")
        self.api, self.stream, self.model, self.options = api, stream, model, options
        self.max_tokens = max_tokens
        self.prompt_tokens = prompt_tokens
        self.overrides = overrides
        self.entries: tuple[PromptEntry, ...] = entries or tuple(PromptEntry(prompt=t) for t in texts)
        # Seeded as the load generator always has: a spec of fixed prompts picks the same ones as before.
        self._choices = random.Random(f"labkit.measure.load.prompts:{seed}")
        self._lengths = random.Random(f"labkit.measure.load.prompt_tokens:{seed}")
        self._words = random.Random(f"labkit.measure.load.words:{seed}")
        self._answers = random.Random(f"labkit.measure.load.max_tokens:{seed}")
        self._count = 0
        # The common case costs one lookup a request: fixed prompts and a fixed max_tokens, encoded once.
        self._fixed: list[bytes] | None = None
        if prompt_tokens is None and not isinstance(max_tokens, TokenDistribution):
            self._fixed = [self._encode(e, e.prompt, self._answer_tokens(e)) for e in self.entries]

    def _answer_tokens(self, entry: PromptEntry | None) -> int | None:
        if entry is not None and entry.max_tokens is not None:
            return entry.max_tokens
        limit = self.max_tokens
        return limit.draw(self._answers) if isinstance(limit, TokenDistribution) else limit

    def _encode(self, entry: PromptEntry | None, prompt: str | None, max_tokens: int | None) -> bytes:
        messages = None
        if entry is not None and entry.messages is not None:
            messages = [m.model_dump(exclude_none=True) for m in entry.messages]
        return encode_body(
            self.api,
            prompt=prompt,
            messages=messages,
            max_tokens=max_tokens,
            stream=self.stream,
            model=self.model,
            options=self.options,
        )

    def next(self) -> tuple[int, bytes]:
        """The next request's prompt index and JSON body."""
        number = self._count
        self._count += 1
        override = self.overrides[number] if number < len(self.overrides) else None
        if override is not None and (override.own_prompt or override.max_tokens is not None):
            return self._overridden(number, override)
        if self.prompt_tokens is not None:
            prompt = synthetic_prompt(self._words, self.prompt_tokens.draw(self._lengths))
            return number, self._encode(None, prompt, self._answer_tokens(None))
        index = self._choices.randrange(len(self.entries))
        if self._fixed is not None:
            return index, self._fixed[index]
        entry = self.entries[index]
        return index, self._encode(entry, entry.prompt, self._answer_tokens(entry))

    def _overridden(self, number: int, override: RequestOverride) -> tuple[int, bytes]:
        """Request `number` with what `override` sets; the rest drawn as for any request."""
        index, entry = number, None
        prompt: str | None
        if override.prompt is not None:
            prompt = override.prompt
        elif override.prompt_tokens is not None:
            prompt = synthetic_prompt(self._words, override.prompt_tokens)
        elif self.prompt_tokens is not None:
            prompt = synthetic_prompt(self._words, self.prompt_tokens.draw(self._lengths))
        else:
            index = self._choices.randrange(len(self.entries))
            entry = self.entries[index]
            prompt = entry.prompt
        answer = override.max_tokens if override.max_tokens is not None else self._answer_tokens(entry)
        return index, self._encode(entry, prompt, answer)
