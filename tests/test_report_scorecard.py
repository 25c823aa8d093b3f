"""labkit.report.scorecard and `labkit scorecard` on hand-made reports folders: figures per fault kind, the
remediation split, which runs count (--last, --scenario, --since, A/B arms), broken runs left out with a note,
the fallbacks to the journal, and the index's section."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from labkit.cli import cli
from labkit.report import DEFAULT_LAST, SCORECARD_COLUMNS, RunData, render_index, scorecard
from labkit.rundir import RunDirectory, RunFile, RunFolder
from tests.test_report_data import write_chaos_run

POLICY = {"target": "wrapper", "action": "restart", "threshold_s": 1.0, "dry_run": False}
ABSENT = object()  # params.json without a remediation key


def fault(kind: str, detect: float | None, recover: float | None, lost: int, burned: float | None,
          fault_id: str = "f1") -> dict[str, Any]:  # fmt: skip
    return {"fault_id": fault_id, "kind": kind, "target": "model", "start": 0.0, "end": 0.0,
            "detected": None, "recovered": None, "time_to_detect_s": detect, "time_to_recover_s": recover,
            "requests_lost": lost, "requests_slow": 0, "requests_in_window": 10,
            "budget_burned": burned}  # fmt: skip


def write_measured_run(parent: Path, run_id: str, faults: list[dict[str, Any]], *,
                       remediation: Any = None, scenario: str = "kill_and_recover") -> Path:  # fmt: skip
    """A run whose experiment recorded its recovery measures (experiment.json), as `labkit run` leaves it."""
    run = RunDirectory.create(parent, scenario, run_id=run_id)
    params: dict[str, Any] = {"scenario": scenario}
    if remediation is not ABSENT:
        params["remediation"] = remediation
    run.write_json(RunFile.PARAMS, params)
    run.write_json(
        RunFile.EXPERIMENT, {"verdict": "held", "recovery": {"slow_threshold_s": 1.0, "faults": faults}}
    )
    return run.path


def _row(card: Any, remediation: str, kind: str) -> dict[str, Any]:
    table = card.table
    match = table[(table["remediation"] == remediation) & (table["kind"] == kind)]
    assert len(match) == 1, table
    return dict(match.iloc[0])


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    runs = tmp_path / "reports" / "runs"
    write_measured_run(runs, "20240101T100000.00Z-kill_and_recover", [fault("kill", 1.0, 4.0, 3, 0.5)])
    write_measured_run(
        runs,
        "20240102T100000.00Z-kill_and_recover",
        [fault("kill", 2.0, 6.0, 5, 1.0), fault("kill", 3.0, None, 7, 1.5, "f2"),
         fault("pause", None, None, 0, 0.0, "f3")],
    )  # fmt: skip
    write_measured_run(
        runs, "20240103T100000.00Z-random_chaos", [fault("kill", 4.0, 8.0, 9, 2.0)], scenario="random_chaos"
    )
    RunDirectory.create(runs, "baseline", run_id="20240104T100000.00Z-baseline")  # no faults: not counted
    return tmp_path / "reports"


def test_figures_per_kind_are_medians_with_their_spread_and_counts(reports: Path) -> None:
    card = scorecard(reports)
    assert card.top_level == 3 and len(card.runs) == 3 and card.skipped == ()
    kill = _row(card, "off", "kill")
    assert (kill["faults"], kill["runs"]) == (4, 3)
    assert kill["time_to_detect_s_median"] == 2.5  # 1, 2, 3, 4
    assert (kill["time_to_detect_s_low"], kill["time_to_detect_s_high"]) == (1.75, 3.25)
    # one kill never recovered: 3 values from 3 runs
    assert (
        kill["time_to_recover_s_n"],
        kill["time_to_recover_s_runs"],
        kill["time_to_recover_s_median"],
    ) == (3, 3, 6.0)
    pause = _row(card, "off", "pause")
    assert (pause["faults"], pause["runs"], pause["time_to_detect_s_n"], pause["time_to_detect_s_runs"]) == (
        1,
        1,
        0,
        0,
    )
    rows = {(r.remediation, r.kind): r for r in card.rows}
    cells = dict(zip(SCORECARD_COLUMNS[4:], rows[("off", "kill")].cells, strict=True))
    assert (
        cells["time to detect (ms)"].text == "2,500 (1,750\u20133,250)"
        and cells["time to detect (ms)"].note == ""
    )
    assert cells["time to recover (ms)"].note == "3 of 4 faults, 3 runs"
    assert cells["budget burned (%)"].text == "125 (87.5\u2013162.5)"
    assert (
        rows[("off", "pause")].cells[0].text == "\u2013"
        and rows[("off", "pause")].cells[0].note == "none of 1 fault"
    )


def test_remediation_splits_the_table_and_a_dry_run_counts_as_off(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_measured_run(runs, "20240101T100000.00Z-a", [fault("latency", 1.0, 30.0, 2, 0.4)], remediation=None)
    write_measured_run(runs, "20240102T100000.00Z-b", [fault("latency", 1.0, 20.0, 2, 0.4)],
                       remediation={**POLICY, "dry_run": True})  # fmt: skip
    write_measured_run(
        runs, "20240103T100000.00Z-c", [fault("latency", 1.0, 2.0, 1, 0.1)], remediation=POLICY
    )
    write_measured_run(
        runs, "20240104T100000.00Z-d", [fault("latency", 1.0, 5.0, 1, 0.1)], remediation=ABSENT
    )
    card = scorecard(tmp_path)
    assert list(card.table["remediation"]) == ["off", "on", "unknown"]
    assert _row(card, "off", "latency")["time_to_recover_s_median"] == 25.0
    assert _row(card, "on", "latency")["time_to_recover_s_median"] == 2.0
    assert {r.run_id: r.remediation for r in card.runs} == {
        "20240101T100000.00Z-a": "off", "20240102T100000.00Z-b": "off",
        "20240103T100000.00Z-c": "on", "20240104T100000.00Z-d": "unknown",
    }  # fmt: skip
    assert "split by remediation" in card.caption() and "unknown where the run does not say" in card.caption()


def test_experiment_json_says_when_params_json_does_not(tmp_path: Path) -> None:
    path = write_measured_run(tmp_path / "runs", "20240101T100000.00Z-a", [fault("kill", 1.0, 2.0, 1, 0.1)],
                              remediation=ABSENT)  # fmt: skip
    record = json.loads((path / RunFile.EXPERIMENT).read_text())
    (path / RunFile.EXPERIMENT).write_text(
        json.dumps({**record, "remediation": {"policy": POLICY, "actions": []}})
    )
    assert [r.remediation for r in scorecard(tmp_path).runs] == ["on"]


def test_broken_and_partial_runs_are_left_out_with_a_note(reports: Path) -> None:
    runs = reports / "runs"
    torn = RunDirectory.create(runs, "kill_and_recover", run_id="20240105T100000.00Z-torn")
    torn.file(RunFile.EXPERIMENT).write_text('{"recovery": {"faults": [')
    partial = RunDirectory.create(runs, "kill_and_recover", run_id="20240106T100000.00Z-partial")
    partial.append_jsonl(
        RunFile.EVENTS, {"kind": "fault_start", "wall_time": 1.0, "fault_id": "f1", "fault_kind": "kill"}
    )
    (runs / "20240107T100000.00Z-unreadable").mkdir()
    (runs / "20240107T100000.00Z-unreadable" / RunFile.EVENTS).mkdir()  # a folder where a file should be
    card = scorecard(reports)
    assert card.top_level == 3  # the three good runs, as before
    notes = "\n".join(card.skipped)
    assert "20240105T100000.00Z-torn: experiment.json: unreadable" in notes
    assert "20240106T100000.00Z-partial: partial: its experiment never finished" in notes
    assert "20240107T100000.00Z-unreadable: events.jsonl: unreadable" in notes
    assert "3 run directories left out" in card.caption()


def test_a_run_without_recorded_measures_is_measured_from_its_journal_and_samples(tmp_path: Path) -> None:
    path = write_chaos_run(tmp_path / "runs")  # no experiment.json; its journal finished; remediation on
    card = scorecard(tmp_path)
    assert [(r.source, r.remediation, r.faults) for r in card.runs] == [("the journal and samples", "on", 3)]
    expected = RunData.load(path).recovery.set_index("kind")
    assert _row(card, "on", "kill")["time_to_detect_s_median"] == pytest.approx(
        expected.loc["kill", "time_to_detect_s"]
    )
    assert _row(card, "on", "latency")["requests_lost_median"] == 0


def test_the_journals_recovery_events_come_before_loading_the_run(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path / "runs", "kill_and_recover", run_id="20240101T100000.00Z-k")
    row = fault("kill", 0.5, 3.0, 4, 0.2)
    row["fault_kind"] = row.pop("kind")
    run.append_jsonl(
        RunFile.EVENTS, {"kind": "fault_start", "wall_time": 1.0, "fault_id": "f1", "fault_kind": "kill"}
    )
    run.append_jsonl(RunFile.EVENTS, {"kind": "recovery", "wall_time": 9.0, **row})  # then the process died
    card = scorecard(tmp_path)
    assert [r.source for r in card.runs] == ["the journal"]
    assert _row(card, "unknown", "kill")["time_to_recover_s_median"] == 3.0


def test_last_scenario_and_since_choose_the_runs(reports: Path) -> None:
    newest_two = scorecard(reports, last=2)  # the baseline without faults does not use up one of the two
    assert [r.run_id[:8] for r in newest_two.runs] == ["20240103", "20240102"] and newest_two.last == 2
    only = scorecard(reports, scenario="random_chaos")
    assert [r.scenario for r in only.runs] == [
        "random_chaos"
    ] and "of scenario random_chaos" in only.caption()
    since = scorecard(reports, since=datetime(2024, 1, 2))
    assert [r.run_id[:8] for r in since.runs] == ["20240103", "20240102"]
    assert (
        "from 2024-01-02 to 2024-01-03" in since.caption() and "since 2024-01-02 00:00 UTC" in since.caption()
    )
    assert scorecard(reports, scenario="capacity").empty


def test_each_arm_of_an_ab_run_is_a_run_and_capacity_points_are_not_read(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    ab = RunDirectory.create(runs, "remediation_ab", run_id="20240102T100000.00Z-remediation_ab")
    arms = ab.file(RunFolder.ARMS)
    for i, remediation in enumerate([None, POLICY, None, POLICY]):
        recover = 30.0 if remediation is None else 3.0
        write_measured_run(
            arms, f"{i:02d}", [fault("latency", 1.0, recover + i, 1, 0.1)], remediation=remediation
        )
    capacity = RunDirectory.create(runs, "capacity", run_id="20240103T100000.00Z-capacity")
    write_measured_run(capacity.file(RunFolder.POINTS), "01", [fault("kill", 1.0, 2.0, 1, 0.1)])
    write_measured_run(runs, "20240101T100000.00Z-kill_and_recover", [fault("latency", 2.0, 40.0, 1, 0.1)])
    card = scorecard(tmp_path, last=1)  # the A/B run is one of the last runs, with all its arms
    assert card.top_level == 1 and [r.run_id for r in card.runs] == [
        f"20240102T100000.00Z-remediation_ab/arms/{i:02d}" for i in range(4)
    ]
    assert (_row(card, "off", "latency")["runs"], _row(card, "on", "latency")["runs"]) == (2, 2)
    assert _row(card, "on", "latency")["time_to_recover_s_median"] == 5.0  # arms 01 and 03: 4 and 6 s
    assert _row(card, "off", "latency")["time_to_recover_s_median"] == 31.0  # arms 00 and 02: 30 and 32 s
    assert "4 experiments: each arm of an A/B run counts as a run" in card.caption()
    assert "kill" not in set(scorecard(tmp_path).table["kind"])  # the capacity point was not looked into


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, ["scorecard", *args])


def test_cli_prints_the_table_with_units_and_spread(reports: Path) -> None:
    result = _cli("--reports", str(reports))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Resilience scorecard"
    assert re.split(r"\s{2,}", lines[1]) == list(SCORECARD_COLUMNS)
    kill = next(line for line in lines if line.startswith("off") and " kill " in line)
    assert re.split(r"\s{2,}", kill)[:5] == ["off", "kill", "3", "4", "2,500 (1,750\u20133,250)"]
    assert "[3 of 4 faults, 3 runs]" in kill
    assert "The latest 3 runs with recovery measures" in result.stdout


def test_cli_json_carries_every_figure_and_the_selection(reports: Path) -> None:
    result = _cli("--reports", str(reports), "--last", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["selection"] == {"last": 1, "scenario": None, "since": None}
    assert data["units"]["time_to_recover_s"] == "s"
    [row] = data["rows"]
    assert row["kind"] == "kill" and row["remediation"] == "off" and (row["runs"], row["faults"]) == (1, 1)
    assert row["time_to_detect_s"] == {"median": 4.0, "low": 4.0, "high": 4.0, "n": 1, "runs": 1}
    assert [r["run_id"] for r in data["runs"]] == ["20240103T100000.00Z-random_chaos"]


def test_cli_without_runs_says_what_to_run_and_exits_0(tmp_path: Path) -> None:
    result = _cli("--reports", str(tmp_path / "nothing"))
    assert result.exit_code == 0
    assert "run a chaos scenario first: labkit run kill_and_recover" in result.stdout
    assert json.loads(_cli("--reports", str(tmp_path), "--json").stdout)["rows"] == []


def test_cli_checks_its_options_before_reading_anything(tmp_path: Path) -> None:
    assert _cli("--reports", str(tmp_path), "--last", "0").exit_code == 2
    assert _cli("--reports", str(tmp_path), "--since", "yesterday").exit_code == 2
    help_text = _cli("--help").stdout
    assert f"(default {DEFAULT_LAST})" in help_text  # the help says the module's default


def test_the_index_shows_the_scorecard_above_the_runs(reports: Path) -> None:
    torn = RunDirectory.create(reports / "runs", "kill_and_recover", run_id="20240105T100000.00Z-torn")
    torn.file(RunFile.EXPERIMENT).write_text("{")
    page = render_index(reports)
    section = page.split('<section id="scorecard"', 1)[1].split("</section>", 1)[0]
    assert page.index('id="scorecard"') < page.index('<table id="runs">')
    assert "Resilience scorecard" in section
    headers = re.findall(r'<th scope="col">(.*?)</th>', section)
    assert headers == list(SCORECARD_COLUMNS)
    assert "2,500 (1,750\u20133,250)" in section and "3 of 4 faults, 3 runs" in section
    assert "The latest 3 runs with recovery measures" in section
    assert "left out of the scorecard: 20240105T100000.00Z-torn: experiment.json: unreadable" in section


def test_the_index_without_chaos_runs_says_what_to_run(tmp_path: Path) -> None:
    RunDirectory.create(tmp_path / "runs", "baseline", run_id="20240104T100000.00Z-baseline")
    section = render_index(tmp_path).split('<section id="scorecard"', 1)[1].split("</section>", 1)[0]
    assert "<table" not in section and "labkit run kill_and_recover" in section
