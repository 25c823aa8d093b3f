"""The remediation A/B in a run's report, headline and index, from a hand-made remediation_ab.json: tables
with units and counts, the figure's points and caption, the section only for an A/B run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from labkit.measure.remediation_ab import AB_TEST_MEASURE, AbArm, AbTest, analyze_arms
from labkit.report import (
    AB_DIFFERENCE_COLUMNS,
    AB_TABLE_COLUMNS,
    RunData,
    ab_difference_table,
    ab_figure,
    ab_section,
    ab_table,
    headline,
    index_entry,
)
from labkit.rundir import RunDirectory, RunFile

TEST = AbTest(resamples=2000, seed=1)


def _arm(order: int, on: bool, from_start: float, *, censored: bool = False) -> AbArm:
    row = {
        "fault_id": "f1",
        "kind": "latency",
        "noticed": True,
        "censored": censored,
        "time_to_detect_s": 1.5,
        AB_TEST_MEASURE: from_start,
        "requests_lost": 9 if on else 0,
        "budget_burned": 1.5 if on else 2.5,
    }
    return AbArm(
        order=order,
        kind="latency",
        remediation=on,
        run_dir=f"arms/{order:02d}-latency-{'on' if on else 'off'}",
        verdict="not checked",
        remediation_actions=int(on),
        rows=[row],
    )


def _ab_run(tmp_path: Path) -> RunData:
    values = [10.2, 6.6, 10.1, 7.1, 10.3, 5.4]
    arms = [_arm(i + 1, i % 2 == 1, v) for i, v in enumerate(values)]
    run = RunDirectory.create(tmp_path, "remediation_ab")
    run.write_json(
        RunFile.REMEDIATION_AB,
        {
            "complete": True,
            "order": "interleaved: off, on, off, on, ... per fault kind",
            "runs_per_arm": 3,
            "off_arm": "the same remediation loop in dry run",
            "test": TEST.as_dict(),
            "arms": [a.as_dict() for a in arms],
            "kinds": analyze_arms(arms, TEST),
        },
    )
    return RunData.load(run.path)


def test_the_table_gives_each_arm_s_median_spread_and_count_with_units(tmp_path: Path) -> None:
    table = ab_table(_ab_run(tmp_path))
    assert list(table.columns) == list(AB_TABLE_COLUMNS)
    assert table["remediation"].tolist() == ["off", "on"]
    on = table.iloc[1]
    assert on["time to recover from the fault's start median (ms)"] == pytest.approx(6600)
    assert on["time to recover from the fault's start IQR (ms)"] == "6000 to 6850"
    assert on["time to recover from the fault's start n"] == 3
    assert on["error budget burned median (\u00d7)"] == pytest.approx(1.5)
    assert (on["runs"], on["restarts"], on["not recovered by the end"]) == (3, 3, 0)
    assert "<th" in table.to_html_for_people() and "index" not in table.to_html_for_people()


def test_the_differences_carry_their_interval_and_the_verdict(tmp_path: Path) -> None:
    table = ab_difference_table(_ab_run(tmp_path))
    assert list(table.columns) == list(AB_DIFFERENCE_COLUMNS)
    (row,) = table.to_dict("records")
    assert row["verdict"] == "helps"
    assert row["time to recover from the fault's start: on \u2212 off (ms)"] == pytest.approx(
        (6.6 + 7.1 + 5.4 - 10.2 - 10.1 - 10.3) / 3 * 1000
    )
    low, high = (float(x) for x in row["time to recover from the fault's start: interval (ms)"].split(" to "))
    assert low < high < 0
    assert row["requests lost: on \u2212 off (requests)"] == pytest.approx(9)
    assert "below -1 s" in row["why"]


def test_the_figure_draws_every_run_and_the_medians_and_says_so(tmp_path: Path) -> None:
    fig = ab_figure(_ab_run(tmp_path))
    ax = fig.axes[1]  # time to recover from the fault's start
    points = {line.get_gid(): line.get_ydata() for line in ax.get_lines() if line.get_gid()}
    assert sorted(points["ab:latency:on"]) == pytest.approx([5400, 6600, 7100])
    assert len(points["ab:latency:off"]) == 3
    assert "Points: time to detect, latency remediation off: 3 run(s)" in fig.caption
    assert "latency remediation on: 3 run(s) as filled olive points, median 6600 ms" in fig.caption
    assert "n=3" in [t.get_text() for t in ax.texts]
    assert fig.alt.startswith("Remediation A/B")


def test_headline_and_index_show_the_verdict_and_the_mttr_difference(tmp_path: Path) -> None:
    run = _ab_run(tmp_path)
    numbers = headline(run)
    assert numbers["ab_verdicts"] == {"latency": "helps"}
    assert numbers["mttr_difference_s"]["latency"] == pytest.approx((6.6 + 7.1 + 5.4 - 30.6) / 3)
    assert numbers["mttr_difference_low_s"]["latency"] < numbers["mttr_difference_high_s"]["latency"] < 0
    entry = index_entry(run.path)
    (cell,) = entry.ab_verdicts
    assert cell.text.startswith("latency: helps, -3") and cell.tone == "good"
    assert "interval" in cell.title


def test_a_run_that_is_not_an_a_b_has_no_section_and_empty_tables(tmp_path: Path) -> None:
    run = RunData.load(RunDirectory.create(tmp_path, "baseline").path)
    assert ab_section(run) is None
    assert ab_table(run).empty and ab_difference_table(run).empty
    assert "not an A/B" in ab_figure(run).caption
    assert index_entry(run.path).ab_verdicts == []
    assert headline(run)["ab_verdicts"] is None


def test_the_section_states_the_test_and_a_partial_a_b_says_so(tmp_path: Path) -> None:
    run = _ab_run(tmp_path)
    section = ab_section(run)
    assert section is not None
    html = section._repr_html_()
    assert "<h2>Remediation A/B</h2>" in html and "percentile bootstrap" in html and "<svg" not in html
    assert "latency: helps" in html and "did not finish" not in html
    record = RunDirectory(run.path).read_json(RunFile.REMEDIATION_AB)
    RunDirectory(run.path).write_json(RunFile.REMEDIATION_AB, {**record, "complete": False})
    partial = ab_section(RunData.load(run.path))
    assert partial is not None and "did not finish" in partial._repr_html_()


def test_a_censored_arm_shows_its_count(tmp_path: Path) -> None:
    arms = [_arm(i + 1, i % 2 == 1, 8.0, censored=i % 2 == 1) for i in range(6)]
    run = RunDirectory.create(tmp_path, "remediation_ab")
    run.write_json(
        RunFile.REMEDIATION_AB,
        {"complete": True, "order": "interleaved", "runs_per_arm": 3, "off_arm": "dry run",
         "test": TEST.as_dict(), "arms": [a.as_dict() for a in arms], "kinds": analyze_arms(arms, TEST)},
    )  # fmt: skip
    table = ab_table(RunData.load(run.path))
    assert table["not recovered by the end"].tolist() == [0, 3]
    assert not math.isnan(table["time to recover from the fault's start median (ms)"].iloc[1])
