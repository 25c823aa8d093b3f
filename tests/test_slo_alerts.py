"""Multi-window, multi-burn-rate alert evaluation (SRE Workbook) and the window scaling of short runs."""

from __future__ import annotations

import pytest

from labkit.measure.slo.alerts import (
    ALERT_WINDOWS,
    WORKBOOK_ALERTS,
    alert_threshold,
    evaluate_alerts,
    scale_alert_windows,
)
from labkit.measure.slo.spec import Objective


def _ratios(**overrides: float) -> dict[str, float]:
    ratios = dict.fromkeys(ALERT_WINDOWS, 0.0)
    ratios.update({k.removeprefix("w"): v for k, v in overrides.items()})
    return ratios


def _firing(states: list) -> set[tuple[str, str]]:
    return {(s.long_window, s.short_window) for s in states if s.firing}


def test_thresholds_are_factor_times_budget_without_float_noise() -> None:
    # 99 %: budget 0.01 -> 0.144, 0.06, 0.03, 0.01; 95 %: budget 0.05 -> 0.72, 0.3, 0.15, 0.05
    assert [alert_threshold(a.factor, 0.99) for a in WORKBOOK_ALERTS] == [0.144, 0.06, 0.03, 0.01]
    assert [alert_threshold(a.factor, 0.95) for a in WORKBOOK_ALERTS] == [0.72, 0.3, 0.15, 0.05]


@pytest.mark.parametrize(
    ("long", "short", "fires"),
    [
        # target 0.99: the 1h/5m page needs error ratio >= 0.144 over BOTH windows
        (0.20, 0.20, True),
        (0.144, 0.144, True),  # a sustained 14.4x burn is on the threshold: it pages
        (0.20, 0.10, False),  # the burn stopped: the short window ends the page
        (0.10, 0.20, False),  # a short spike: not significant over the hour
        (0.1439, 0.50, False),
        (0.0, 0.0, False),
    ],
)
def test_the_page_pair_needs_both_windows(long: float, short: float, fires: bool) -> None:
    states = evaluate_alerts(_ratios(w1h=long, w5m=short), Objective(displayName="x", target=0.99))
    page = next(s for s in states if s.long_window == "1h")
    assert page.firing is fires
    assert page.severity == "page" and page.factor == 14.4
    assert page.long_burn_rate == pytest.approx(long / 0.01)


def test_truth_table_over_all_four_pairs() -> None:
    # Sustained error ratio 0.07 at 99 % = burn 7: over 6 (page 6h/30m), 3 and 1 (tickets), under 14.4.
    states = evaluate_alerts(dict.fromkeys(ALERT_WINDOWS, 0.07), 0.99)
    assert _firing(states) == {("6h", "30m"), ("1d", "2h"), ("3d", "6h")}
    # Burn exactly 1 everywhere: only the 1x ticket (>= 10 % of the budget in 3 days).
    assert _firing(evaluate_alerts(dict.fromkeys(ALERT_WINDOWS, 0.01), 0.99)) == {("3d", "6h")}
    # Burn 0.5: nothing.
    assert _firing(evaluate_alerts(dict.fromkeys(ALERT_WINDOWS, 0.005), 0.99)) == set()
    # Every short window (5m, 30m, 2h, 6h) cold, the other long windows (1h, 1d, 3d) hot: nothing.
    cold_short = _ratios(w1h=1.0, w1d=1.0, w3d=1.0)
    assert _firing(evaluate_alerts(cold_short, 0.99)) == set()


def test_no_events_never_fire_and_missing_windows_are_errors() -> None:
    assert _firing(evaluate_alerts(dict.fromkeys(ALERT_WINDOWS, float("nan")), 0.99)) == set()
    ratios = _ratios()
    del ratios["5m"]
    with pytest.raises(ValueError, match="5m"):
        evaluate_alerts(ratios, 0.99)


def test_window_scaling_is_run_over_slo_window_and_says_so() -> None:
    # A 10-minute run against 30 days: scale 600 / 2,592,000 = 1/4320; 3d -> 60 s, 1h -> 0.8333 s
    scaling = scale_alert_windows(600.0)
    assert scaling.scale == pytest.approx(1 / 4320)
    assert scaling.windows_s["3d"] == pytest.approx(60.0)
    assert scaling.windows_s["1h"] == pytest.approx(3600 / 4320)
    assert set(scaling.windows_s) == set(ALERT_WINDOWS)
    text = scaling.describe()
    assert "scaled" in text and "3d -> 60 s" in text
    with pytest.raises(ValueError):
        scale_alert_windows(0.0)
