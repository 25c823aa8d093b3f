"""labkit.measure.resilience: per-kind spreads and the bootstrap difference the A/B and the scorecard use."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from labkit.measure.resilience import bootstrap_difference, spread, summarize_by_kind


def test_spread_is_the_median_and_interquartile_range_of_the_numbers_only() -> None:
    result = spread([4.0, None, 1.0, float("nan"), 3.0, 2.0])
    assert (result.n, result.median, result.low, result.high) == (4, 2.5, 1.75, 3.25)
    assert spread([]).median is None and spread([None]).n == 0
    assert spread([7]).as_dict() == {"n": 1, "median": 7.0, "low": 7.0, "high": 7.0}


def test_summarize_by_kind_counts_faults_and_each_measures_own_values() -> None:
    recovery = pd.DataFrame(
        [
            {
                "kind": "kill",
                "time_to_detect_s": 1.0,
                "time_to_recover_s": 4.0,
                "requests_lost": 3,
                "budget_burned": 0.5,
            },
            {
                "kind": "kill",
                "time_to_detect_s": 2.0,
                "time_to_recover_s": None,
                "requests_lost": 1,
                "budget_burned": 0.25,
            },
            {
                "kind": "latency",
                "time_to_detect_s": None,
                "time_to_recover_s": None,
                "requests_lost": 0,
                "budget_burned": 0.0,
            },
        ]
    )
    table = summarize_by_kind(recovery).set_index("kind")
    assert list(table.index) == ["kill", "latency"]
    assert table.loc["kill", "faults"] == 2
    assert (
        table.loc["kill", "time_to_recover_s_n"] == 1 and table.loc["kill", "time_to_recover_s_median"] == 4.0
    )
    assert table.loc["kill", "requests_lost_median"] == 2.0
    assert table.loc["latency", "time_to_detect_s_n"] == 0
    assert summarize_by_kind(pd.DataFrame()).empty


def test_bootstrap_difference_finds_a_clear_gap_and_is_seeded() -> None:
    off, on = [10.0, 11.0, 12.0, 10.5, 11.5], [2.0, 2.5, 3.0, 2.2, 2.8]
    diff = bootstrap_difference(off, on, seed=3)
    assert diff.difference == pytest.approx(2.5 - 11.0)
    assert diff.low is not None and diff.high is not None
    assert diff.low <= diff.difference <= diff.high < 0 and diff.excludes_zero
    assert bootstrap_difference(off, on, seed=3) == diff
    assert (diff.n_a, diff.n_b, diff.confidence) == (5, 5, 0.95)


def test_bootstrap_difference_of_overlapping_groups_includes_zero() -> None:
    diff = bootstrap_difference([1.0, 5.0, 2.0, 6.0], [2.0, 4.0, 6.0, 1.0], seed=0)
    assert diff.low is not None and diff.high is not None
    assert diff.low < 0 < diff.high and not diff.excludes_zero


def test_bootstrap_difference_without_values_says_nothing() -> None:
    diff = bootstrap_difference([], [1.0])
    assert diff.difference is None and diff.low is None and not diff.excludes_zero and diff.mean_b == 1.0
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_difference([1.0], [2.0], confidence=1.0)
    assert not math.isnan(bootstrap_difference([1.0], [2.0]).difference or math.nan)


def test_summarize_by_kind_counts_the_runs_behind_each_figure_when_told_which_column_names_them() -> None:
    recovery = pd.DataFrame(
        [
            {"run_id": "a", "kind": "kill", "time_to_detect_s": 1.0, "time_to_recover_s": None},
            {"run_id": "a", "kind": "kill", "time_to_detect_s": 2.0, "time_to_recover_s": 5.0},
            {"run_id": "b", "kind": "kill", "time_to_detect_s": 3.0, "time_to_recover_s": float("nan")},
        ]
    )
    measures = ("time_to_detect_s", "time_to_recover_s")
    row = summarize_by_kind(recovery, measures, run_column="run_id").iloc[0]
    assert (row["faults"], row["runs"]) == (3, 2)
    assert (row["time_to_detect_s_n"], row["time_to_detect_s_runs"]) == (3, 2)
    assert (row["time_to_recover_s_n"], row["time_to_recover_s_runs"]) == (1, 1)  # NaN and None: no value
    assert "runs" not in summarize_by_kind(recovery, measures).columns  # unchanged without run_column
    assert list(summarize_by_kind(pd.DataFrame(), measures, run_column="run_id").columns)[:3] == [
        "kind",
        "faults",
        "runs",
    ]
