"""The run directory's owner (labkit.rundir): its files and journal, the schema version, and run directories
written by labkit 0.1.0 still read the same."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import labkit
from labkit.errors import LabkitError
from labkit.rundir import (
    INDEX_FILE,
    SCHEMA_VERSION,
    EventKind,
    RunDirectory,
    RunFile,
    new_run_id,
    run_start_of,
)


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
    run.journal(EventKind.FAULT_START, target="model")
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


# ---- the owner of the run directory -----------------------------------------------------------------------

V1_RUNS = Path(__file__).parent / "data" / "runs_v1"  # written by labkit 0.1.0 (`make run`, a sim quick run)


def test_a_new_run_directory_is_stamped_with_the_schema_version(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path, "baseline")
    assert run.schema_version == SCHEMA_VERSION == 2
    assert run.read_run_record() == {"run_id": run.run_id, "scenario": "baseline", "schema_version": 2}
    run.write_run_record({"status": "completed"})  # later fields join the stamp
    assert run.read_run_record()["status"] == "completed" and run.schema_version == 2
    adopted = RunDirectory.adopt(tmp_path / "given", "kill_and_recover")
    assert adopted.schema_version == 2 and adopted.holds_run() == []


def test_a_broken_line_is_named_not_fatal_when_problems_are_collected(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path, "t")
    run.file(RunFile.EVENTS).write_text(
        '{"kind": "load_started"}\nnot json\n[1]\n{"kind": "load_finished"}\n{"ki'
    )
    problems: list[str] = []
    assert [e["kind"] for e in run.read_jsonl(RunFile.EVENTS, problems)] == ["load_started", "load_finished"]
    assert problems == [
        "events.jsonl:2: not JSON; line skipped",
        "events.jsonl:3: not a JSON object; line skipped",
    ]
    with pytest.raises(ValueError):
        list(run.read_jsonl(RunFile.EVENTS))


@pytest.mark.parametrize("run_dir", sorted(V1_RUNS.iterdir()), ids=lambda p: p.name.split("-", 1)[1])
def test_a_run_directory_written_by_labkit_0_1_0_reads_as_before(run_dir: Path) -> None:
    from labkit.report import RunData, headline, index_entry, report_figures

    run = RunDirectory(run_dir)
    assert run.schema_version == 1  # no stamp: the layout of labkit 0.1.0
    assert {e["kind"] for e in run.events()} <= {kind.value for kind in EventKind}
    data = RunData.load(run_dir)
    assert data.problems == () and data.missing == []
    assert data.status == "completed" and data.verdict == "held"  # 0.1's "completed"
    assert len(data.samples) == len(list(run.read_jsonl(RunFile.REQUESTS))) > 0
    assert len(data.recovery) == len(data.faults) == 1
    assert headline(data)["requests"] == len(data.samples)
    entry = index_entry(run_dir)
    assert entry.problems == [] and entry.verdict == "held"
    assert len(report_figures(data)) >= 5  # every figure of the report draws from the files


def test_no_module_but_rundir_spells_a_run_file_name() -> None:
    """Every file of a run is named in labkit/rundir.py; elsewhere it is RunFile.X (docstrings may say it).
    (The folders' names, `prometheus` and `steady_state`, also name a service and a setting: not checked.)"""
    names = {str(f) for f in RunFile} | {INDEX_FILE}
    package = Path(labkit.__file__).parent
    spelled = []
    for path in package.rglob("*.py"):
        if path.name == "rundir.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                spelled.append(f"{path.relative_to(package)}:{node.lineno}: {node.value!r}")
    assert spelled == [], "use labkit.rundir's RunFile/RunFolder instead:\n" + "\n".join(spelled)
