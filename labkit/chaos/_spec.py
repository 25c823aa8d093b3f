"""What one chaos experiment is asked to do, declared once: `ExperimentSpec` (the schedule, the run's length,
its load, its steady-state checks, remediation). `run_experiment` takes one; experiment files and the
scenarios build one; params.json records one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labkit.chaos._remediation import RemediationPolicy
from labkit.chaos._schedule import MAX_RUN_S, Schedule, as_schedule, check_schedule_fits
from labkit.measure.load import LoadApi, LoadSpec, SteadyArrival, TokenDistribution, wrapper_api_url
from labkit.validation import CheckedModel

__all__ = ["DEFAULT_SETTLE_TIMEOUT_S", "ExperimentLoad", "ExperimentSpec", "SteadyState"]

# After the method, services that are restarting (a kill at the end) get this long to be ready again
# before the steady-state check after it.
DEFAULT_SETTLE_TIMEOUT_S = 30.0


class _Settings(BaseModel):
    # nan passes every bound and inf none: neither is a setting
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ExperimentLoad(_Settings):
    """The open-loop load the experiment sends: during the method, and during each steady-state check.
    `api` picks the wrapper's API it speaks (`generate`, or the OpenAI-compatible chat or text completions
    under the wrapper's /v1); `prompt_tokens` (`MEAN[:STDDEV]`) sends synthetic prompts of that many tokens
    instead of the default prompts. `arrival` spaces the requests: constant, Poisson, or bursty gamma gaps
    of shape `burstiness` (as `vllm bench serve --burstiness`; given with `gamma` only)."""

    api: LoadApi = Field(default="generate", description="the wrapper's API the requests speak")
    rate: float = Field(default=2.0, gt=0, le=1000, description="requests per second")
    stream: bool = Field(
        default=True, description="ask for streamed answers (gives client-side TTFT and ITL)"
    )
    max_tokens: int | None = Field(default=32, ge=1, le=4096, description="tokens per answer")
    prompt_tokens: TokenDistribution | None = Field(
        default=None, description="synthetic prompts of this many tokens, MEAN[:STDDEV]; None: fixed prompts"
    )
    arrival: SteadyArrival = Field(default="constant", description="spacing of the requests")
    burstiness: float | None = Field(
        default=None, gt=0, description="gamma: the gaps' shape, 1 Poisson, below 1 burstier"
    )
    seed: int = Field(
        default=0, description="seeds the prompts and Poisson or gamma arrivals (not the fault schedule)"
    )
    timeout_s: float = Field(default=30.0, gt=0, le=600, description="seconds a request may take")

    @model_validator(mode="after")
    def _burstiness_with_gamma(self) -> ExperimentLoad:
        if self.arrival == "gamma" and self.burstiness is None:
            raise ValueError(
                "burstiness: arrival 'gamma' needs the gaps' shape: 1 Poisson, below 1 burstier, above 1 "
                "more regular"
            )
        if self.arrival != "gamma" and self.burstiness is not None:
            raise ValueError(
                f"burstiness applies to arrival 'gamma' only (arrival is {self.arrival!r}); drop it, or set "
                "arrival to gamma"
            )
        return self

    def load_spec(self, wrapper_url: str, *, duration_s: float, api_key_file: Path | None) -> LoadSpec:
        """The load run this asks for, `duration_s` long, against the lab's wrapper at `wrapper_url` (its
        /v1 for the OpenAI APIs), with the wrapper's API key file."""
        return LoadSpec(
            url=wrapper_api_url(wrapper_url, self.api),
            api=self.api,
            rate=self.rate,
            stream=self.stream,
            max_tokens=self.max_tokens,
            prompt_tokens=self.prompt_tokens,
            arrival=self.arrival,
            burstiness=self.burstiness,
            seed=self.seed,
            timeout_s=self.timeout_s,
            duration_s=duration_s,
            api_key_file=api_key_file,
        )


class SteadyState(_Settings):
    """The steady-state hypothesis: the SLOs hold over a short load before and after the method."""

    enabled: bool = True
    duration_s: float = Field(default=5.0, gt=0, le=600, description="seconds of load in each check")


class ExperimentSpec(CheckedModel, _Settings):
    """One experiment, keyword-only and frozen; invalid input is one ConfigError naming each field.

    - `schedule`: the faults on the method's timeline (a Schedule, or a list of Faults or their mappings).
    - `duration_s`: the method's length; every fault must end within it.
    - `load`, `steady_state`: ExperimentLoad and SteadyState (or their fields as mappings).
    - `remediation`: a RemediationPolicy (or its fields): a loop that reads p95 and restarts its target.
    - `slow_threshold_s`: above it a request counts as bad in recovery measures (default: the remediation
      threshold, else the SLO spec's tightest end-to-end latency threshold).
    - `scenario` names the run directory; `title` and `description` say what it is for.
    """

    schedule: Schedule
    duration_s: float = Field(gt=0, le=MAX_RUN_S, description="the method's length, seconds")
    load: ExperimentLoad = ExperimentLoad()
    steady_state: SteadyState = SteadyState()
    settle_timeout_s: float = Field(default=DEFAULT_SETTLE_TIMEOUT_S, gt=0, le=600)
    slo_spec: Path | None = None
    remediation: RemediationPolicy | None = None
    slow_threshold_s: float | None = Field(default=None, gt=0, le=600)
    scenario: str = "chaos"
    title: str | None = None
    description: str | None = None

    invalid_what = "experiment"

    @field_validator("schedule", mode="before")
    @classmethod
    def _as_schedule(cls, value: Any) -> Any:
        return value if isinstance(value, Schedule | dict) else as_schedule(value)

    @model_validator(mode="after")
    def _schedule_fits(self) -> ExperimentSpec:
        check_schedule_fits(self.schedule, self.duration_s)  # a ConfigError naming the fault
        return self

    def replace(self, **changes: Any) -> ExperimentSpec:
        """This spec with `changes` (top-level fields; `load` and `steady_state` may be partial mappings),
        validated again."""
        data: dict[str, Any] = {**self.model_dump(), "schedule": self.schedule}
        for name, value in changes.items():
            if name in ("load", "steady_state") and isinstance(value, dict):
                value = {**data[name], **value}
            data[name] = value
        return ExperimentSpec(**data)

    def params_record(self, lab_dir: Path, plan: str) -> dict[str, Any]:
        """params.json of the run: what it was asked, as readers of run directories have always found it."""
        return {
            "scenario": self.scenario,
            "title": self.title,
            "duration_s": self.duration_s,
            "lab_dir": str(lab_dir),
            "experiment": {
                "api": self.load.api,
                "prompt_tokens": None if self.load.prompt_tokens is None else str(self.load.prompt_tokens),
                "rate": self.load.rate,
                "stream": self.load.stream,
                "max_tokens": self.load.max_tokens,
                "arrival": self.load.arrival,
                "burstiness": self.load.burstiness,
                "load_seed": self.load.seed,
                "request_timeout_s": self.load.timeout_s,
                "steady_state": self.steady_state.enabled,
                "steady_state_s": self.steady_state.duration_s,
                "settle_timeout_s": self.settle_timeout_s,
                "slo_spec": str(self.slo_spec) if self.slo_spec else None,
                "slow_threshold_s": self.slow_threshold_s,
            },
            "remediation": None if self.remediation is None else self.remediation.model_dump(mode="json"),
            "chaos": {"seed": self.schedule.seed, "faults": self.schedule.to_records(), "plan": plan},
        }
