"""labkit.report.data on hand-made run directories: a whole chaos run, partial runs and broken files.

`write_chaos_run` builds the synthetic run the other tests/test_report_*.py files use (times in its comments).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labkit.measure.prom import save_series
from labkit.measure.slo import evaluate_client_slos, load_slo_spec
from labkit.report import ReportError, RunData, newest_run
from labkit.rundir import RunDirectory, RunFile

T0 = 1_700_000_000.0  # the method's start (method_started): t_s = 0; the experiment started 5 s before
KILL_AT = 20.0  # kill model (instantaneous); requests sent in [20, 23) fail after 0.05 s
LATENCY = (40.0, 50.0)  # latency on the wrapper; requests sent in it take 4 s (slow, > 3 s)
PAUSE = (55.0, 58.0)  # pause prometheus: users do not notice
REMEDIATION_AT = 45.0  # a restart of the wrapper; a dry-run one at 47
SEND_STEP = 0.5  # one request every 0.5 s, sent from t=5 to t=64.5
RUN_ID = "20231114T221320.00Z-kill_and_recover"


def request_rows() -> list[dict[str, Any]]:
    """120 requests: normal ones take 0.5 s (TTFT 0.1 s), 6 fail during the kill, 20 are slow."""
    rows = []
    for i in range(120):
        t = 5.0 + i * SEND_STEP
        failed = KILL_AT <= t < KILL_AT + 3
        slow = LATENCY[0] <= t < LATENCY[1]
        e2e = 0.05 if failed else 4.0 if slow else 0.5
        rows.append(
            {
                "request_id": i,
                "prompt_index": 0,
                "intended_send": T0 + t,
                "actual_send": T0 + t + 0.001,
                "queue_delay_s": 0.001,
                "ttft_s": None if failed else (3.6 if slow else 0.1),
                "itl_s": [] if failed else [0.02, 0.02],
                "e2e_s": e2e,
                "chunks": 0 if failed else 3,
                "output_tokens": None if failed else 3,
                "prompt_tokens": None if failed else 5,
                "status": 0 if failed else 200,
                "ok": not failed,
                "error_kind": "connect" if failed else None,
                "error": "refused" if failed else None,
                "done_reason": None if failed else "stop",
                "server_ttft_s": None,
                "server_duration_s": None,
            }
        )
    return rows


def journal_events() -> list[dict[str, Any]]:
    def event(kind: str, t: float, **fields: Any) -> dict[str, Any]:
        return {"kind": kind, "wall_time": T0 + t, "monotonic": 1000.0 + t, **fields}

    def fault(kind: str, t: float, fault_id: str, fault_kind: str, target: str, **f: Any) -> dict[str, Any]:
        return event(kind, t, fault_id=fault_id, fault_kind=fault_kind, target=target, **f)

    return [
        event("experiment_started", -5.0),
        event("method_started", 0.0),
        fault("fault_start", KILL_AT, "f1", "kill", "model", duration_s=10),
        fault("fault_end", KILL_AT, "f1", "kill", "model", instantaneous=True),
        fault("fault_window_end", KILL_AT + 10, "f1", "kill", "model"),
        fault("fault_start", LATENCY[0], "f2", "latency", "wrapper", duration_s=10),
        event("remediation_decision", 44.0, target="wrapper", dry_run=False, outcome="breach", value_s=4.0),
        event(
            "remediation_action", REMEDIATION_AT, target="wrapper", action="restart", dry_run=False,
            outcome="acted", value_s=4.0, threshold_s=3.0, detail="restart wrapper",
        ),
        event(
            "remediation_action", REMEDIATION_AT + 2, target="wrapper", action="restart", dry_run=True,
            outcome="dry_run", value_s=4.0, threshold_s=3.0, detail="would restart wrapper",
        ),
        fault("fault_end", LATENCY[1], "f2", "latency", "wrapper"),
        fault("fault_start", PAUSE[0], "f3", "pause", "prometheus", duration_s=3),
        fault("fault_end", PAUSE[1], "f3", "pause", "prometheus"),
        event("experiment_finished", 66.0, verdict="completed"),
    ]  # fmt: skip


def _frame(t: list[float], values: list[float], run_start: float, **labels: list[str]) -> pd.DataFrame:
    """A tidy frame as labkit.measure.prom makes them; `t_s` counted from `run_start` (may differ from T0)."""
    at = [T0 + x for x in t]
    frame = pd.DataFrame(
        {"timestamp": pd.to_datetime(at, unit="s", utc=True), "t_s": [a - run_start for a in at]}
    )
    for name, column in labels.items():
        frame[name] = column
    frame["value"] = values
    return frame


def prometheus_frames(collector_start: float = T0 - 100.0) -> dict[str, pd.DataFrame]:
    """Series on a 1 s grid from t=0 to 70; their t_s deliberately counts from another start."""
    t = [float(x) for x in range(71)]
    availability = [0.0 if KILL_AT <= x < KILL_AT + 4 else 1.0 for x in t]
    quantiles = [
        {"t": x, "quantile": q, "value": (4.0 if LATENCY[0] + 2 <= x < LATENCY[1] + 2 else 0.5) * q}
        for x in t
        for q in (0.5, 0.95, 0.99)
    ]
    latency = _frame([r["t"] for r in quantiles], [r["value"] for r in quantiles], collector_start)
    latency.insert(2, "quantile", [r["quantile"] for r in quantiles])
    latency["bucket_lower"], latency["bucket_upper"], latency["in_inf_bucket"] = 0.25, 5.0, False
    restarts_model = [0.0 if x < KILL_AT + 1 else 1.0 for x in t]
    return {
        "availability": _frame(t, availability, collector_start),
        "error_ratio": _frame(t, [1 - a for a in availability], collector_start),
        "latency_quantiles": latency,
        "in_flight": _frame(t, [1.0] * len(t), collector_start),
        "restarts": _frame(
            t + t, restarts_model + [0.0] * len(t), collector_start, service=["model"] * 71 + ["wrapper"] * 71
        ),
        # Collected but empty (no data in the window): a header-only CSV.
        "output_tokens_rate": _frame([], [], collector_start),
    }


def write_chaos_run(
    parent: Path,
    *,
    run_id: str = RUN_ID,
    prometheus: bool = True,
    slo: bool = True,
    experiment: dict[str, Any] | None = None,
) -> Path:
    """A kill-and-recover run directory: params, requests, journal, slo.json, Prometheus CSVs."""
    run = RunDirectory.create(parent, "kill_and_recover", run_id=run_id)
    run.write_json(
        RunFile.PARAMS,
        {"scenario": "kill_and_recover", "duration_s": 60, "remediation": {"threshold_s": 3.0}},
    )
    with run.jsonl_writer(RunFile.REQUESTS) as write:
        for row in request_rows():
            write(row)
    for event in journal_events():
        run.append_jsonl(RunFile.EVENTS, event)
    if slo:
        samples = pd.DataFrame(request_rows())
        evaluate_client_slos(samples, load_slo_spec(), duration_s=60.0).write(run.path)
    if prometheus:
        save_series(run.path, prometheus_frames())
        run.write_json(
            "prometheus/window.json",
            {"start": T0 - 2, "end": T0 + 70, "run_start": T0 - 100, "step_s": 1.0, "gpu_available": False},
        )
    if experiment is not None:
        run.write_json("experiment.json", experiment)
    return run.path


@pytest.fixture
def chaos_run(tmp_path: Path) -> Path:
    return write_chaos_run(tmp_path / "runs")


# ---------------------------------------------------------------------------------------------------


def test_a_whole_run_loads_with_one_time_axis(chaos_run: Path) -> None:
    run = RunData.load(chaos_run)
    assert run.problems == ()
    assert run.run_id == RUN_ID and run.scenario == "kill_and_recover"
    assert run.start == T0 - 5  # experiment_started, before the first request (t=5)
    assert run.origin == T0 and run.has_method  # every t_s counts from the method's start
    assert run.end == pytest.approx(T0 + 66.0)  # experiment_finished, after the last completion (65)
    assert len(run.samples) == 120 and len(run.events) == len(journal_events())
    # The CSVs counted t_s from T0 - 100; loading recounts from the run's start.
    availability = run.series["availability"]
    assert availability["t_s"].iloc[0] == pytest.approx(0.0)
    assert availability.loc[availability["value"] == 0, "t_s"].min() == pytest.approx(KILL_AT)
    assert run.series["output_tokens_rate"].empty
    assert run.slo_verdict == "violated"  # slo.json: 6 of 120 failed is below 99 %
    # The journal's experiment_finished says "completed", labkit 0.1's word for a hypothesis that held.
    assert run.experiment_verdict == "held" and run.verdict == "held"
    assert run.t_range == pytest.approx((-5.0, 70.0))  # the Prometheus window is wider than the run


def test_faults_and_remediation_are_on_the_run_axis(chaos_run: Path) -> None:
    run = RunData.load(chaos_run)
    faults = run.faults
    assert list(faults["fault_id"]) == ["f1", "f2", "f3"]
    assert list(faults["instantaneous"]) == [True, False, False]
    assert list(faults["start_t_s"]) == pytest.approx([KILL_AT, LATENCY[0], PAUSE[0]])
    assert list(faults["end_t_s"]) == pytest.approx([KILL_AT, LATENCY[1], PAUSE[1]])
    actions = run.remediation_actions
    assert list(actions["t_s"]) == pytest.approx([REMEDIATION_AT, REMEDIATION_AT + 2])
    assert list(actions["dry_run"]) == [False, True]
    assert list(actions["target"]) == ["wrapper", "wrapper"]


def test_recovery_is_computed_from_the_journal_and_samples(chaos_run: Path) -> None:
    recovery = RunData.load(chaos_run).recovery.set_index("fault_id")
    kill = recovery.loc["f1"]
    assert kill["time_to_detect_s"] == pytest.approx(0.05)  # the request sent at 20 fails at 20.05
    assert kill["time_to_recover_s"] == pytest.approx(
        3.5
    )  # first good after the last bad: sent 23, done 23.5
    assert kill["requests_lost"] == 6
    latency = recovery.loc["f2"]
    assert latency["requests_slow"] == 20 and latency["requests_lost"] == 0
    assert latency["time_to_detect_s"] == pytest.approx(4.0)  # sent at 40, done at 44
    assert latency["time_to_recover_s"] == pytest.approx(0.5)  # sent at 50 (its end), done 50.5
    pause = recovery.loc["f3"]  # nothing bad happened while prometheus was paused
    assert pd.isna(pause["detected"]) and pd.isna(pause["time_to_recover_s"]) and pause["requests_lost"] == 0


def test_recovery_recorded_by_the_experiment_wins(tmp_path: Path) -> None:
    recorded = {"fault_id": "f1", "kind": "kill", "target": "model", "start": T0 + 20, "end": T0 + 20,
                "detected": T0 + 21, "recovered": T0 + 29, "time_to_detect_s": 1.0, "time_to_recover_s": 9.0,
                "requests_lost": 17, "requests_slow": 0, "requests_in_window": 40,
                "budget_burned": 1.7}  # fmt: skip
    path = write_chaos_run(
        tmp_path,
        experiment={"verdict": "deviated", "recovery": {"slow_threshold_s": 2.0, "faults": [recorded]}},
    )
    run = RunData.load(path)
    assert run.recovery.to_dict("records") == [recorded]
    assert run.verdict == "deviated"  # the experiment's verdict comes before the SLO verdict
    assert run.slow_threshold_s == 2.0


def test_a_partial_run_loads_what_it_has(tmp_path: Path) -> None:
    run_dir = RunDirectory.create(tmp_path, "baseline", run_id="partial")
    run_dir.write_json(RunFile.PARAMS, {"duration_s": 10})
    row = json.dumps(request_rows()[0])
    run_dir.file(RunFile.REQUESTS).write_text(row + "\n" + row[:20])  # a crash mid-line
    run = RunData.load(run_dir.path)
    assert len(run.samples) == 1
    assert run.start == T0 + 5.0 and run.end == pytest.approx(T0 + 5.5)
    assert run.events == [] and run.slo is None and run.series == {} and run.client_vs_server is None
    assert run.faults.empty and run.remediation_actions.empty and run.recovery.empty
    assert run.verdict is None and run.status is None
    assert any("journal" in m for m in run.missing) and any("prometheus" in m for m in run.missing)
    assert run.problems == ()


def test_an_empty_directory_loads_with_nothing_known(tmp_path: Path) -> None:
    run = RunData.load(tmp_path)
    assert run.samples.empty and "e2e_s" in run.samples.columns
    assert run.start is None and run.t_range is None and run.duration_s is None
    assert len(run.missing) == 5


def test_broken_files_are_named_and_the_rest_still_loads(chaos_run: Path) -> None:
    events = (chaos_run / "events.jsonl").read_text().splitlines()
    events.insert(3, "{not json")
    (chaos_run / "events.jsonl").write_text("\n".join(events) + "\n")
    (chaos_run / "slo.json").write_text("{")
    (chaos_run / "prometheus" / "in_flight.csv").write_text("")
    (chaos_run / "prometheus" / "error_ratio.csv").write_text("timestamp,t_s,value\nyesterday,1,0.5\n")
    (chaos_run / "run.json").write_text("[1, 2]")
    run = RunData.load(chaos_run)
    assert len(run.events) == len(journal_events())  # the bad line skipped, none lost
    assert run.slo is None and run.info == {}
    assert "in_flight" not in run.series and "error_ratio" not in run.series and "availability" in run.series
    problems = " | ".join(run.problems)
    assert "events.jsonl:4: not JSON" in problems
    assert "slo.json: unreadable" in problems
    assert "prometheus/in_flight.csv: unreadable" in problems
    assert "prometheus/error_ratio.csv: unreadable timestamps" in problems
    assert "run.json: not a JSON object" in problems


def test_a_directory_that_does_not_exist_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        RunData.load(tmp_path / "nope")


def test_run_info_gives_status_and_scenario(chaos_run: Path) -> None:
    RunDirectory(chaos_run).write_json(
        "run.json", {"status": "failed", "scenario": "custom", "verdict": None}
    )
    run = RunData.load(chaos_run)
    assert run.status == "failed" and run.scenario == "custom"


def test_newest_run_is_picked_by_its_stamp(tmp_path: Path) -> None:
    for run_id in ("20240101T000000.00Z-a", "20240301T000000.00Z-b", "20240201T000000.00Z-c"):
        (tmp_path / run_id).mkdir()
    (tmp_path / ".tmp-partial").mkdir()
    assert newest_run(tmp_path).name == "20240301T000000.00Z-b"
    with pytest.raises(ReportError, match="no run directories"):
        newest_run(tmp_path / "empty")
