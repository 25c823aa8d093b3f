"""Remediation against a real lab: an injected latency in the wrapper breaches the p95 signal in
Prometheus; a dry run only journals, the real run restarts the wrapper (which drops the fault) and
the restart is counted in lab_remediation_actions_total and lab_service_restarts_total."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from labkit.chaos import (
    ExperimentResult,
    ExperimentSpec,
    Fault,
    RemediationPolicy,
    Remediator,
    p95_latency_query,
    prometheus_signal,
    run_experiment,
)
from labkit.lab.local import LocalBackend
from labkit.rundir import RunDirectory, RunFile

pytestmark = pytest.mark.integration


def _traffic(url: str, stop: threading.Event) -> None:
    with httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + 90  # bounded even if the test forgets to stop it
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                client.post(url, json={"prompt": "hi", "max_tokens": 2})
            except httpx.HTTPError:
                time.sleep(0.1)  # the wrapper is restarting


def _steps_until(rem: Remediator, outcome: str, limit: int) -> list[str]:
    seen = []
    for _ in range(limit):
        seen.append(rem.step().outcome)
        if seen[-1] == outcome:
            return seen
        time.sleep(rem.policy.interval_s)
    raise AssertionError(f"no {outcome!r} in {seen}")


def test_latency_breach_is_remediated_by_a_counted_restart(running_lab: LocalBackend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = running_lab.config
    wrapper = f"http://127.0.0.1:{cfg.wrapper_port}"
    prometheus = f"http://127.0.0.1:{cfg.prometheus_port}"
    headers = {"Authorization": f"Bearer {running_lab.lab.read_token()}"}
    fault = {"kind": "latency", "duration_s": 120, "params": {"delay_s": 0.6}}
    assert httpx.post(f"{wrapper}/admin/faults", headers=headers, json=fault).status_code == 201
    run = RunDirectory.create(tmp_path, "remediation")
    policy = dict(
        target="wrapper", threshold_s=0.3, window_s=4, interval_s=1, breaches_to_act=2, cooldown_s=60
    )
    signal = prometheus_signal(prometheus, p95_latency_query(4))
    stop = threading.Event()
    traffic = threading.Thread(target=_traffic, args=(f"{wrapper}/generate", stop))
    traffic.start()
    try:
        dry = Remediator(RemediationPolicy(**policy, dry_run=True), signal, running_lab, journal=run.journal)
        _steps_until(dry, "dry_run", 30)
        assert next(s for s in running_lab.status() if s.name == "wrapper").restarts == 0
        real = Remediator(RemediationPolicy(**policy), signal, running_lab, journal=run.journal)
        _steps_until(real, "acted", 30)
    finally:
        stop.set()
        traffic.join(timeout=60)
    # The restart is graceful (in-flight requests finish first), so it is counted when the old process exits.
    deadline = time.monotonic() + 30
    while next(s for s in running_lab.status() if s.name == "wrapper").restarts != 1:
        assert time.monotonic() < deadline, running_lab.status()
        time.sleep(0.2)
    # The restarted wrapper has no fault: requests are fast again.
    while True:
        try:
            r = httpx.post(f"{wrapper}/generate", json={"prompt": "hi", "max_tokens": 2}, timeout=10)
            if r.status_code == 200 and r.json()["time_to_first_token_seconds"] < 0.6:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the wrapper did not recover"
        time.sleep(0.2)
    assert httpx.get(f"{wrapper}/admin/faults", headers=headers).json()["faults"] == []
    metrics = httpx.get(f"http://127.0.0.1:{cfg.exporter_port}/metrics").text
    assert (
        'lab_remediation_actions_total{action="restart",reason="p95_above_0.3s",target="wrapper"} 1.0'
        in metrics
    )
    kinds = [e["kind"] for e in run.read_jsonl(RunFile.EVENTS)]
    assert kinds.count("remediation_action") == 2  # the dry run's and the real one
    actions = [e for e in run.read_jsonl(RunFile.EVENTS) if e["kind"] == "remediation_action"]
    assert [a["dry_run"] for a in actions] == [True, False]
    assert all(a["value_s"] > 0.3 for a in actions)


def _latency_experiment(lab: LocalBackend, out: Path, *, dry_run: bool) -> ExperimentResult:
    spec = ExperimentSpec(
        schedule=[Fault(kind="latency", start_s=1, duration_s=14, params={"delay_s": 0.6})],
        duration_s=16,
        load={"rate": 4, "max_tokens": 8},
        steady_state={"duration_s": 2},
        remediation={
            "target": "wrapper",
            "threshold_s": 0.3,
            "window_s": 4,
            "interval_s": 1,
            "breaches_to_act": 2,
            "cooldown_s": 60,
            "dry_run": dry_run,
        },
    )
    return run_experiment(lab.lab.root, spec, out_dir=out, say=None)


def test_an_experiment_with_remediation_restarts_the_wrapper_and_shows_the_recovery(
    running_lab: LocalBackend, tmp_path: Path
) -> None:
    result = _latency_experiment(running_lab, tmp_path / "runs", dry_run=False)
    assert result.verdict == "held", result.summary()
    events = list(result.run_dir.read_jsonl(RunFile.EVENTS))
    (action,) = [e for e in events if e["kind"] == "remediation_action"]
    assert action["dry_run"] is False and action["target"] == "wrapper" and action["value_s"] > 0.3
    assert sum(e["kind"] == "remediation_decision" for e in events) >= 1  # the breach before it
    # The restart dropped the wrapper's fault: its end is the remediation's, journaled as the restart
    # returns (the action's own event follows it at once).
    (end,) = [e for e in events if e["kind"] == "fault_end"]
    assert (end["why"], end["outcome"]) == ("remediation", "cleared")
    assert abs(action["wall_time"] - end["wall_time"]) < 1
    assert next(s for s in running_lab.status() if s.name == "wrapper").restarts == 1

    # Recovery: users saw the latency, then fast answers again long before the fault's planned end.
    assert result.recovery is not None
    (row,) = result.recovery.to_dict("records")
    assert row["time_to_detect_s"] is not None and row["time_to_detect_s"] < 3
    assert row["recovered"] is not None and row["recovered"] < row["start"] + 14
    assert row["requests_slow"] > 0
    saved = result.run_dir.read_json(RunFile.EXPERIMENT)
    assert saved["recovery"]["slow_threshold_s"] == 0.3
    assert saved["recovery"]["faults"][0]["recovered"] == row["recovered"]
    assert [a["target"] for a in saved["remediation"]["actions"]] == ["wrapper"]
    assert "remediation: restarted wrapper" in result.summary()
    metrics = httpx.get(f"http://127.0.0.1:{running_lab.config.exporter_port}/metrics").text
    assert (
        'lab_remediation_actions_total{action="restart",reason="p95_above_0.3s",target="wrapper"} 1.0'
        in metrics
    )


def test_a_dry_run_journals_the_decision_and_restarts_nothing(
    running_lab: LocalBackend, tmp_path: Path
) -> None:
    result = _latency_experiment(running_lab, tmp_path / "runs", dry_run=True)
    events = list(result.run_dir.read_jsonl(RunFile.EVENTS))
    actions = [e for e in events if e["kind"] == "remediation_action"]
    assert len(actions) == 1 and actions[0]["dry_run"] is True  # the cooldown holds back a second one
    assert actions[0]["value_s"] > 0.3
    assert next(s for s in running_lab.status() if s.name == "wrapper").restarts == 0
    (end,) = [e for e in events if e["kind"] == "fault_end"]
    assert end["why"] == "scheduled"  # the fault lasted its whole duration
    assert result.recovery is not None
    (row,) = result.recovery.to_dict("records")
    assert row["recovered"] is None or row["recovered"] >= row["end"]
    assert "remediation: would restart wrapper" in result.summary()
    metrics = httpx.get(f"http://127.0.0.1:{running_lab.config.exporter_port}/metrics").text
    assert "lab_remediation_actions_total{" not in metrics
