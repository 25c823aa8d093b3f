"""The capacity search's logic with a fake point function (a service whose points pass up to a known rate):
the sweep, the bisection, the bounds on points and time, the repeats' interval; the saturation check on
synthetic in-flight histories and rows; which SLO broke first. The search against a real lab is in
tests/integration/test_capacity_scenario.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from labkit.errors import ConfigError
from labkit.measure.capacity import (
    CONFIDENCE_LEVELS,
    SATURATION,
    CapacitySpec,
    PointResult,
    RepeatOutcome,
    SaturationCheck,
    SearchPlan,
    SloOutcome,
    knee_estimate,
    limiting_slo,
    saturation_reason,
    search_capacity,
    t_quantile,
)
from labkit.measure.load import LoadSpec


@dataclass(frozen=True)
class FakePoint:
    rate: float
    passed: bool
    repeat: int
    phase: str


class FakeService:
    """Points pass up to `capacity` (each repeat's capacity may differ); every point takes `point_s` on a
    fake clock."""

    def __init__(self, capacity: float | list[float], point_s: float = 10.0) -> None:
        self.capacities = capacity if isinstance(capacity, list) else [capacity]
        self.point_s = point_s
        self.now = 0.0
        self.points: list[FakePoint] = []

    def clock(self) -> float:
        return self.now

    def measure(self, rate: float, repeat: int, phase: str) -> FakePoint:
        self.now += self.point_s
        capacity = self.capacities[min(repeat, len(self.capacities)) - 1]
        point = FakePoint(rate, rate <= capacity, repeat, phase)
        self.points.append(point)
        return point


def _plan(**overrides: object) -> SearchPlan:
    values: dict[str, object] = {"point_s": 10.0, "settle_s": 0.0, "max_search_s": 10_000.0}
    return SearchPlan(**(values | overrides))  # type: ignore[arg-type]


def test_the_sweep_doubles_until_a_fail_then_bisects_to_the_precision() -> None:
    service = FakeService(5.7)
    outcome = search_capacity(service.measure, _plan(start_rate=1, precision=0.05), clock=service.clock)
    sweep = [p.rate for p in service.points if p.phase == "sweep"]
    assert sweep == [1, 2, 4, 8]
    (repeat,) = outcome.repeats
    assert repeat.knee is not None and repeat.first_fail is not None
    assert repeat.knee <= 5.7 < repeat.first_fail and repeat.first_fail / repeat.knee <= 1.05
    # Geometric midpoints: the first one between 4 and 8 is sqrt(32).
    bisect = [p.rate for p in service.points if p.phase == "bisect"]
    assert bisect[0] == pytest.approx(math.sqrt(32))
    estimate = outcome.estimate
    assert (estimate.method, estimate.value, estimate.low, estimate.high) == (
        "bracket",
        repeat.knee,
        repeat.knee,
        repeat.first_fail,
    )
    assert outcome.stopped is None


def test_a_failing_start_halves_down_to_a_pass() -> None:
    service = FakeService(0.3)
    outcome = search_capacity(service.measure, _plan(start_rate=1, precision=0.1), clock=service.clock)
    assert [p.rate for p in service.points if p.phase == "sweep"] == [1, 0.5, 0.25]
    assert outcome.estimate.value is not None and 0.3 / 1.1 <= outcome.estimate.value <= 0.3


def test_a_given_list_of_rates_is_swept_up_to_its_first_fail() -> None:
    service = FakeService(3.0)
    search_capacity(service.measure, _plan(rates=(4.0, 1.0, 2.0, 8.0), precision=0.5), clock=service.clock)
    assert [p.rate for p in service.points if p.phase == "sweep"] == [1.0, 2.0, 4.0]


def test_nothing_passes_down_to_the_lowest_rate() -> None:
    service = FakeService(0.001)
    outcome = search_capacity(service.measure, _plan(start_rate=1, min_rate=0.1), clock=service.clock)
    assert outcome.estimate.method == "none" and outcome.estimate.value is None
    assert min(p.rate for p in service.points) == 0.1


def test_every_rate_passing_up_to_the_highest_gives_no_upper_end() -> None:
    service = FakeService(1e9)
    outcome = search_capacity(service.measure, _plan(start_rate=1, max_rate=10), clock=service.clock)
    assert [p.rate for p in service.points] == [1, 2, 4, 8, 10]
    assert outcome.estimate.value == 10 and outcome.estimate.high is None


def test_the_time_bound_ends_the_search_with_what_it_has() -> None:
    service = FakeService(5.7, point_s=10)
    plan = _plan(start_rate=1, precision=0.01, max_search_s=55, settle_s=1.0)
    outcome = search_capacity(service.measure, plan, clock=service.clock)
    # 10 s per point, 11 s asked for before each: the sixth, starting at 50 s, could end past 55 s.
    assert len(service.points) == 5
    assert outcome.stopped is not None and "time bound" in outcome.stopped
    assert outcome.repeats[0].stopped == outcome.stopped
    assert outcome.estimate.value == pytest.approx(math.sqrt(32)) and outcome.estimate.high == 8


def test_a_low_rate_gets_a_point_long_enough_for_its_requests_within_the_time_bound() -> None:
    plan = _plan(point_s=10, min_requests=10)
    assert plan.point_duration(5.0) == 10 and plan.point_duration(0.1) == 100
    service = FakeService(0.001, point_s=10)
    outcome = search_capacity(service.measure, _plan(min_requests=10, max_search_s=100), clock=service.clock)
    # 1, 0.5, 0.25 fit (10, 20, 40 s points); the next, 80 s at 0.125/s, would end past 100 s.
    assert [p.rate for p in service.points] == [1, 0.5, 0.25]
    assert outcome.stopped is not None and "0.125/s takes up to 80 s" in outcome.stopped


def test_the_points_bound_ends_the_search() -> None:
    service = FakeService(5.7)
    outcome = search_capacity(service.measure, _plan(max_points=3, precision=0.01), clock=service.clock)
    assert len(service.points) == 3 and outcome.stopped is not None and "3 points" in outcome.stopped


def test_repeats_bisect_the_sweeps_bracket_again_and_give_a_t_interval() -> None:
    service = FakeService([5.6, 5.9, 5.75])
    plan = _plan(start_rate=1, precision=0.01, repeats=3)
    outcome = search_capacity(service.measure, plan, clock=service.clock)
    assert [r.repeat for r in outcome.repeats] == [1, 2, 3]
    # Only the first repeat sweeps.
    assert {p.repeat for p in service.points if p.phase == "sweep"} == {1}
    knees = [r.knee for r in outcome.repeats]
    assert all(k is not None for k in knees)
    for knee, capacity in zip(knees, [5.6, 5.9, 5.75], strict=True):
        assert knee is not None and capacity / 1.01 <= knee <= capacity
    estimate = outcome.estimate
    assert estimate.method == "t" and estimate.confidence == 0.95
    values = [k for k in knees if k is not None]
    half = 4.303 * np.std(values, ddof=1) / math.sqrt(3)
    assert estimate.value == pytest.approx(np.mean(values))
    assert (estimate.low, estimate.high) == pytest.approx((np.mean(values) - half, np.mean(values) + half))


def test_a_repeat_cut_short_by_the_bound_is_left_out_of_the_estimate() -> None:
    service = FakeService([5.6, 5.9])
    plan = _plan(start_rate=1, precision=0.01, repeats=2, max_points=13)
    outcome = search_capacity(service.measure, plan, clock=service.clock)
    assert [r.repeat for r in outcome.repeats] == [1] and outcome.stopped is not None
    assert outcome.estimate.method == "bracket"
    assert any(p.repeat == 2 for p in service.points)  # measured, kept in the record


def test_knee_estimate_of_one_repeat_is_its_bracket_and_of_none_is_empty() -> None:
    one = knee_estimate([RepeatOutcome(1, knee=4.0, first_fail=4.2)])
    assert (one.value, one.low, one.high, one.method) == (4.0, 4.0, 4.2, "bracket")
    assert knee_estimate([RepeatOutcome(1)]).method == "none"


@pytest.mark.parametrize("confidence", CONFIDENCE_LEVELS)
@pytest.mark.parametrize("df", [1, 2, 4, 9, 19])
def test_the_t_table_holds_its_confidence_on_sampled_t_variates(confidence: float, df: int) -> None:
    draws = np.random.default_rng(df).standard_t(df, size=400_000)
    covered = float(np.mean(np.abs(draws) <= t_quantile(confidence, df)))
    assert covered == pytest.approx(confidence, abs=0.003)


def test_bad_plans_and_specs_are_one_error() -> None:
    with pytest.raises(ConfigError, match="precision"):
        SearchPlan(precision=0)
    with pytest.raises(ConfigError, match="repeats"):
        t_quantile(0.95, 40)
    with pytest.raises(ConfigError, match="confidence"):
        t_quantile(0.8, 3)
    load = LoadSpec(url="http://127.0.0.1:1", rate=1, duration_s=1)
    with pytest.raises(ConfigError, match="leaves no time"):
        CapacitySpec(load=load, point_s=60, max_search_s=30)
    with pytest.raises(ConfigError, match="open-loop"):
        CapacitySpec(load=LoadSpec(url="http://127.0.0.1:1", mode="closed", concurrency=2, duration_s=1))
    with pytest.raises(ConfigError, match="repeats"):
        CapacitySpec(load=load, repeats=0)


# ---- saturation --------------------------------------------------------------------------------------
_CHECK = SaturationCheck(latency_bound_s=5.0)


def _rows(latencies: list[float], rate: float, start: float = 1000.0) -> list[dict[str, object]]:
    return [{"intended_send": start + i / rate, "e2e_s": e, "ok": True} for i, e in enumerate(latencies)]


def test_a_steady_point_is_not_saturated() -> None:
    rng = np.random.default_rng(0)
    rate = 5.0
    history = [(t, int(2 + rng.integers(-1, 2))) for t in np.arange(0.25, 6.0, 0.25)]
    rows = _rows(list(0.35 + rng.normal(0, 0.03, 30)), rate)
    assert saturation_reason(history, rows, rate=rate, now_s=6.0, started_at=1000.0, check=_CHECK) is None


def test_a_growing_backlog_is_saturation() -> None:
    rate = 8.0
    history = [(t, int(1 + 2.3 * t)) for t in np.arange(0.25, 4.0, 0.25)]
    rows = _rows([0.35] * 4, rate)
    reason = saturation_reason(history, rows, rate=rate, now_s=4.0, started_at=1000.0, check=_CHECK)
    assert reason is not None and reason.startswith("backlog growing")


def test_a_growing_latency_is_saturation_even_when_few_are_in_flight() -> None:
    rate = 6.0
    history = [(t, 2) for t in np.arange(0.25, 5.0, 0.25)]
    rows = _rows([0.35 + 0.15 * i / rate for i in range(30)], rate)
    reason = saturation_reason(history, rows, rate=rate, now_s=5.0, started_at=1000.0, check=_CHECK)
    assert reason is not None and reason.startswith("latency growing") and "150 ms per second" in reason


def test_nothing_is_judged_during_the_warm_up() -> None:
    history = [(0.25, 1), (0.5, 3), (0.75, 5)]
    assert saturation_reason(history, [], rate=8, now_s=0.75, started_at=1000.0, check=_CHECK) is None


def test_a_backlog_beyond_littles_bound_stops_at_once() -> None:
    reason = saturation_reason([(0.5, 60)], [], rate=10, now_s=0.5, started_at=1000.0, check=_CHECK)
    assert reason is not None and "Little's bound" in reason


# ---- which SLO broke first ---------------------------------------------------------------------------
def _point(
    index: int, rate: float, *, broken: dict[str, float] | None = None, saturated: bool = False
) -> PointResult:
    slos = [
        SloOutcome(slo=name, objective="o", met=False, sli=0.5, target=0.95, burn_rate=burn, good=1, valid=2)
        for name, burn in (broken or {}).items()
    ]
    return PointResult(
        index=index, repeat=1, phase="sweep", rate=rate, seed=index, run_dir=f"points/{index}",
        started_at=0.0, duration_s=5.0, elapsed_s=5.0, requests=10, ok=10, cancelled=0, sent_rate=rate,
        throughput_rps=rate, goodput_rps=rate, latency={}, slos=slos, failed_slos=sorted(broken or {}),
        saturated=saturated, stopped_early=saturated, saturation="growing" if saturated else None,
        passed=not broken and not saturated,
    )  # fmt: skip


def test_the_limiting_slo_is_the_worst_broken_at_the_lowest_failing_rate_above_the_knee() -> None:
    points = [
        _point(1, 2.0),
        _point(2, 8.0, broken={"availability": 3.0}),
        _point(3, 5.0, broken={"latency": 4.0, "time-to-first-token": 9.0}),
        _point(4, 4.0),
    ]
    assert limiting_slo(points, 4.0) == ("time-to-first-token", 3)
    assert limiting_slo([_point(1, 2.0), _point(2, 3.0, saturated=True)], 2.0) == (SATURATION, 2)
    assert limiting_slo([_point(1, 2.0)], 2.0) == (None, None)
