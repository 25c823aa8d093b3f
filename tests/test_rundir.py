from __future__ import annotations

from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.rundir import RunDirectory, RunFile, new_run_id, run_start_of


def test_run_ids_sort_by_time_and_name_the_scenario() -> None:
    first, second = new_run_id("kill and recover"), new_run_id("kill and recover")
    assert first.endswith("-kill-and-recover")
    assert first <= second


def test_bad_run_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabkitError, match="run id"):
        RunDirectory.create(tmp_path, "x", run_id="../escape")


def test_jsonl_is_appended_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path, "t")
    with run.jsonl_writer("requests.jsonl") as write:
        write({"i": 1})
        write({"i": 2})
    with open(run.file("requests.jsonl"), "a") as fh:
        fh.write('{"i": 3')  # a crash in the middle of a line
    assert [r["i"] for r in run.read_jsonl("requests.jsonl")] == [1, 2]
    assert list(run.read_jsonl("missing.jsonl")) == []


def test_journal_has_wall_clock_and_monotonic_times(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path, "t")
    run.journal("fault_start", target="model")
    (event,) = run.read_jsonl(RunFile.EVENTS)
    assert event["kind"] == "fault_start" and event["target"] == "model"
    assert event["wall_time"] > 1.6e9 and event["monotonic"] > 0


def test_json_files_are_written_whole(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path, "t")
    run.write_json(RunFile.PARAMS, {"rate": 2.0})
    assert run.read_json(RunFile.PARAMS) == {"rate": 2.0}


def test_run_start_is_the_earliest_event_or_send() -> None:
    requests = [{"intended_send": 5.0}, {"intended_send": 3.0}, {"intended_send": None}]
    assert run_start_of([{"wall_time": 4.0}, {"kind": "x"}], requests) == 3.0
    assert run_start_of([{"wall_time": 2.0}], requests) == 2.0
    assert run_start_of([], []) is None
