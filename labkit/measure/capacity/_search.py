"""The search over offered rates, apart from how a point is measured: a coarse sweep (doubling up from the
start while points pass, halving down while they fail, or a given list), then a bisection between the last
pass and the first fail down to a relative precision, within a bound on points and on time; repeated, and
the knees summed up as an estimate with its interval.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from labkit.errors import ConfigError

__all__ = [
    "CONFIDENCE_LEVELS",
    "MAX_REPEATS",
    "KneeEstimate",
    "Measured",
    "RepeatOutcome",
    "SearchOutcome",
    "SearchPlan",
    "knee_estimate",
    "search_capacity",
    "t_quantile",
]

Phase = Literal["sweep", "bisect"]

# Two-sided Student-t quantiles t_{(1+c)/2, df} for df = 1..19 (repeats 2..20), by confidence c. Printed
# tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2); a test checks them against sampled t variates.
_T_TABLE: dict[float, tuple[float, ...]] = {
    0.90: (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812,
           1.796, 1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729),
    0.95: (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
           2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093),
    0.99: (63.657, 9.925, 5.841, 4.604, 4.032, 3.707, 3.499, 3.355, 3.250, 3.169,
           3.106, 3.055, 3.012, 2.977, 2.947, 2.921, 2.898, 2.878, 2.861),
}  # fmt: skip
CONFIDENCE_LEVELS: tuple[float, ...] = tuple(_T_TABLE)
MAX_REPEATS = len(_T_TABLE[0.95]) + 1


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student-t quantile for `confidence` (one of CONFIDENCE_LEVELS) and `df` degrees of
    freedom (1 .. MAX_REPEATS - 1)."""
    if confidence not in _T_TABLE:
        raise ConfigError(f"confidence {confidence:g}: use one of {', '.join(map(str, CONFIDENCE_LEVELS))}")
    if not 1 <= df <= len(_T_TABLE[confidence]):
        raise ConfigError(f"{df} degrees of freedom: repeats must be 2 to {MAX_REPEATS} for an interval")
    return _T_TABLE[confidence][df - 1]


class Measured(Protocol):
    """What the search needs of a measured point."""

    @property
    def rate(self) -> float: ...

    @property
    def passed(self) -> bool: ...


# Measures one point: (rate, repeat, phase) -> the point. The search never looks inside it but at `passed`.
MeasureFn = Callable[[float, int, Phase], Measured]


@dataclass(frozen=True, kw_only=True)
class SearchPlan:
    """How the search goes. Rates are requests per second.

    - sweep: from `start_rate`, doubling while points pass (up to `max_rate`) or halving while they fail
      (down to `min_rate`); or the ascending list `rates`, up to its first failing point.
    - bisection: geometric midpoints between the last pass and the first fail until first fail / last pass
      <= 1 + `precision`.
    - `repeats`: the first repeat sweeps and bisects; each further one bisects the sweep's bracket again,
      with a seed of its own (the sweep's points are a factor of two from the knee: measuring them again
      would tell nothing new).
    - a point lasts `point_s`, or long enough for `min_requests` requests at its rate (`point_duration`):
      a pass or a fail on two requests says nothing.
    - bounds: at most `max_points` points; no point is started that would end past `max_search_s`
      (its duration + `settle_s`, the time a point may take at most, stops early excepted).
    """

    start_rate: float = 1.0
    rates: tuple[float, ...] | None = None
    min_rate: float = 0.01
    max_rate: float = 1000.0
    precision: float = 0.05
    repeats: int = 1
    max_points: int = 40
    max_search_s: float = 1800.0
    point_s: float = 30.0
    min_requests: int = 1
    settle_s: float = 1.0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.min_rate <= self.start_rate <= self.max_rate:
            problems.append("need 0 < min_rate <= start_rate <= max_rate")
        if self.rates is not None and (not self.rates or any(r <= 0 for r in self.rates)):
            problems.append("rates must be one or more rates above 0")
        if not 0 < self.precision <= 1:
            problems.append("precision must be in (0, 1]: a relative width, e.g. 0.05 for 5 %")
        if not 1 <= self.repeats <= MAX_REPEATS:
            problems.append(f"repeats must be 1 to {MAX_REPEATS}")
        if self.confidence not in CONFIDENCE_LEVELS:
            problems.append(f"confidence must be one of {', '.join(map(str, CONFIDENCE_LEVELS))}")
        if self.max_points < 1 or self.point_s <= 0 or self.settle_s < 0 or self.min_requests < 1:
            problems.append("need max_points >= 1, min_requests >= 1, point_s > 0 and settle_s >= 0")
        if self.max_search_s < self.point_s:
            problems.append(
                f"max_search_s {self.max_search_s:g} s leaves no time for one {self.point_s:g} s point"
            )
        if problems:
            raise ConfigError("invalid capacity search: " + "; ".join(problems))

    def point_duration(self, rate: float) -> float:
        """How long a point at `rate` sends load: `point_s`, or long enough for `min_requests` requests."""
        return max(self.point_s, self.min_requests / rate)


@dataclass
class RepeatOutcome:
    """One repeat's result: its knee (the highest passing rate), the lowest failing rate above it, its
    points, and why it ended early if it did."""

    repeat: int
    knee: float | None = None  # None: no point passed
    first_fail: float | None = None  # None: no point above the knee failed
    points: list[Measured] = field(default_factory=list)
    stopped: str | None = None


