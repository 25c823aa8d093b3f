"""The fault contract, declared once for every side: what a fault is (`Fault`: `{kind, target, params,
start_s, duration_s}`), the targets and parameters of each kind with their bounds and defaults, and the body
of the wrapper's fault API (`WrapperFaultRequest`), which the chaos side sends and the wrapper parses.

Each kind has the targets it can act on and its own parameters; a bad value is one `ConfigError` naming
the field (`params.delay_s: ...`), so a notebook, a file and the CLI all get the same message. Nothing here
needs pandas: the wrapper imports it.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from labkit.errors import ConfigError, FieldError
from labkit.lab.contract import MANAGED_SERVICES
from labkit.validation import describe_error, error_message, format_problem

__all__ = [
    "DEFAULT_TARGETS",
    "ERROR_STATUSES",
    "FAULT_KINDS",
    "FAULT_PARAMS",
    "FAULT_TARGETS",
    "INSTANT_KINDS",
    "MAX_DELAY_S",
    "MAX_FAULT_DURATION_S",
    "WRAPPER_FAULTS_ROUTE",
    "WRAPPER_FAULT_KINDS",
    "CpuStressParams",
    "ErrorFault",
    "ErrorParams",
    "Fault",
    "FaultKind",
    "FaultParams",
    "InvalidFaultError",
    "JsonInt",
    "LatencyFault",
    "LatencyParams",
    "StreamCutFault",
    "StreamCutParams",
    "WrapperFault",
    "WrapperFaultRequest",
    "format_params",
    "json_integer",
    "parse_wrapper_fault",
]

FaultKind = Literal["kill", "restart", "pause", "latency", "error", "stream_cut", "cpu_stress", "unload"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

# What each kind acts on. latency/error/stream_cut are applied by the wrapper to its calls to the model,
# so their target is "model" (the dependency that seems slow or broken), not the wrapper itself.
# cpu_stress loads the whole machine; "exporter" is never a target: it is the supervisor that applies
# faults and holds their TTLs.
FAULT_TARGETS: dict[FaultKind, tuple[str, ...]] = {
    "kill": MANAGED_SERVICES,
    "restart": MANAGED_SERVICES,
    "pause": MANAGED_SERVICES,
    "latency": ("model",),
    "error": ("model",),
    "stream_cut": ("model",),
    "cpu_stress": ("machine",),
    "unload": ("model",),
}
DEFAULT_TARGETS: dict[FaultKind, str] = {kind: targets[0] for kind, targets in FAULT_TARGETS.items()}
# Happen at once; their duration_s is the window in which the run observes the effect (recovery).
INSTANT_KINDS: frozenset[FaultKind] = frozenset({"kill", "restart", "unload"})
# Applied by the wrapper to its calls to the model, through its fault API (the rest: by the lab's manager).
WRAPPER_FAULT_KINDS: tuple[FaultKind, ...] = ("latency", "error", "stream_cut")
WRAPPER_FAULTS_ROUTE = "/admin/faults"
# The longest fault: the manager's cap on a pause, and every TTL (wrapper, stress-ng) is held to it.
MAX_FAULT_DURATION_S = 3600.0
MAX_DELAY_S = 60.0
ERROR_STATUSES = (500, 502, 503, 504)


def _cpu_count() -> int:
    return os.cpu_count() or 1


def json_integer(value: Any) -> Any:
    """`value` as an int when it is a float with an integral value; anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# JSON Schema counts 21.0 as an integer, and so do JSON clients that have only one number type; strict
# pydantic would refuse it. `JsonInt` takes an integral float as its int, still refusing "21", true and 21.5.
JsonInt = Annotated[int, BeforeValidator(json_integer)]


