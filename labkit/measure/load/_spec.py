"""What a load run sends: the validated `LoadSpec` (its API, target, pace, load shape and workload) and its
seeded schedule of intended send times.

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
from labkit.measure.load._shapes import (
    TraceLine,
    expected_requests,
    gamma_offsets,
    ramp_integral,
    ramp_offsets,
    read_trace_file,
)
from labkit.measure.load._workload import (
    TokenDistribution,
    Workload,
    as_distribution,
    as_max_tokens,
    read_prompts_file,
)
from labkit.measure.load_apis import (
    API_ENDPOINTS,
    ARRIVALS,
    LOAD_APIS,
    Arrival,
    LoadApi,
    Ramp,
    is_openai,
)
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
        "rate_end",
        "ramp",
        "burstiness",
        "trace_file",
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
_FLAGS = {"prompts": "--prompt", "prompts_file": "--prompts", "trace_file": "--trace"}


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
    "arrival": "use " + ", ".join(f"'{a}'" for a in ARRIVALS),
    "rate_end": "pass the ramp's last rate, above 0 requests per second",
    "ramp": "use 'linear' or 'exponential'",
    "burstiness": "pass a gamma shape above 0: 1 is Poisson, below 1 burstier, above 1 more regular",
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


# What each shape needs beyond a rate, and the shape each of those fields belongs to.
_SHAPE_NEEDS = {
    "ramp": "rate_end (--rate-end): arrival='ramp' goes from rate (--rate) to rate_end requests per second "
    "over duration_s; give both",
    "gamma": "burstiness (--burstiness): arrival='gamma' needs the gamma shape: 1 is Poisson, below 1 "
    "burstier, above 1 more regular",
    "trace": "trace_file (--trace): arrival='trace' sends at the offsets of a JSON Lines file; give it",
}
_SHAPE_OF = {"rate_end": "ramp", "ramp": "ramp", "burstiness": "gamma", "trace_file": "trace"}


def _shape_field_refused(field: str, arrival: str) -> str:
    owner = _SHAPE_OF[field]
    return (
        f"{field} ({_flag(field)}) applies to arrival='{owner}' only (this spec's arrival is '{arrival}'); "
        f"drop it, or use --arrival {owner}"
    )


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
    - `mode="open"`: requests leave at the times of `schedule(spec)`, whether or not earlier ones have
      answered; at most `max_in_flight` are outstanding at once, and a request that has to wait for a slot
      shows that wait in `queue_delay_s`. The shape is `arrival`: `constant` or `poisson` at `rate` per
      second, `ramp` from `rate` to `rate_end` (`ramp` linear or exponential), `gamma` at `rate` with gaps
      of shape `burstiness` (as vLLM's), or `trace` at the offsets of `trace_file`, whose lines may set
      their request's prompt_tokens (or prompt) and max_tokens; a trace lasts its own length unless
      `duration_s` is given.
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
    arrival: Arrival = Field("constant", description="open loop: the load shape, " + ", ".join(ARRIVALS))
    rate: float | None = Field(None, gt=0, allow_inf_nan=False, description="open loop: requests per second")
    rate_end: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="ramp: the rate at duration_s, requests per second"
    )
    ramp: Ramp | None = Field(None, description="ramp: 'linear' (default) or 'exponential' (geometric)")
    burstiness: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="gamma: the gaps' shape, 1 Poisson, <1 burstier"
    )
    trace_file: Path | None = Field(
        None, description="trace: JSON Lines of offset_s (and prompt_tokens, prompt, max_tokens) per request"
    )
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
    def _shape_defaults(cls, data: Any) -> Any:
        """A ramp is linear unless told; a trace lasts its own length (just past its last offset, so that
        every line is sent) unless duration_s is given, which then cuts it."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("arrival") == "ramp" and data.get("ramp") is None:
            data["ramp"] = "linear"
        if data.get("arrival") == "trace" and data.get("trace_file") is None:
            raise ValueError(_SHAPE_NEEDS["trace"])  # before duration_s, which the trace gives
        if data.get("duration_s") is None:
            data.pop("duration_s", None)
            trace = data.get("trace_file")
            if data.get("arrival") == "trace" and isinstance(trace, str | Path):
                last = read_trace_file(Path(trace))[-1].offset_s
                data["duration_s"] = math.nextafter(last, math.inf)
        return data

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
        self._check_pace()
        if self.duration_s > self.max_duration_s:
            raise ValueError(
                f"duration_s (--duration-s): {self.duration_s:g} s is over the cap of "
                f"{self.max_duration_s:g} s; shorten the run or raise max_duration_s"
            )
        self._check_count()
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

    def _check_pace(self) -> None:
        """What drives the requests: a closed loop's workers, or the open loop's shape and its fields."""
        if self.mode == "closed":
            if self.concurrency is None:
                raise ValueError(_MODE_NEEDS["closed"])
            if self.rate is not None:
                raise ValueError(_MODE_REFUSES["closed"])
            if self.arrival != "constant":
                raise ValueError(
                    f"arrival='{self.arrival}' applies to an open loop only; drop it for mode='closed'"
                )
        elif self.concurrency is not None:
            raise ValueError(_MODE_REFUSES["open"])
        elif self.arrival == "trace" and self.rate is not None:
            raise ValueError(
                "rate (--rate): a trace sets its own send times (each line's offset_s); drop the rate"
            )
        elif self.arrival != "trace" and self.rate is None:
            raise ValueError(_MODE_NEEDS["open"])
        for name, owner in _SHAPE_OF.items():
            given = getattr(self, name) is not None
            if given and owner != self.arrival:
                raise ValueError(_shape_field_refused(name, self.arrival))
            if not given and owner == self.arrival and self.arrival in _SHAPE_NEEDS and name != "ramp":
                raise ValueError(_SHAPE_NEEDS[self.arrival])

    def _check_count(self) -> None:
        """max_requests caps every shape: its expected count (a ramp's integral, a trace's lines)."""
        if self.mode != "open":
            return
        if self.arrival == "trace":
            assert self.trace_file is not None  # _check_pace
            lines = read_trace_file(self.trace_file)  # a ConfigError naming file:line, before anything
            count = sum(1 for line in lines if line.offset_s < self.duration_s)
            if count > self.max_requests:
                raise ValueError(
                    f"trace_file (--trace): {count} requests within duration_s, over the cap max_requests = "
                    f"{self.max_requests}; pass a shorter --duration-s to replay part of it, or raise "
                    "max_requests"
                )
            return
        assert self.rate is not None  # _check_pace
        if self.arrival == "ramp":
            assert self.rate_end is not None and self.ramp is not None
            integral = ramp_integral(self.rate, self.rate_end, self.duration_s, self.ramp)
            what, expected = "the ramp's integral", max(1, math.ceil(round(integral, 9)))
            lower = "--rate, --rate-end"
        else:
            what, expected = "rate x duration_s", expected_requests(self.rate, self.duration_s)
            lower = "--rate"
        if expected > self.max_requests:
            raise ValueError(
                f"{what} = {expected} requests, over the cap max_requests = {self.max_requests}; "
                f"lower {lower} or --duration-s, or raise max_requests"
            )

    @property
    def offered_rate(self) -> float | None:
        """The mean rate the open loop offers over duration_s, requests per second: `rate`, a ramp's
        integral / duration_s; None for a trace (it sets its own times) and a closed loop."""
        if self.rate is None or self.mode != "open":
            return None
        if self.arrival == "ramp" and self.rate_end is not None and self.ramp is not None:
            return ramp_integral(self.rate, self.rate_end, self.duration_s, self.ramp) / self.duration_s
        return self.rate

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
    `random.Random(spec.seed)`, the first one after the first gap. `ramp`: request i when the integral of
    the rate reaches i (`ramp_offsets`). `gamma`: vLLM's bursty gaps (`gamma_offsets`, seeded). `trace`: the
    file's offsets below `duration_s`. The same spec gives the same list, never more than `max_requests`
    (the spec refuses shapes whose expected count is over it).
    """
    if spec.mode != "open":
        raise ConfigError("a closed loop has no schedule: its workers send back to back; use mode='open'")
    if spec.arrival == "trace":
        return [line.offset_s for line in _trace_lines(spec)]
    assert spec.rate is not None  # the spec checked it
    rate, duration = spec.rate, spec.duration_s
    if spec.arrival == "constant":
        count = min(expected_requests(rate, duration), spec.max_requests)
        return [i / rate for i in range(count) if i / rate < duration]
    if spec.arrival == "ramp":
        assert spec.rate_end is not None and spec.ramp is not None
        return ramp_offsets(rate, spec.rate_end, duration, spec.ramp, spec.max_requests)
    if spec.arrival == "gamma":
        assert spec.burstiness is not None
        return gamma_offsets(rate, spec.burstiness, duration, spec.seed, spec.max_requests)
    rng = random.Random(spec.seed)
    offsets: list[float] = []
    t = rng.expovariate(rate)
    while t < duration and len(offsets) < spec.max_requests:
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


def _trace_lines(spec: LoadSpec) -> list[TraceLine]:
    """The trace's lines that the run sends: those before `duration_s`, at most `max_requests`."""
    if spec.arrival != "trace" or spec.trace_file is None:
        return []
    lines = [line for line in read_trace_file(spec.trace_file) if line.offset_s < spec.duration_s]
    return lines[: spec.max_requests]


def workload(spec: LoadSpec, *, model: str | None = None) -> Workload:
    """The requests `spec` sends, in order (`Workload.next()`), asking for `model` (default: the spec's);
    a trace's lines give their requests their own prompt and max_tokens where they say."""
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
        overrides=_trace_lines(spec),
    )


def prompt_choices(spec: LoadSpec, count: int) -> list[int]:
    """The `prompt_index` of each of the first `count` requests: which of the prompts (`spec.prompts`, the
    default ones, or the prompts file's entries) each sends, seeded apart from the arrival times so that
    changing the arrival process does not change the prompts; with `prompt_tokens`, each request's own
    synthetic prompt, numbered as the requests are."""
    work = workload(spec)
    return [work.next()[0] for _ in range(count)]
