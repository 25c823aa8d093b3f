"""A capacity search against a running service: each point measured in its own run directory, every point
journaled as it finishes, and capacity.json written after each one (a crash leaves the points so far), with
the knee, its interval and the SLO that broke first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labkit.errors import ConfigError
from labkit.measure.capacity._point import PointResult, describe_point, measure_point, point_summary
from labkit.measure.capacity._saturation import SaturationCheck
from labkit.measure.capacity._search import (
    CONFIDENCE_LEVELS,
    MAX_REPEATS,
    KneeEstimate,
    Phase,
    SearchOutcome,
    SearchPlan,
    search_capacity,
)
from labkit.measure.load import LoadSpec
from labkit.measure.slo import SloDefinition, load_slo_spec
from labkit.rundir import EventKind, RunDirectory, RunFile
from labkit.validation import describe_validation_error

__all__ = ["SATURATION", "CapacityResult", "CapacitySpec", "find_capacity", "limiting_slo"]

logger = logging.getLogger(__name__)

# `limiting_slo` when the first failing point broke no SLO but could not keep up with its offered rate.
SATURATION = "saturation"


class CapacitySpec(BaseModel):
    """A capacity search, keyword-only and frozen; a bad value is one ConfigError naming it.

    `load` is each point's load but for its rate, duration and seed (open loop: `constant` arrivals by
    default, or `poisson`); the point's seed is `load.seed` + its index. The search's fields are
    `SearchPlan`'s; `growth_tolerance` and `min_backlog` are `SaturationCheck`'s; `slo_spec` is the SLO
    spec every point is judged against (default: the lab's stack/slo.yaml).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    load: LoadSpec
    point_s: float = Field(30.0, gt=0, le=3600, description="how long each point sends load, seconds")
    min_requests: int = Field(10, ge=1, le=10_000, description="a point lasts long enough for this many")
    start_rate: float = Field(1.0, gt=0, le=10_000, description="the sweep's first rate, requests/s")
    rates: tuple[float, ...] | None = Field(None, description="the sweep's rates instead of doubling")
    min_rate: float = Field(0.01, gt=0, description="the sweep halves down no further")
    max_rate: float = Field(1000.0, gt=0, le=10_000, description="the sweep doubles up no further")
    precision: float = Field(0.05, gt=0, le=1, description="bisect until first fail / last pass <= 1 + this")
    repeats: int = Field(1, ge=1, le=MAX_REPEATS, description="knee measurements (bisections)")
    confidence: float = Field(0.95, description="of the interval over repeats: " + str(CONFIDENCE_LEVELS))
    max_points: int = Field(40, ge=1, le=1000, description="points at most")
    max_search_s: float = Field(1800.0, gt=0, le=86_400, description="the search's time bound, seconds")
    settle_s: float = Field(1.0, ge=0, le=600, description="pause between points, seconds")
    growth_tolerance: float = Field(0.05, gt=0, le=1, description="saturation: growth that counts")
    min_backlog: int = Field(3, ge=1, description="saturation: least backlog growth that counts")
    slo_spec: Path | None = Field(None, description="the SLO spec; default: the lab's stack/slo.yaml")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError("invalid capacity search: " + describe_validation_error(exc)) from None

    @model_validator(mode="after")
    def _consistent(self) -> CapacitySpec:
        if self.load.mode != "open":
            raise ValueError("load: a capacity search offers rates: give an open-loop load (mode='open')")
        self.plan()  # its own checks, as one message
        return self

    def plan(self) -> SearchPlan:
        return SearchPlan(
            start_rate=self.start_rate,
            rates=self.rates,
            min_rate=min(self.min_rate, self.start_rate),
            max_rate=max(self.max_rate, self.start_rate),
            precision=self.precision,
            repeats=self.repeats,
            max_points=self.max_points,
            max_search_s=self.max_search_s,
            point_s=self.point_s,
            min_requests=self.min_requests,
            settle_s=self.settle_s,
            confidence=self.confidence,
        )


class CapacityResult(BaseModel):
    """capacity.json: what was asked, every point, each repeat's knee, the estimate and its interval, and
    the SLO that broke first. Rates in requests per second."""

    model_config = ConfigDict(frozen=True)

    spec: dict[str, Any]
    points: list[PointResult]
    repeats: list[dict[str, Any]]  # repeat, knee, first_fail, points (their indexes), stopped
    max_rate_meeting_slos: float | None
    max_rate_meeting_slos_low: float | None
    max_rate_meeting_slos_high: float | None
    interval_method: str  # bracket, t or none (KneeEstimate)
    interval_meaning: str
    confidence: float | None
    limiting_slo: str | None  # an SLO's name, `saturation`, or None (no failing point above the knee)
    limiting_point: int | None  # the index of the point it was read from
    stopped: str | None  # why the search ended before it converged
    elapsed_s: float
    complete: bool  # False while the search runs (capacity.json is rewritten after every point)

    @property
    def headline(self) -> dict[str, Any]:
        """The run.json headline keys of a capacity run."""
        return {
            "max_rate_meeting_slos": self.max_rate_meeting_slos,
            "max_rate_meeting_slos_low": self.max_rate_meeting_slos_low,
            "max_rate_meeting_slos_high": self.max_rate_meeting_slos_high,
            "limiting_slo": self.limiting_slo,
        }


def _interval_meaning(estimate: KneeEstimate) -> str:
    if estimate.method == "bracket":
        high = (
            "no failing rate above it"
            if estimate.high is None
            else f"the lowest failing rate, {estimate.high:.3g}/s"
        )
        return f"one search: the knee lies between the highest passing rate and {high}"
    if estimate.method == "t":
        return (
            f"{estimate.confidence:.0%} Student-t interval of the mean knee over {len(estimate.knees)} "
            "repeated bisections (each knee the highest passing rate of its repeat)"
        )
    return "no point passed: the capacity is below the lowest rate measured"


def limiting_slo(points: Sequence[PointResult], knee: float | None) -> tuple[str | None, int | None]:
    """Which SLO broke first: at the lowest failing rate above `knee` (any failing point without a knee),
    the failing SLO with the highest burn rate; `saturation` when that point broke none but could not keep
    up. (None, None) without such a point."""
    failing = [p for p in points if not p.passed and (knee is None or p.rate > knee)]
    if not failing:
        return None, None
    first = min(failing, key=lambda p: (p.rate, p.index))
    broken = [o for o in first.slos if o.met is False]
    if broken:
        return max(broken, key=lambda o: o.burn_rate).slo, first.index
    return SATURATION, first.index


def _latency_bound_s(slos: Sequence[SloDefinition]) -> float | None:
    """The loosest end-to-end latency threshold of the spec, for the Little's-law stop."""
    values = [
        float(o.value)
        for s in slos
        if s.indicator == "threshold" and s.metric == "llm_request_duration_seconds"
        for o in s.objectives
        if o.value is not None
    ]
    return max(values) if values else None


def _result(
    spec: CapacitySpec, outcome: SearchOutcome | None, points: list[PointResult], elapsed: float
) -> CapacityResult:
    estimate = outcome.estimate if outcome is not None else KneeEstimate(None, None, None, "none", None, ())
    limiting, where = limiting_slo(points, estimate.value)
    repeats = [
        {
            "repeat": r.repeat,
            "knee": r.knee,
            "first_fail": r.first_fail,
            "points": [p.index for p in r.points if isinstance(p, PointResult)],
            "stopped": r.stopped,
        }
        for r in (outcome.repeats if outcome is not None else [])
    ]
    return CapacityResult(
        spec=spec.model_dump(mode="json"),
        points=points,
        repeats=repeats,
        max_rate_meeting_slos=estimate.value,
        max_rate_meeting_slos_low=estimate.low,
        max_rate_meeting_slos_high=estimate.high,
        interval_method=estimate.method,
        interval_meaning=_interval_meaning(estimate) if outcome is not None else "the search is running",
        confidence=estimate.confidence,
        limiting_slo=limiting,
        limiting_point=where,
        stopped=outcome.stopped if outcome is not None else None,
        elapsed_s=elapsed,
        complete=outcome is not None,
    )


def find_capacity(
    spec: CapacitySpec,
    run_dir: RunDirectory,
    *,
    say: Callable[[str], None] | None = None,
    progress: bool = False,
) -> CapacityResult:
    """Search the highest offered rate at which every SLO holds (docs/capacity.md). Each point goes into
    `run_dir/points/<index>-r<rate>/`; capacity.json is rewritten after every point and run.json gets the
    headline at the end. `say` gets one line per finished point and the knee."""
    slos = load_slo_spec(spec.slo_spec)
    check = SaturationCheck(
        growth_tolerance=spec.growth_tolerance,
        min_backlog=spec.min_backlog,
        latency_bound_s=_latency_bound_s(slos),
    )
    plan = spec.plan()
    points: list[PointResult] = []
    began = time.monotonic()
    params = run_dir.read_json(RunFile.PARAMS) if run_dir.file(RunFile.PARAMS).exists() else {}
    run_dir.write_json(
        RunFile.PARAMS,
        {**(params if isinstance(params, dict) else {}), "capacity": spec.model_dump(mode="json")},
    )
    run_dir.journal(EventKind.CAPACITY_STARTED, plan=spec.model_dump(mode="json", exclude={"load"}))

    def measure(rate: float, repeat: int, phase: Phase) -> PointResult:
        if points and spec.settle_s:
            time.sleep(spec.settle_s)  # what the last point left in flight or queued drains first
        index = len(points) + 1
        point = measure_point(
            run_dir,
            spec.load,
            index=index,
            repeat=repeat,
            phase=phase,
            rate=rate,
            point_s=plan.point_duration(rate),
            seed=spec.load.seed + index,
            slos=slos,
            check=check,
            progress=progress,
        )
        points.append(point)
        run_dir.journal(EventKind.CAPACITY_POINT, **point_summary(point))
        run_dir.write_json(
            RunFile.CAPACITY, _result(spec, None, points, time.monotonic() - began).model_dump(mode="json")
        )
        if say is not None:
            say(describe_point(point))
        return point

    outcome = search_capacity(measure, plan)
    result = _result(spec, outcome, points, outcome.elapsed_s)
    run_dir.write_json(RunFile.CAPACITY, result.model_dump(mode="json"))
    run_dir.journal(EventKind.CAPACITY_FINISHED, **result.headline, stopped=result.stopped)
    run_dir.write_run_record({"headline": result.headline})
    if say is not None:
        say(describe_knee(result))
    return result


def describe_knee(result: CapacityResult) -> str:
    """The knee in words: `max rate meeting the SLOs 5.50/s [5.50, 6.02] (...); limiting: saturation`."""
    if result.max_rate_meeting_slos is None:
        text = "no rate met every SLO: the capacity is below the lowest rate measured"
    else:
        high = result.max_rate_meeting_slos_high
        text = (
            f"max rate meeting the SLOs {result.max_rate_meeting_slos:.3g}/s "
            f"[{result.max_rate_meeting_slos_low:.3g}, {'-' if high is None else f'{high:.3g}'}] "
            f"({result.interval_meaning})"
        )
    limiting = result.limiting_slo or "none (no failing point above it)"
    tail = f"; stopped: {result.stopped}" if result.stopped else ""
    return f"{text}; limiting: {limiting}{tail}"
