"""What a fault is: `{kind, target, params, start_s, duration_s}`, validated once at the edge.

Each kind has the targets it can act on and its own parameters; a bad value is one `ConfigError` naming
the field (`params.delay_s: ...`), so a notebook, a file and the CLI all get the same message.
"""

from __future__ import annotations

import os
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from labkit.errors import ConfigError
from labkit.yaml_lines import format_loc

__all__ = [
    "DEFAULT_TARGETS",
    "FAULT_KINDS",
    "FAULT_TARGETS",
    "INSTANT_KINDS",
    "MAX_FAULT_DURATION_S",
    "Fault",
    "FaultKind",
    "InvalidFaultError",
    "describe_error",
    "describe_validation_error",
    "format_params",
    "format_problem",
]

FaultKind = Literal["kill", "restart", "pause", "latency", "error", "stream_cut", "cpu_stress", "unload"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

# What each kind acts on. latency/error/stream_cut are applied by the wrapper to its calls to the model,
# so their target is "model" (the dependency that seems slow or broken), not the wrapper itself.
# cpu_stress loads the whole machine; "exporter" is never a target: it is the supervisor that applies
# faults and holds their TTLs.
FAULT_TARGETS: dict[FaultKind, tuple[str, ...]] = {
    "kill": ("model", "wrapper", "prometheus"),
    "restart": ("model", "wrapper", "prometheus"),
    "pause": ("model", "wrapper", "prometheus"),
    "latency": ("model",),
    "error": ("model",),
    "stream_cut": ("model",),
    "cpu_stress": ("machine",),
    "unload": ("model",),
}
DEFAULT_TARGETS: dict[FaultKind, str] = {kind: targets[0] for kind, targets in FAULT_TARGETS.items()}
# Happen at once; their duration_s is the window in which the run observes the effect (recovery).
INSTANT_KINDS: frozenset[FaultKind] = frozenset({"kill", "restart", "unload"})
# The supervisor's cap on a pause; every other TTL is held to the same bound.
MAX_FAULT_DURATION_S = 3600.0


def _cpu_count() -> int:
    return os.cpu_count() or 1


class _Params(BaseModel):
    # Strict, as the wrapper's API: "5" is not 5 and true is not 1; a fault's parameters are never guessed.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _NoParams(_Params):
    pass


# The same bounds as the wrapper's /admin/faults (labkit.services.wrapper._faults), checked here before
# anything is injected.
class _LatencyParams(_Params):
    delay_s: float = Field(0.5, gt=0, le=60, allow_inf_nan=False, description="added before each model call")
    jitter_s: float = Field(0.0, ge=0, le=60, allow_inf_nan=False, description="plus uniform [0, jitter_s]")


class _ErrorParams(_Params):
    probability: float = Field(0.5, gt=0, le=1, allow_inf_nan=False, description="share of requests failed")
    status: Literal[500, 502, 503, 504] = Field(503, description="the 5xx status the wrapper answers")
    seed: int | None = Field(
        default=None, description="seeds the wrapper's draws, for a reproducible sequence"
    )


class _StreamCutParams(_Params):
    after_tokens: int = Field(4, ge=1, le=100_000, description="token chunks streamed before the cut")


class _CpuStressParams(_Params):
    workers: int = Field(default_factory=_cpu_count, ge=1, description="stress-ng CPU workers, 1..CPUs")

    @field_validator("workers")
    @classmethod
    def _at_most_cpus(cls, value: int) -> int:
        if value > _cpu_count():
            raise ValueError(f"at most {_cpu_count()} (the CPUs of this machine), got {value}")
        return value


_PARAMS: dict[FaultKind, type[_Params]] = {
    "kill": _NoParams,
    "restart": _NoParams,
    "pause": _NoParams,
    "latency": _LatencyParams,
    "error": _ErrorParams,
    "stream_cut": _StreamCutParams,
    "cpu_stress": _CpuStressParams,
    "unload": _NoParams,
}


class InvalidFaultError(ConfigError):
    """A fault failed validation. `problems`: (field location, message) pairs, e.g. (("params", "delay_s"),
    "Input should be greater than 0"), so that a schedule or a file can say where the fault is."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]], *, prefix: str = "") -> None:
        self.problems = problems
        super().__init__(
            "invalid fault: " + "; ".join(format_problem(loc, msg, prefix) for loc, msg in problems)
        )


class _FieldError(ValueError):
    """A nested field's error, carrying its own location so messages read `params.delay_s: ...`."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


class Fault(BaseModel):
    """One fault on the experiment's timeline. Keyword-only and frozen; invalid input is one ConfigError.

    - `kind`: one of FAULT_KINDS.
    - `target`: what it acts on (FAULT_TARGETS[kind]); defaults to the kind's first target.
    - `params`: per kind, defaults filled in: latency `delay_s`; error `probability`, `status`;
      stream_cut `after_tokens`; cpu_stress `workers` (1..CPUs, default all). Other kinds take none.
    - `start_s`: offset into the method (the load run), seconds, >= 0.
    - `duration_s`: how long it lasts, (0, 3600]; for kill/restart/unload (instantaneous) the window in
      which the run watches the effect.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: FaultKind
    target: str = Field("", validate_default=True)
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    start_s: float = Field(0.0, ge=0, allow_inf_nan=False)
    duration_s: float = Field(gt=0, le=MAX_FAULT_DURATION_S, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidFaultError([describe_error(err) for err in exc.errors()]) from None

    @field_validator("target", mode="before")
    @classmethod
    def _check_target(cls, value: Any, info: Any) -> Any:
        kind = info.data.get("kind")
        if kind is None:  # the kind's own error is reported
            return value if isinstance(value, str) else ""
        if value in (None, ""):
            return DEFAULT_TARGETS[kind]
        allowed = FAULT_TARGETS[kind]
        if value not in allowed:
            raise ValueError(
                f"{value!r} is not a target of a {kind} fault; use {_one_of(allowed)}"
                + (" (the wrapper applies it to its calls to the model)" if allowed == ("model",) else "")
            )
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _check_params(cls, value: Any, info: Any) -> Any:
        kind = info.data.get("kind")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping of parameter names to values, got {type(value).__name__}")
        if kind is None:
            return value
        model = _PARAMS[kind]
        try:
            return model(**value).model_dump(exclude_none=True)
        except ValidationError as exc:
            err = exc.errors()[0]
            sub = tuple(err["loc"])
            if err["type"] == "extra_forbidden":
                known = ", ".join(model.model_fields)
                message = (
                    f"unknown parameter for a {kind} fault; its parameters: {known}"
                    if known
                    else f"a {kind} fault takes no parameters"
                )
            else:
                message = _message(err)
            raise _FieldError(sub, message) from None

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def instantaneous(self) -> bool:
        return self.kind in INSTANT_KINDS

    def describe(self) -> str:
        """`latency on model at 10 s for 20 s (delay_s=0.5)`: for messages and logs."""
        params = format_params(self.params)
        return f"{self.kind} on {self.target} at {self.start_s:g} s for {self.duration_s:g} s" + (
            f" ({params})" if params != "-" else ""
        )


def format_params(params: dict[str, Any]) -> str:
    """`a=1 b=x`, keys sorted; `-` for none. Stable across runs, for plans and journals."""
    if not params:
        return "-"
    return " ".join(f"{key}={_format_value(params[key])}" for key in sorted(params))


def _one_of(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field; check its spelling"
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] in ("literal_error", "enum"):
        message += f", got {err['input']!r}"
    return message


def describe_error(err: Any) -> tuple[tuple[str | int, ...], str]:
    """One pydantic error as (its location, its message without the location)."""
    loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        return loc + cause.loc, cause.message
    return loc, _message(err)


def format_problem(loc: tuple[str | int, ...], message: str, prefix: str = "") -> str:
    """`faults[2].params.delay_s: message` from a location and an optional prefix (`faults[2]`)."""
    where = prefix + format_loc(loc, leading_dot=bool(prefix))
    return f"{where}: {message}" if where else message


def describe_validation_error(exc: ValidationError) -> str:
    """Every problem as `field.path: message`, joined by `; `."""
    return "; ".join(format_problem(*describe_error(err)) for err in exc.errors())
