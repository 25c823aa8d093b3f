"""Chaos against a real lab (sim engine): faults outlive the process that applied them only until their TTL,
held by the supervisor, the wrapper or stress-ng; halt ends them early; `labkit down` leaves nothing."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from labkit.chaos import ExperimentSpec, Fault, FaultInjector, halt_all, run_experiment
from labkit.lab.local import LocalBackend
from labkit.lab.processes import find_lab_processes
from labkit.rundir import RunDirectory, RunFile
from tests.conftest import lab_id_of, wait_for

pytestmark = pytest.mark.integration


def stress_processes(lab_id: str) -> list[psutil.Process]:
    found = []
    for proc in find_lab_processes(lab_id):
        try:
            if proc.name().startswith("stress-ng"):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def state_of(backend: LocalBackend, name: str) -> str:
    return next(s.state for s in backend.status() if s.name == name)


def wrapper_faults(backend: LocalBackend) -> list[dict[str, Any]]:
    cfg = backend.saved_config()
    response = httpx.get(
        f"http://127.0.0.1:{cfg.wrapper_port}/admin/faults",
        headers={"Authorization": f"Bearer {backend.lab.read_token()}"},
        timeout=5,
    )
    response.raise_for_status()
    faults: list[dict[str, Any]] = response.json()["faults"]
    return faults


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; each is killed (and reaped) whatever the test did."""
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def spawn(procs: list[subprocess.Popen[str]], code: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    procs.append(proc)
    return proc


def journal(out: Path) -> list[dict[str, Any]]:
    runs = sorted(p for p in out.glob("*") if p.is_dir())
    return list(RunDirectory(runs[0]).read_jsonl(RunFile.EVENTS)) if runs else []


def test_cpu_stress_ends_by_its_ttl_by_halt_and_with_the_lab(running_lab: LocalBackend) -> None:
    if shutil.which("stress-ng") is None:
        pytest.skip("stress-ng is not installed (apt-get install stress-ng)")
    lab_id = lab_id_of(running_lab)
    lab_dir = running_lab.lab.root
    with FaultInjector(lab_dir) as injector:
        # 1. Its own TTL: stress-ng's --timeout (1 s) ends it with nobody asking.
        active = injector.apply(Fault(kind="cpu_stress", duration_s=1, params={"workers": 1}))
        procs = stress_processes(lab_id)
        assert procs, "stress-ng is not running as a process of the lab"
        assert active.detail["pid"] in {p.pid for p in procs}
        wait_for(lambda: not stress_processes(lab_id), 8, "stress-ng ending by its --timeout")
        outcome, _ = injector.revert(active)
        assert outcome == "expired"

        # 2. halt ends it long before its TTL; a second halt has nothing left to end.
        injector.apply(Fault(kind="cpu_stress", duration_s=60, params={"workers": 1}))
        assert stress_processes(lab_id)
        report = halt_all(lab_dir)
        assert report.ok and report.stress_stopped, report.summary()
        assert not stress_processes(lab_id)
        again = halt_all(lab_dir)
        assert again.ok and not again.stress_stopped and not again.unpaused

        # 3. `labkit down` leaves none behind.
        injector.apply(Fault(kind="cpu_stress", duration_s=60, params={"workers": 1}))
        assert stress_processes(lab_id)
    running_lab.down()
    assert find_lab_processes(lab_id) == []


def test_the_supervisor_refuses_bad_stress_requests(running_lab: LocalBackend) -> None:
    cfg = running_lab.saved_config()
    url = f"http://127.0.0.1:{cfg.exporter_port}/v1/stress"
    auth = {"Authorization": f"Bearer {running_lab.lab.read_token()}"}
    assert httpx.post(url, json={"workers": 1, "duration_s": 1}).status_code == 401
    assert httpx.post(url, json={"workers": 0, "duration_s": 1}, headers=auth).status_code == 422
    assert httpx.post(url, json={"workers": 1, "duration_s": -1}, headers=auth).status_code == 422
    assert httpx.post(url, json={"workers": True, "duration_s": 1}, headers=auth).status_code == 422
    assert httpx.get(url, headers=auth).json() == {"running": False}
    assert httpx.delete(url, headers=auth).json() == {"stopped": False, "pid": None}


def test_faults_end_by_their_ttl_after_the_experiment_process_is_sigkilled(
    running_lab: LocalBackend, tmp_path: Path, spawned: list[subprocess.Popen[str]]
) -> None:
    """The process running an experiment dies (SIGKILL) during a pause and a latency fault: the supervisor
    unpauses the wrapper and the wrapper ends the latency, each at its TTL."""
    out = tmp_path / "runs"
    proc = spawn(
        spawned,
        """
        import sys
        from labkit.chaos import ExperimentSpec, Fault, run_experiment
        spec = ExperimentSpec(
            schedule=[
                Fault(kind="latency", start_s=0, duration_s=4, params={"delay_s": 0.3}),
                Fault(kind="pause", target="wrapper", start_s=0.5, duration_s=3),
            ],
            duration_s=30, load={"rate": 2}, steady_state={"enabled": False},
        )
        run_experiment(sys.argv[1], spec, out_dir=sys.argv[2], say=None)
        """,
        str(running_lab.lab.root),
        str(out),
    )
    wait_for(lambda: sum(e["kind"] == "fault_start" for e in journal(out)) == 2, 20, "both faults applied")
    assert state_of(running_lab, "wrapper") == "paused"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    killed_at = time.monotonic()
    assert not any(e["kind"] in ("fault_end", "aborted") for e in journal(out))  # nobody reverted them

    wait_for(lambda: state_of(running_lab, "wrapper") == "ready", 3 + 5, "the wrapper unpaused by its TTL")
    wait_for(lambda: wrapper_faults(running_lab) == [], 4 + 5, "the latency fault ended by its TTL")
    assert time.monotonic() - killed_at < 4 + 5
    cfg = running_lab.saved_config()
    metrics = httpx.get(f"http://127.0.0.1:{cfg.wrapper_port}/metrics", timeout=5).text
    assert 'llm_faults_active{kind="latency"} 0.0' in metrics
    answer = httpx.post(f"http://127.0.0.1:{cfg.wrapper_port}/generate", json={"prompt": "hi"}, timeout=10)
    assert answer.status_code == 200


def test_sigterm_aborts_an_experiment_and_reverts_its_faults_at_once(
    running_lab: LocalBackend, tmp_path: Path, spawned: list[subprocess.Popen[str]]
) -> None:
    out = tmp_path / "runs"
    proc = spawn(
        spawned,
        """
        import sys
        from labkit.chaos import ExperimentSpec, Fault, run_experiment
        spec = ExperimentSpec(
            schedule=[Fault(kind="pause", target="model", start_s=0.5, duration_s=60)],
            duration_s=90, load={"rate": 1}, steady_state={"enabled": False},
        )
        result = run_experiment(sys.argv[1], spec, out_dir=sys.argv[2], say=None)
        print("verdict", result.verdict)
        """,
        str(running_lab.lab.root),
        str(out),
    )
    wait_for(lambda: any(e["kind"] == "fault_start" for e in journal(out)), 20, "the pause applied")
    assert state_of(running_lab, "model") == "paused"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "verdict aborted" in output, output
    assert state_of(running_lab, "model") == "ready"  # unpaused by the experiment, not 60 s later
    events = journal(out)
    kinds = [e["kind"] for e in events]
    assert "aborted" in kinds and kinds[-1] == "experiment_finished"
    (end,) = [e for e in events if e["kind"] == "fault_end"]
    assert end["outcome"] == "reverted" and end["why"] == "aborted"
    aborted = next(e for e in events if e["kind"] == "aborted")
    assert aborted["signal"] == "SIGTERM"
    assert json.loads((next(out.iterdir()) / "experiment.json").read_text())["verdict"] == "aborted"


def test_an_experiment_journals_every_fault_and_ends_with_a_verdict(
    running_lab: LocalBackend, tmp_path: Path
) -> None:
    lines: list[str] = []
    spec = ExperimentSpec(
        schedule=[
            Fault(kind="pause", target="wrapper", start_s=0.5, duration_s=1),
            Fault(kind="latency", start_s=2, duration_s=1.5, params={"delay_s": 0.2}),
            Fault(kind="kill", target="model", start_s=4, duration_s=2),
        ],
        duration_s=6,
        load={"rate": 2},
        steady_state={"duration_s": 2},
    )
    result = run_experiment(running_lab.lab.root, spec, out_dir=tmp_path / "runs", say=lines.append)
    assert result.verdict == "held", result.summary()
    assert lines[0].startswith("chaos schedule (explicit, run 6 s): 3 faults")
    assert result.before is not None and result.before.verdict == "met"
    assert result.after is not None and result.after.verdict == "met"

    events = list(result.run_dir.read_jsonl(RunFile.EVENTS))
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["experiment_started", "schedule"]
    assert kinds[-1] == "experiment_finished" and events[-1]["verdict"] == "held"
    assert kinds.index("method_started") < kinds.index("fault_start")
    assert all(e["wall_time"] > 1.6e9 and e["monotonic"] > 0 for e in events)
    starts = {e["fault_id"]: e for e in events if e["kind"] == "fault_start"}
    ends = {e["fault_id"]: e for e in events if e["kind"] == "fault_end"}
    assert [starts[i]["fault_kind"] for i in ("f1", "f2", "f3")] == ["pause", "latency", "kill"]
    assert ends.keys() == starts.keys()
    # At a fault's end the runner's revert and the TTL of whoever holds it (supervisor, wrapper) race:
    # either one ending it on time is right, and which wins depends on the machine's load.
    assert ends["f1"]["outcome"] in ("reverted", "expired") and ends["f2"]["outcome"] in (
        "reverted",
        "expired",
    )
    assert ends["f3"]["outcome"] == "ended"  # instantaneous; its observation window is journaled apart
    assert any(e["kind"] == "fault_window_end" and e["fault_id"] == "f3" for e in events)
    assert starts["f2"]["detail"]["ttl_held_by"] == "wrapper"
    assert starts["f3"]["detail"]["before"]["pid"] is not None

    model = next(s for s in running_lab.status() if s.name == "model")
    assert model.restarts == 1 and model.state == "ready"
    # However each fault ended, none is left: the wrapper holds no fault, nothing is paused.
    wrapper = f"http://127.0.0.1:{running_lab.config.wrapper_port}"
    token = {"Authorization": f"Bearer {running_lab.lab.read_token()}"}
    assert httpx.get(f"{wrapper}/admin/faults", headers=token).json()["faults"] == []
    assert all(s.state != "paused" for s in running_lab.status())
    assert wrapper_faults(running_lab) == []
    params = result.run_dir.read_json(RunFile.PARAMS)
    assert params["chaos"]["plan"] == lines[0] and params["load"]["spec"]["duration_s"] == 6
    assert result.run_dir.file(RunFile.REQUESTS).exists()
    assert (result.run_dir.path / "steady_state" / "after" / RunFile.SLO).exists()