class FaultParams(BaseModel):
    """A kind's parameters. Strict: "5" is not 5 and true is not 1; a fault's parameters are never guessed
    from the wrong type. Infinity and nan are refused (a delay of nan passes every bound)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class NoParams(FaultParams):
    """kill, restart, pause and unload take no parameters."""


class LatencyParams(FaultParams):
    """Delay every request of the wrapper before its call to the model, so its TTFT and duration grow."""

    delay_s: float = Field(
        default=0.5, gt=0, le=MAX_DELAY_S, description="seconds added before the model call"
    )
    jitter_s: float = Field(
        default=0.0, ge=0, le=MAX_DELAY_S, description="plus a uniform random extra in [0, jitter_s]"
    )


class ErrorParams(FaultParams):
    """Answer a 5xx without calling the model, with a probability per request."""

    probability: float = Field(default=0.5, gt=0, le=1, description="chance that a request gets the error")
    status: Literal[500, 502, 503, 504] = Field(default=503, description="the HTTP status answered")
    seed: JsonInt | None = Field(default=None, description="seeds the draws, for a reproducible sequence")


class StreamCutParams(FaultParams):
    """Abort answers after this many token chunks (the model's stream is closed).

    Checked before each next chunk is read from the model, the final done line included: an answer that
    reaches `after_tokens` token chunks while the fault is on never gets its final line, even when every
    token of it has been sent (a client cannot tell that from any other cut: no done, no usage).
    """

    after_tokens: JsonInt = Field(
        default=4, ge=1, le=100_000, description="token chunks that pass before the cut"
    )


class CpuStressParams(FaultParams):
    """Load every CPU (or `workers` of them) with stress-ng."""

    workers: JsonInt = Field(default_factory=_cpu_count, ge=1, description="stress-ng CPU workers, 1..CPUs")

    @field_validator("workers")
    @classmethod
    def _at_most_cpus(cls, value: int) -> int:
        if value > _cpu_count():
            raise ValueError(f"at most {_cpu_count()} (the CPUs of this machine), got {value}")
        return value


FAULT_PARAMS: dict[FaultKind, type[FaultParams]] = {
    "kill": NoParams,
    "restart": NoParams,
    "pause": NoParams,
    "latency": LatencyParams,
    "error": ErrorParams,
    "stream_cut": StreamCutParams,
    "cpu_stress": CpuStressParams,
    "unload": NoParams,
}


class InvalidFaultError(ConfigError):
    """A fault failed validation. `problems`: (field location, message) pairs, e.g. (("params", "delay_s"),
    "Input should be greater than 0"), so that a schedule or a file can say where the fault is."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]], *, prefix: str = "") -> None:
        self.problems = problems
        super().__init__(
            "invalid fault: " + "; ".join(format_problem(loc, msg, prefix) for loc, msg in problems)
        )


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
        model = FAULT_PARAMS[kind]
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
                message = error_message(err)
            raise FieldError(sub, message) from None

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


# ---- the wrapper's fault API: POST /admin/faults ----------------------------------------------------------


class WrapperFault(FaultParams):
    """The body of POST /admin/faults: a kind, its parameters, and how long the wrapper holds it (its TTL)."""

    duration_s: float = Field(
        gt=0, le=MAX_FAULT_DURATION_S, description="seconds until the wrapper ends the fault itself"
    )


class LatencyFault(WrapperFault):
    kind: Literal["latency"] = "latency"
    params: LatencyParams


class ErrorFault(WrapperFault):
    kind: Literal["error"] = "error"
    params: ErrorParams


class StreamCutFault(WrapperFault):
    kind: Literal["stream_cut"] = "stream_cut"
    params: StreamCutParams


# `kind` picks the variant, and with it the allowed params.
WrapperFaultRequest = Annotated[LatencyFault | ErrorFault | StreamCutFault, Field(discriminator="kind")]
_WRAPPER_FAULT: TypeAdapter[LatencyFault | ErrorFault | StreamCutFault] = TypeAdapter(WrapperFaultRequest)


def parse_wrapper_fault(data: Any) -> LatencyFault | ErrorFault | StreamCutFault:
    """Validate a POST /admin/faults body; raises pydantic.ValidationError."""
    return _WRAPPER_FAULT.validate_python(data)
