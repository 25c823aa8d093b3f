"""What a load run sends: the validated `LoadSpec` and its seeded schedule of intended send times.

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
from labkit.sockets import is_loopback_address

__all__ = [
    "DEFAULT_MAX_DURATION_S",
    "DEFAULT_MAX_REQUESTS",
    "DEFAULT_PROMPTS",
    "LoadSpec",
    "prompt_choices",
    "schedule",
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
        "rate",
        "concurrency",
        "duration_s",
        "arrival",
        "max_tokens",
        "seed",
        "timeout_s",
        "allow_non_loopback",
    }
)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


_HINTS = {
    "url": "pass the wrapper's base URL, e.g. http://127.0.0.1:8000",
    "rate": "pass a rate above 0 requests per second",
    "concurrency": "pass 1 or more workers",
    "duration_s": "pass a duration above 0 seconds",
    "max_duration_s": "pass a cap above 0 seconds",
    "max_requests": "pass a cap of 1 or more requests",
    "max_in_flight": "pass 1 or more",
    "max_tokens": "pass 1 or more tokens, or None to let the wrapper decide",
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

    - `mode="open"`: requests leave at the times of `schedule(spec)` (`rate` per second, `constant` spacing
      or `poisson` arrivals), whether or not earlier ones have answered; at most `max_in_flight` are
      outstanding at once, and a request that has to wait for a slot shows that wait in `queue_delay_s`.
    - `mode="closed"`: `concurrency` workers each send back to back for `duration_s`.
    - `timeout_s` bounds a request from its intended send time to its last byte (the same clock as its
      latency), so a run ends at most `timeout_s` after its last send.
    - `url` is the wrapper's base URL; the requests go to `POST {url}/generate`. Only loopback targets
      (127.0.0.0/8, ::1, localhost) are accepted unless `allow_non_loopback=True`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="the wrapper's base URL; requests go to POST {url}/generate")
    mode: Literal["open", "closed"] = Field("open", description="open loop (a schedule) or closed loop")
    arrival: Literal["constant", "poisson"] = Field("constant", description="open loop: arrival process")
    rate: float | None = Field(None, gt=0, allow_inf_nan=False, description="open loop: requests per second")
    concurrency: int | None = Field(None, ge=1, le=10_000, description="closed loop: workers")
    duration_s: float = Field(gt=0, allow_inf_nan=False, description="how long requests are sent")
    max_duration_s: float = Field(DEFAULT_MAX_DURATION_S, gt=0, description="the cap on duration_s")
    max_requests: int = Field(DEFAULT_MAX_REQUESTS, ge=1, description="the cap on requests in one run")
    max_in_flight: int = Field(1000, ge=1, le=20_000, description="open loop: outstanding requests at most")
    stream: bool = Field(False, description="ask for NDJSON streams (needed for client-side TTFT and ITL)")
    max_tokens: int | None = Field(32, ge=1, description="tokens per answer; None leaves it to the wrapper")
    prompts: tuple[str, ...] = Field(DEFAULT_PROMPTS, min_length=1, description="chosen per request, seeded")
    options: dict[str, Any] | None = Field(None, description="passed through as the request's options")
    seed: int = Field(0, description="seeds the arrival times and the prompt choices")
    timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False, description="per request, from intended send")
    allow_non_loopback: bool = Field(False, description="permit a target that is not this machine")
    api_key_file: Path | None = Field(
        None,
        description="file holding the wrapper's API key, sent as Authorization: Bearer; the path is "
        "recorded, never the key",
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError(f"{value!r} is not a URL ({exc})") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{value!r} must be an http:// or https:// URL with a host")
        value = value.rstrip("/")
        # Accept the endpoint itself too: people copy it from the README's curl line.
        return value.removesuffix("/generate")

    @field_validator("prompts")
    @classmethod
    def _check_prompts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not p.strip() for p in value):
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
        return self

    @property
    def target(self) -> str:
        """The URL every request is POSTed to."""
        return f"{self.url}/generate"


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


def prompt_choices(spec: LoadSpec, count: int) -> list[int]:
    """Which of `spec.prompts` each of the first `count` requests sends: seeded apart from the arrival
    times, so that changing the arrival process does not change the prompts."""
    rng = random.Random(f"labkit.measure.load.prompts:{spec.seed}")
    n = len(spec.prompts)
    return [rng.randrange(n) for _ in range(count)]
