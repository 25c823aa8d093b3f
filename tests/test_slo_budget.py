"""Error-budget arithmetic, checked against hand computations and the SRE Workbook's own numbers."""

from __future__ import annotations

import math

import pytest

from labkit.measure.slo.alerts import WORKBOOK_ALERTS
from labkit.measure.slo.budget import (
    SLO_WINDOW_30D_S,
    budget_consumed,
    burn_rate,
    error_budget_remaining,
    error_ratio,
    goodput_rps,
    time_to_exhaustion_s,
)

DAY = 86400.0


def test_error_ratio_is_bad_over_valid_and_zero_without_traffic() -> None:
    # 990 good of 1000 valid: (1000 - 990) / 1000 = 0.01
    assert error_ratio(990, 1000) == 0.01
    # integer arithmetic: (500 - 428) / 500 is the double nearest 0.144 (1 - 428/500 is not)
    assert error_ratio(428, 500) == 0.144
    assert error_ratio(0, 0) == 0.0
    with pytest.raises(ValueError, match="good <= valid"):
        error_ratio(11, 10)


def test_burn_rate_is_error_ratio_over_the_budget() -> None:
    # 99 % target: budget 0.01; error ratio 0.01 burns at 1x, 0.144 at 14.4x
    assert burn_rate(0.01, 0.99) == pytest.approx(1.0)
    assert burn_rate(0.144, 0.99) == pytest.approx(14.4)
    # 95 % target: budget 0.05; error ratio 0.25 burns at 0.25 / 0.05 = 5x
    assert burn_rate(0.25, 0.95) == pytest.approx(5.0)
    assert burn_rate(0.0, 0.95) == 0.0
    for bad_target in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            burn_rate(0.1, bad_target)


def test_budget_remaining_for_a_window_of_events() -> None:
    # 1000 valid, target 0.99: budget 10 bad events; 4 bad spent 40 %, 60 % left
    assert error_budget_remaining(996, 1000, 0.99) == pytest.approx(0.6)
    # 25 bad of a 10-event budget: overspent by 150 % -> -1.5
    assert error_budget_remaining(975, 1000, 0.99) == pytest.approx(-1.5)
    assert error_budget_remaining(1000, 1000, 0.99) == 1.0
    assert error_budget_remaining(0, 0, 0.99) == 1.0


def test_budget_consumed_extrapolates_the_runs_rate_to_30_days() -> None:
    # A 10-minute run: 600 valid requests, 6 bad, target 0.99.
    # Rate 1 req/s -> 2,592,000 events in 30 d -> budget 25,920 bad events; 6 / 25,920 = 2.3148e-4.
    # Same as burn (0.01 / 0.01 = 1) * 600 s / 2,592,000 s.
    assert budget_consumed(6, 600, 0.99, duration_s=600) == pytest.approx(6 / 25_920)
    assert budget_consumed(6, 600, 0.99, duration_s=600) == pytest.approx(1.0 * 600 / SLO_WINDOW_30D_S)
    assert budget_consumed(0, 0, 0.99, duration_s=600) == 0.0


def test_budget_consumed_with_an_explicit_window_event_count() -> None:
    # 1,000,000 events in 30 d at 99 %: budget 10,000 bad events; 10 bad spend 0.1 %
    assert budget_consumed(10, 600, 0.99, duration_s=600, events_per_window=1_000_000) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="events_per_window"):
        budget_consumed(10, 600, 0.99, duration_s=600, events_per_window=0)
    with pytest.raises(ValueError, match="positive"):
        budget_consumed(1, 10, 0.99, duration_s=0)


@pytest.mark.parametrize(
    ("factor", "hours", "consumed"),
    # The Workbook's table: burn * window / 30 d.
    [(14.4, 1, 0.02), (6.0, 6, 0.05), (3.0, 24, 0.10), (1.0, 72, 0.10)],
)
def test_workbook_budget_consumption_of_each_alert(factor: float, hours: float, consumed: float) -> None:
    # 10,000 events over the alert's long window at error ratio factor * 0.001 (a 99.9 % SLO)
    valid = 10_000
    bad = round(factor * 0.001 * valid)  # 144, 60, 30, 10
    assert budget_consumed(bad, valid, 0.999, duration_s=hours * 3600) == pytest.approx(consumed)


def test_the_workbook_alerts_state_their_budget_consumption() -> None:
    for alert in WORKBOOK_ALERTS:
        # factor * long window / 30 d
        assert alert.factor * alert.long_window_s / SLO_WINDOW_30D_S == pytest.approx(alert.budget_consumed)


@pytest.mark.parametrize(
    ("burn", "days"),
    # The Workbook: 1 spends a 30-day budget in 30 days; 14.4 in 30 / 14.4 = 2.083 d (50 h); 6 in 5; 3 in 10.
    [(1.0, 30.0), (14.4, 30 / 14.4), (6.0, 5.0), (3.0, 10.0)],
)
def test_time_to_exhaustion(burn: float, days: float) -> None:
    assert time_to_exhaustion_s(burn) / DAY == pytest.approx(days)


def test_time_to_exhaustion_edges() -> None:
    assert time_to_exhaustion_s(14.4) == pytest.approx(50 * 3600)
    # half the budget left at 2x: 30 d * 0.5 / 2 = 7.5 d
    assert time_to_exhaustion_s(2.0, budget_remaining=0.5) / DAY == pytest.approx(7.5)
    assert math.isinf(time_to_exhaustion_s(0.0))
    assert time_to_exhaustion_s(3.0, budget_remaining=-0.2) == 0.0
    with pytest.raises(ValueError):
        time_to_exhaustion_s(-1.0)


def test_goodput_is_good_requests_per_second() -> None:
    # 45 requests met every SLO in a 150 s run: 0.3 req/s
    assert goodput_rps(45, 150.0) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        goodput_rps(1, 0.0)