@dataclass(frozen=True)
class KneeEstimate:
    """The capacity under the SLOs: `value`, within [`low`, `high`].

    - `bracket` (one repeat): value is the highest rate that passed; the knee lies between it and the
      lowest rate that failed (`high`; None when none failed), if passing is monotonic in the rate.
    - `t` (two or more repeats with a knee): value is the mean of the repeats' knees, and [low, high] the
      Student-t `confidence` interval of that mean: the spread of the knee from one search to the next.
      Each knee is itself the low end of its bracket, so the estimate leans low by up to the precision.
    - `none`: no point passed.
    """

    value: float | None
    low: float | None
    high: float | None
    method: Literal["bracket", "t", "none"]
    confidence: float | None
    knees: tuple[float, ...]


def knee_estimate(repeats: Sequence[RepeatOutcome], confidence: float = 0.95) -> KneeEstimate:
    """The estimate of the knee over `repeats` (see KneeEstimate)."""
    knees = tuple(r.knee for r in repeats if r.knee is not None)
    if not knees:
        return KneeEstimate(None, None, None, "none", None, ())
    if len(knees) == 1:
        only = next(r for r in repeats if r.knee is not None)
        return KneeEstimate(knees[0], knees[0], only.first_fail, "bracket", None, knees)
    mean = statistics.fmean(knees)
    half = t_quantile(confidence, len(knees) - 1) * statistics.stdev(knees) / math.sqrt(len(knees))
    return KneeEstimate(mean, max(mean - half, 0.0), mean + half, "t", confidence, knees)


@dataclass
class SearchOutcome:
    """Every repeat, every point in measuring order, the estimate, and why the search stopped early."""

    repeats: list[RepeatOutcome]
    points: list[Measured]
    estimate: KneeEstimate
    stopped: str | None
    elapsed_s: float


@dataclass
class _Search:
    plan: SearchPlan
    measure: MeasureFn
    clock: Callable[[], float]
    started: float
    points: list[Measured] = field(default_factory=list)
    stopped: str | None = None  # the bound that was reached: no point is measured after it

    def point(self, rate: float, outcome: RepeatOutcome, phase: Phase) -> bool | None:
        """Whether the point at `rate` passed; None when a bound forbids it (`stopped` says which)."""
        plan = self.plan
        used = self.clock() - self.started
        if len(self.points) >= plan.max_points:
            self.stopped = f"the bound of {plan.max_points} points was reached"
        elif used + plan.point_duration(rate) + plan.settle_s > plan.max_search_s:
            self.stopped = (
                f"the time bound: {used:.0f} s used of max_search_s {plan.max_search_s:g} s, and the point "
                f"at {rate:.3g}/s takes up to {plan.point_duration(rate) + plan.settle_s:g} s"
            )
        if self.stopped is not None:
            return None
        measured = self.measure(rate, outcome.repeat, phase)
        self.points.append(measured)
        outcome.points.append(measured)
        if measured.passed:
            outcome.knee = max(outcome.knee or 0.0, rate)
        elif outcome.first_fail is None or rate < outcome.first_fail:
            outcome.first_fail = rate
        return measured.passed

    def sweep(self, outcome: RepeatOutcome) -> None:
        plan = self.plan
        if plan.rates is not None:
            for rate in sorted(set(plan.rates)):
                if not self.point(rate, outcome, "sweep"):
                    return
            return
        rate = plan.start_rate
        first = self.point(rate, outcome, "sweep")
        if first:
            while rate < plan.max_rate:
                rate = min(rate * 2, plan.max_rate)
                if not self.point(rate, outcome, "sweep"):
                    return
        elif first is False:
            while rate > plan.min_rate:
                rate = max(rate / 2, plan.min_rate)
                if self.point(rate, outcome, "sweep") is not False:
                    return

    def bisect(self, outcome: RepeatOutcome, low: float | None, high: float | None) -> None:
        while low is not None and high is not None and high / low > 1 + self.plan.precision:
            middle = math.sqrt(low * high)
            passed = self.point(middle, outcome, "bisect")
            if passed is None:
                return
            if passed:
                low = middle
            else:
                high = middle


def search_capacity(
    measure: MeasureFn, plan: SearchPlan, *, clock: Callable[[], float] = time.monotonic
) -> SearchOutcome:
    """Find the highest offered rate whose point passes (see SearchPlan), calling `measure` per point.

    Passing is taken as monotonic in the rate: below a passing rate points pass, above a failing one they
    fail. A point that contradicts it (a pass above a fail) is kept and reported, and the bisection goes on
    in its bracket. A bound reached ends the search with what it has (`stopped` says which)."""
    search = _Search(plan, measure, clock, clock())
    repeats: list[RepeatOutcome] = []
    bracket: tuple[float | None, float | None] = (None, None)
    for repeat in range(1, plan.repeats + 1):
        # A further repeat starts from the sweep's bracket, its ends taken as measured by the sweep.
        outcome = RepeatOutcome(repeat, knee=bracket[0], first_fail=bracket[1])
        repeats.append(outcome)
        if repeat == 1:
            search.sweep(outcome)
            bracket = (outcome.knee, outcome.first_fail)
            if search.stopped is None and (outcome.knee is None or outcome.first_fail is None):
                break  # nothing passed, or nothing failed: there is no bracket to bisect (again)
        search.bisect(outcome, *bracket)
        if search.stopped is not None:
            outcome.stopped = search.stopped
            if repeat > 1:
                # A further repeat cut short has not converged: its knee would only pull the estimate to
                # the sweep's bracket. Its points stay in the record; the first repeat is all there is.
                repeats.pop()
            break
    stopped = search.stopped
    return SearchOutcome(
        repeats=repeats,
        points=search.points,
        estimate=knee_estimate(repeats, plan.confidence),
        stopped=stopped,
        elapsed_s=clock() - search.started,
    )
