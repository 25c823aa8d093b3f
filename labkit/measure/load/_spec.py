"""What a load run sends: the validated `LoadSpec` (its API, target, pace and workload) and its seeded
schedule of intended send times.

Everything here is checked before the first request; a bad spec is one `ConfigError` that names the field.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labkit.errors import ConfigError
from labkit.measure.load._workload import (
    TokenDistribution,
    Workload,
    as_distribution,
    as_max_tokens,
    read_prompts_file,
)
from labkit.measure.load_apis import API_ENDPOINTS, LOAD_APIS, LoadApi, is_openai
from labkit.sockets import is_loopback_address

__all__ = [
    "DEFAULT_MAX_DURATION_S",
    "DEFAULT_MAX_REQUESTS",
    "DEFAULT_PROMPTS",
    "LoadSpec",
    "prompt_choices",
    "schedule",
    "workload",
]

DEFAULT_PROMPTS: tuple[str, ...] = (
    "Explain in one sentence what a service level objective is.",
    "Name three things that make a web service slow.",
    "Write a haiku about a server that restarts.",
    "What does p99 latency mean?",
    "Give one tip for running a reliable API.",
)
DEFAULT_MAX_DURATION_S = 3600.0
DEFAULT_MAX_REQUESTS = 100_000

# The fields `labkit load` has a flag for; a flag is its field's name (`--duration-s`), so that one message
# serves notebook and command-line users alike.
_CLI_FIELDS = frozenset(
    {
        "url",
        "api",
        "model",
        "rate",
        "concurrency",
        "duration_s",
        "arrival",
        "stream",
        "max_tokens",
        "prompts",
        "prompt_tokens",
        "prompts_file",
        "seed",
        "timeout_s",
        "allow_non_loopback",
        "api_key_file",
    }
)
# Fields whose flag is not their name: one prompt per --prompt, a file of them with --prompts.
_FLAGS = {"prompts": "--prompt", "prompts_file": "--prompts"}


def _flag(field: str) -> str:
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


_HINTS = {
    "url": "pass the wrapper's base URL (e.g. http://127.0.0.1:8000) for --api generate, or the OpenAI base "
    "URL (e.g. http://127.0.0.1:11434/v1) for --api openai-chat or openai-completions",
    "rate": "pass a rate above 0 requests per second",
    "concurrency": "pass 1 or more workers",
    "duration_s": "pass a duration above 0 seconds",
    "max_duration_s": "pass a cap above 0 seconds",
    "max_requests": "pass a cap of 1 or more requests",
    "max_in_flight": "pass 1 or more",
    "max_tokens": "pass N or MEAN:STDDEV tokens (1 or more), or None to let the server decide",
    "prompt_tokens": "pass MEAN[:STDDEV] tokens, e.g. 128 or 128:32",
    "prompts": "give at least one non-empty prompt",
    "timeout_s": "pass a timeout above 0 seconds",
    "mode": "use 'open' (a schedule of send times) or 'closed' (fixed concurrency)",
    "arrival": "use 'constant' or 'poisson'",
}

# What each mode needs (rate or concurrency), and what it says when given the other mode's setting.
_MODE_NEEDS = {
    "open": "rate (--rate): an open loop needs a rate in requests per second",
    "closed": "concurrency (--concurrency): a closed loop needs a number of workers",
}
_MODE_REFUSES = {
    "open": "concurrency (--concurrency) drives a closed loop; drop it, or use mode='closed' without a rate",
    "closed": "rate (--rate) drives an open loop; a closed loop sends as fast as its workers get answers: "
    "drop the rate or the concurrency",
}


def _expected_requests(rate: float, duration_s: float) -> int:
    """Requests a constant-rate schedule holds: offsets i/rate < duration_s (rounded against float noise)."""
    return max(1, math.ceil(round(rate * duration_s, 9)))


class LoadSpec(BaseModel):
    """One load run, keyword-only and frozen. Invalid values raise one `ConfigError` naming each field.

    - `api`: `generate` (the wrapper's POST {url}/generate, NDJSON streams), `openai-chat` or
      `openai-completions` (POST {url}/chat/completions or {url}/completions, server-sent event streams).
      `url` is the wrapper's base URL for `generate`, the OpenAI base URL (usually ending in /v1) for the
      others; `wrapper_api_url` gives the lab's own. Only loopback targets (127.0.0.0/8, ::1, localhost)
      are accepted unless `allow_non_loopback=True`.
    - `model`: the model asked for; without it an OpenAI API run asks `GET {url}/models` once and takes
      the only model listed, and `generate` leaves it to the wrapper.
    - `stream`: streamed answers (client-side TTFT and ITL); default True for the OpenAI APIs, False for
      `generate`.
    - The workload, one of: `prompts` (texts, chosen per request; the default five when nothing is given),
      `prompt_tokens` (a synthetic prompt of that many tokens per request, `MEAN[:STDDEV]`) or
      `prompts_file` (JSON Lines of `prompt` or `messages`, optional `max_tokens`). `max_tokens` is a
      count or a distribution (`MEAN:STDDEV`). Every draw is seeded by `seed`.
    - `mode="open"`: requests leave at the times of `schedule(spec)` (`rate` per second, `constant` spacing
      or `poisson` arrivals), whether or not earlier ones have answered; at most `max_in_flight` are
      outstanding at once, and a request that has to wait for a slot shows that wait in `queue_delay_s`.
    - `mode="closed"`: `concurrency` workers each send back to back for `duration_s`.
    - `timeout_s` bounds a request from its intended send time to its last byte (the same clock as its
      latency), so a run ends at most `timeout_s` after its last send.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description="the wrapper's base URL (generate), or the OpenAI base URL (openai-chat, -completions)"
    )
    api: LoadApi = Field("generate", description="the API the requests speak: " + ", ".join(LOAD_APIS))
    model: str | None = Field(
        None, min_length=1, description="the model asked for; default: the only one {url}/models lists"
    )
    mode: Literal["open", "closed"] = Field("open", description="open loop (a schedule) or closed loop")
    arrival: Literal["constant", "poisson"] = Field("constant", description="open loop: arrival process")
    rate: float | None = Field(None, gt=0, allow_inf_nan=False, description="open loop: requests per second")
    concurrency: int | None = Field(None, ge=1, le=10_000, description="closed loop: workers")
    duration_s: float = Field(gt=0, allow_inf_nan=False, description="how long requests are sent")
    max_duration_s: float = Field(DEFAULT_MAX_DURATION_S, gt=0, description="the cap on duration_s")
    max_requests: int = Field(DEFAULT_MAX_REQUESTS, ge=1, description="the cap on requests in one run")
    max_in_flight: int = Field(1000, ge=1, le=20_000, description="open loop: outstanding requests at most")
    stream: bool = Field(
        False, description="streamed answers (client-side TTFT and ITL); default: True for the OpenAI APIs"
    )
    max_tokens: int | TokenDistribution | None = Field(
        32, description="tokens per answer, N or MEAN:STDDEV; None leaves it to the server"
    )
    prompts: tuple[str, ...] | None = Field(
        None, min_length=1, description="texts chosen per request, seeded; default: DEFAULT_PROMPTS"
    )
    prompt_tokens: TokenDistribution | None = Field(
        None, description="a synthetic prompt of this many tokens per request, MEAN[:STDDEV]"
    )
    prompts_file: Path | None = Field(
        None, description="JSON Lines of prompt or messages (and max_tokens), chosen per request, seeded"
    )
    options: dict[str, Any] | None = Field(
        None, description="generate: the request's options; OpenAI APIs: extra top-level body fields"
    )
    seed: int = Field(0, description="seeds the arrival times, the prompt choices and the token counts")
    timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False, description="per request, from intended send")
    allow_non_loopback: bool = Field(False, description="permit a target that is not this machine")
    api_key_file: Path | None = Field(
        None,
        description="file holding the target's API key, sent as Authorization: Bearer; the path is "
        "recorded, never the key",
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @model_validator(mode="before")
    @classmethod
    def _api_defaults(cls, data: Any) -> Any:
        """What depends on the API: whether answers stream by default, and the endpoint a pasted URL ends in
        (people copy it from a curl line)."""
        if not isinstance(data, dict) or data.get("api", "generate") not in LOAD_APIS:
            return data
        api = data.get("api", "generate")
        data = dict(data)
        if data.get("stream") is None:
            data["stream"] = is_openai(api)
        url = data.get("url")
        if isinstance(url, str):
            data["url"] = url.rstrip("/").removesuffix(API_ENDPOINTS[api])
        return data

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError(f"{value!r} is not a URL ({exc})") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{value!r} must be an http:// or https:// URL with a host")
        return value.rstrip("/")

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _parse_max_tokens(cls, value: Any) -> Any:
        return as_max_tokens(value)

    @field_validator("prompt_tokens", mode="before")
    @classmethod
    def _parse_prompt_tokens(cls, value: Any) -> Any:
        return as_distribution(value)

    @field_validator("prompts")
    @classmethod
    def _check_prompts(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and any(not p.strip() for p in value):
            raise ValueError("every prompt must be a non-empty string")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LoadSpec:
        open_loop = self.mode == "open"
        needed, refused = (self.rate, self.concurrency) if open_loop else (self.concurrency, self.rate)
        if needed is None:
            raise ValueError(_MODE_NEEDS[self.mode])
        if refused is not None:
            raise ValueError(_MODE_REFUSES[self.mode])
        if not open_loop and self.arrival != "constant":
            raise ValueError("arrival='poisson' applies to an open loop only; drop it for mode='closed'")
        if self.duration_s > self.max_duration_s:
            raise ValueError(
                f"duration_s (--duration-s): {self.duration_s:g} s is over the cap of "
                f"{self.max_duration_s:g} s; shorten the run or raise max_duration_s"
            )
        if self.rate is not None:
            expected = _expected_requests(self.rate, self.duration_s)
            if expected > self.max_requests:
                raise ValueError(
                    f"rate x duration_s = {expected} requests, over the cap max_requests = "
                    f"{self.max_requests}; lower --rate or --duration-s, or raise max_requests"
                )
        host = httpx.URL(self.url).host
        if not self.allow_non_loopback and not is_loopback_address(host, resolve=False):
            raise ValueError(
                f"url (--url): {host!r} is not a loopback address; the lab only sends load to this "
                "machine (127.0.0.0/8, ::1, localhost) unless you pass allow_non_loopback=True "
                "(--allow-non-loopback) for a target you are allowed to load"
            )
        sources = [
            f"{name} ({_flag(name)})"
            for name in ("prompts", "prompt_tokens", "prompts_file")
            if getattr(self, name) is not None
        ]
        if len(sources) > 1:
            raise ValueError(
                f"{' and '.join(sources)} each say what to send; they are mutually exclusive: give one"
            )
        if self.prompts_file is not None:
            read_prompts_file(self.prompts_file, self.api)  # a ConfigError naming file:line, before anything
        return self

    @property
    def target(self) -> str:
        """The URL every request is POSTed to."""
        return self.url + API_ENDPOINTS[self.api]

    @property
    def workload_source(self) -> str:
        """What the prompts are: `prompts`, `prompt_tokens` or `prompts_file` (the default prompts count as
        `prompts`)."""
        if self.prompt_tokens is not None:
            return "prompt_tokens"
        return "prompts_file" if self.prompts_file is not None else "prompts"


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        field = str(err["loc"][0]) if err["loc"] else ""
        if field and not message.startswith(field):
            flag = f" ({_flag(field)})" if field in _CLI_FIELDS else ""
            hint = f"; {_HINTS[field]}" if field in _HINTS else ""
            message = f"{field}{flag}: {message}{hint}"
        problems.append(message)
    return "invalid load spec: " + "; ".join(problems)


def schedule(spec: LoadSpec) -> list[float]:
    """The open loop's intended send offsets in seconds from the start, ascending, all < `duration_s`.

    `constant`: i / rate. `poisson`: cumulative exponential gaps (mean 1 / rate) drawn from
    `random.Random(spec.seed)`, the first one after the first gap. The same spec gives the same list.
    A Poisson schedule is cut at `max_requests` (the spec refuses rates whose expected count is over it).
    """
    if spec.mode != "open" or spec.rate is None:
        raise ConfigError("a closed loop has no schedule: its workers send back to back; use mode='open'")
    rate, duration = spec.rate, spec.duration_s
    if spec.arrival == "constant":
        count = min(_expected_requests(rate, duration), spec.max_requests)
        return [i / rate for i in range(count) if i / rate < duration]
    rng = random.Random(spec.seed)
    offsets: list[float] = []
    t = rng.expovariate(rate)
    while t < duration and len(offsets) < spec.max_requests:
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


def workload(spec: LoadSpec, *, model: str | None = None) -> Workload:
    """The requests `spec` sends, in order (`Workload.next()`), asking for `model` (default: the spec's)."""
    entries = read_prompts_file(spec.prompts_file, spec.api) if spec.prompts_file is not None else ()
    texts = spec.prompts if spec.prompts is not None else DEFAULT_PROMPTS
    return Workload(
        spec.api,
        seed=spec.seed,
        stream=spec.stream,
        model=model if model is not None else spec.model,
        options=spec.options,
        max_tokens=spec.max_tokens,
        texts=texts if spec.workload_source == "prompts" else (),
        entries=entries,
        prompt_tokens=spec.prompt_tokens,
    )


def prompt_choices(spec: LoadSpec, count: int) -> list[int]:
    """The `prompt_index` of each of the first `count` requests: which of the prompts (`spec.prompts`, the
    default ones, or the prompts file's entries) each sends, seeded apart from the arrival times so that
    changing the arrival process does not change the prompts; with `prompt_tokens`, each request's own
    synthetic prompt, numbered as the requests are."""
    work = workload(spec)
    return [work.next()[0] for _ in range(count)]
