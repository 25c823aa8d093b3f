"""Schedules: the faults of one experiment on a timeline, explicit or drawn from a seed, and the plan
printed before a run. The same seed gives the identical schedule; a schedule must fit in its run.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from labkit.errors import ConfigError
from labkit.faults import (
    FAULT_KINDS,
    FAULT_TARGETS,
    INSTANT_KINDS,
    MAX_FAULT_DURATION_S,
    Fault,
    FaultKind,
    InvalidFaultError,
    format_params,
)
from labkit.validation import CheckedModel, format_problem

__all__ = [
    "DEFAULT_RANDOM_TARGETS",
    "MAX_RUN_S",
    "Schedule",
    "as_schedule",
    "check_schedule_fits",
    "plan_text",
    "random_schedule",
    "schedule_problems",
]

# The load generator's cap on one run (LoadSpec.max_duration_s).
MAX_RUN_S = 3600.0
# Random schedules act on the serving path unless told otherwise: killing Prometheus tests the lab's
# measurements, not the service. Pass `targets=` to include it.
DEFAULT_RANDOM_TARGETS: tuple[str, ...] = ("model", "wrapper", "machine")
# Parameter menus of random faults: fixed values (not drawn from ranges) so that a plan reads well and
# does not depend on the machine. cpu_stress keeps its default (every CPU of the machine).
_RANDOM_PARAMS: dict[FaultKind, dict[str, tuple[Any, ...]]] = {
    "latency": {"delay_s": (0.25, 0.5, 1.0, 2.0)},
    "error": {"probability": (0.1, 0.25, 0.5, 1.0), "status": (500, 502, 503)},
    "stream_cut": {"after_tokens": (1, 4, 8)},
}


def schedule_problems(faults: Sequence[Fault], duration_s: float | None) -> list[tuple[int, str]]:
    """(index, message) for every fault that ends after the run or overlaps an earlier fault of the same
    kind on the same target (the second pause of a service would cancel the first one's TTL)."""
    problems: list[tuple[int, str]] = []
    for index, fault in enumerate(faults):
        if duration_s is not None and fault.end_s > duration_s + 1e-9:
            problems.append((
                index,
                f"{fault.describe()} ends at {fault.end_s:g} s, after the run's {duration_s:g} s; "
                "start it earlier, shorten it, or lengthen the run (--duration)",
            ))  # fmt: skip
        for other_index, other in enumerate(faults[:index]):
            same = other.kind == fault.kind and other.target == fault.target
            # 1e-9: a fault that starts as the other ends (156.8 + 13.8 = 170.60000000000002) follows it.
            if same and fault.start_s < other.end_s - 1e-9 and other.start_s < fault.end_s - 1e-9:
                problems.append((
                    index,
                    f"{fault.describe()} overlaps faults[{other_index}] ({other.describe()}); two faults of "
                    "one kind on one target must not overlap: start the second after the first ends",
                ))  # fmt: skip
    return problems


class Schedule(CheckedModel):
    """Faults in start order (ties keep their given order). Frozen; invalid input is one ConfigError.

    - `faults`: Fault objects or mappings with the same fields.
    - `seed`: the seed a random schedule was drawn from (None for an explicit one).
    - `duration_s`: the run it was planned for, when known; then every fault must end within it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int | None = None
    duration_s: float | None = Field(default=None, gt=0, le=MAX_RUN_S, allow_inf_nan=False)
    faults: tuple[Fault, ...] = ()

    invalid_what = "schedule"

    # Errors are raised as ConfigError directly (pydantic passes them through), so that they keep the
    # index of the fault they are about.
    @field_validator("faults", mode="before")
    @classmethod
    def _build_faults(cls, items: Any) -> tuple[Fault, ...]:
        if isinstance(items, str | bytes | dict) or not isinstance(items, Iterable):
            raise ConfigError(
                f"invalid schedule: faults: must be a list of faults, got {type(items).__name__}"
            )
        faults: list[Fault] = []
        problems: list[str] = []
        for index, item in enumerate(items):
            try:
                if isinstance(item, Fault):
                    faults.append(item)
                elif isinstance(item, dict):
                    faults.append(Fault(**item))
                else:
                    problems.append(
                        f"faults[{index}]: must be a Fault or a mapping, got {type(item).__name__}"
                    )
            except InvalidFaultError as exc:
                problems.extend(format_problem(loc, msg, f"faults[{index}]") for loc, msg in exc.problems)
        if problems:
            raise ConfigError("invalid schedule: " + "; ".join(problems))
        return tuple(faults)

    @field_validator("faults")
    @classmethod
    def _check_faults(cls, faults: tuple[Fault, ...], info: Any) -> tuple[Fault, ...]:
        problems = schedule_problems(faults, info.data.get("duration_s"))
        if problems:
            raise ConfigError("invalid schedule: " + "; ".join(f"faults[{i}]: {msg}" for i, msg in problems))
        order = sorted(range(len(faults)), key=lambda i: (faults[i].start_s, i))
        return tuple(faults[i] for i in order)

    def __len__(self) -> int:
        return len(self.faults)

    @property
    def end_s(self) -> float:
        """When the last fault ends (0 for an empty schedule)."""
        return max((f.end_s for f in self.faults), default=0.0)

    def to_records(self) -> list[dict[str, Any]]:
        """The faults as plain dicts, for params.json and the journal."""
        return [f.model_dump(mode="json") for f in self.faults]


def as_schedule(schedule: Schedule | Iterable[Fault | dict[str, Any]]) -> Schedule:
    """A Schedule as is; a list of faults (or fault mappings) as an explicit schedule."""
    if isinstance(schedule, Schedule):
        return schedule
    return Schedule(faults=tuple(schedule))  # type: ignore[arg-type]  # mappings are validated into Faults


def check_schedule_fits(schedule: Schedule, duration_s: float) -> None:
    """ConfigError naming the first fault that ends after a run of `duration_s` (or overlaps another)."""
    problems = schedule_problems(schedule.faults, duration_s)
    if problems:
        index, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"the schedule does not fit the run: faults[{index}]: {message}{more}")


def _check_number(name: str, value: Any, *, low: float, high: float, low_open: bool = True) -> float:
    ok_type = isinstance(value, int | float) and not isinstance(value, bool)
    in_range = ok_type and (low < value if low_open else low <= value) and value <= high
    if not in_range:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name}: must be a number in {bracket}{low:g}, {high:g}], got {value!r}")
    return float(value)


def _random_kinds(
    kinds: Iterable[str] | None, applicable: Mapping[FaultKind, Sequence[str]]
) -> list[FaultKind]:
    """The kinds to draw from: the given ones (each must apply to the lab), else every applicable one."""
    if kinds is None:
        return [kind for kind in FAULT_KINDS if applicable.get(kind)]
    chosen: list[FaultKind] = []
    for kind in kinds:
        if kind not in FAULT_KINDS:
            raise ConfigError(f"kinds: unknown fault kind {kind!r}; choose from {', '.join(FAULT_KINDS)}")
        if not applicable.get(kind):
            raise ConfigError(
                f"kinds: a {kind} fault cannot apply to this lab's model service; drop it from kinds "
                f"(this lab applies {', '.join(applicable)})"
            )
        if kind not in chosen:
            chosen.append(kind)  # type: ignore[arg-type]
    if not chosen:
        raise ConfigError(f"kinds: give at least one fault kind ({', '.join(FAULT_KINDS)})")
    return chosen


def _random_targets(
    kinds: list[FaultKind], targets: Iterable[str] | None, applicable: Mapping[FaultKind, Sequence[str]]
) -> dict[FaultKind, list[str]]:
    wanted = list(DEFAULT_RANDOM_TARGETS if targets is None else dict.fromkeys(targets))
    known = sorted({t for ts in FAULT_TARGETS.values() for t in ts})
    for target in wanted:
        if target not in known:
            raise ConfigError(f"targets: {target!r} is not a lab target; choose from {', '.join(known)}")
    per_kind: dict[FaultKind, list[str]] = {}
    for kind in kinds:
        fits = [t for t in wanted if t in applicable[kind]]
        if not fits:
            raise ConfigError(
                f"targets: none of {wanted} fits a {kind} fault on this lab (it acts on "
                f"{' or '.join(applicable[kind])}); add one to targets or drop {kind} from kinds"
            )
        per_kind[kind] = fits
    return per_kind


def random_schedule(
    seed: int,
    duration_s: float,
    *,
    kinds: Iterable[str] | None = None,
    targets: Iterable[str] | None = None,
    mean_gap_s: float = 10.0,
    fault_duration_s: tuple[float, float] = (5.0, 15.0),
    applicable: Mapping[FaultKind, Sequence[str]] | None = None,
) -> Schedule:
    """A schedule drawn from `seed`: the same arguments give the identical schedule, on any machine
    (cpu_stress's default worker count aside, which is the machine's CPU count).

    Faults follow one another without overlapping: each starts an exponential gap (mean `mean_gap_s`)
    after the previous one ended (the first after one gap from the start), with a kind drawn from `kinds`
    (default: every kind), a target drawn from `targets` that fits the kind (default: model, wrapper,
    machine), a duration drawn uniformly from `fault_duration_s` (0.1 s steps) and parameters from a fixed
    menu per kind. Drawing stops at the first fault that would end after `duration_s`.

    `applicable`: the kinds and targets the lab can apply (`applicable_faults(config)`); nothing else is
    ever drawn (no kill of a model service the lab does not run), and a kind in `kinds` outside it is a
    ConfigError. Default: every kind on every target.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: must be an integer, got {seed!r}")
    run_s = _check_number("duration_s", duration_s, low=0, high=MAX_RUN_S)
    gap_s = _check_number("mean_gap_s", mean_gap_s, low=0, high=MAX_RUN_S)
    try:
        low, high = fault_duration_s
    except (TypeError, ValueError):
        raise ConfigError(
            f"fault_duration_s: must be a pair (shortest, longest) in seconds, got {fault_duration_s!r}"
        ) from None
    low = _check_number("fault_duration_s[0]", low, low=0, high=MAX_FAULT_DURATION_S)
    high = _check_number("fault_duration_s[1]", high, low=0, high=MAX_FAULT_DURATION_S)
    if low > high:
        raise ConfigError(
            f"fault_duration_s: the shortest ({low:g} s) is longer than the longest ({high:g} s)"
        )
    allowed: Mapping[FaultKind, Sequence[str]] = FAULT_TARGETS if applicable is None else applicable
    chosen = _random_kinds([kinds] if isinstance(kinds, str) else kinds, allowed)
    per_kind = _random_targets(chosen, [targets] if isinstance(targets, str) else targets, allowed)

    # A string seed is hashed with SHA-512 by `random`: stable across processes and Python versions.
    rng = random.Random(f"labkit.chaos:{seed}")
    faults: list[Fault] = []
    previous_end = 0.0
    while True:
        start = round(previous_end + rng.expovariate(1.0 / gap_s), 1)
        kind = rng.choice(chosen)
        target = rng.choice(per_kind[kind])
        length = min(high, max(low, round(rng.uniform(low, high), 1)))
        params = {name: rng.choice(menu) for name, menu in _RANDOM_PARAMS.get(kind, {}).items()}
        if start + length > run_s + 1e-9:
            break
        faults.append(Fault(kind=kind, target=target, params=params, start_s=start, duration_s=length))
        previous_end = start + length
    return Schedule(seed=seed, duration_s=run_s, faults=tuple(faults))


def _seconds(value: float) -> str:
    """At least one decimal, at most three: 5.0, 4.25, 19.1."""
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


_COLUMNS = ("#", "start_s", "end_s", "kind", "target", "duration_s", "params")


def plan_text(schedule: Schedule | Iterable[Fault], *, duration_s: float | None = None) -> str:
    """The schedule as a fixed-width table, one fault per line; the same schedule gives the same text."""
    schedule = as_schedule(schedule)
    run_s = duration_s if duration_s is not None else schedule.duration_s
    origin = f"seed {schedule.seed}" if schedule.seed is not None else "explicit"
    run = f", run {run_s:g} s" if run_s is not None else ""
    count = len(schedule.faults)
    header = f"chaos schedule ({origin}{run}): {count} fault{'' if count == 1 else 's'}"
    if not count:
        return header + " - the run is a baseline with load only"
    rows = [
        (
            str(number),
            _seconds(fault.start_s),
            _seconds(fault.end_s),
            fault.kind,
            fault.target,
            _seconds(fault.duration_s) + ("*" if fault.kind in INSTANT_KINDS else ""),
            format_params(fault.params),
        )
        for number, fault in enumerate(schedule.faults, start=1)
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    right = {0, 1, 2, 5}

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    lines = [header, line(_COLUMNS), *(line(r) for r in rows)]
    if any(f.kind in INSTANT_KINDS for f in schedule.faults):
        lines.append("* instantaneous: the duration is the window in which the run watches the effect")
    return "\n".join(lines)
