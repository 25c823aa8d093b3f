"""The lab under its own chaos: SIGKILL each of its components at random moments of a running experiment.

One seeded test (the same seed gives the same kills, printed before it runs) kills the wrapper, the model
server, Prometheus, the supervisor (which hosts the exporter on the local backend) and the process running
the experiment, at least 20 times in all, and after every kill checks what the lab promises:
no fault outlives its TTL, the run directory reads back whole, the load generator wrote one row per
scheduled request, Prometheus kept every sample it had before it was killed, and `labkit down` leaves no
process of the lab behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from labkit.config import LabConfig
from labkit.lab.local import LocalBackend
from labkit.lab.processes import find_lab_processes
from labkit.measure.load import load_requests_frame
from labkit.rundir import RunDirectory, RunFile
from tests.conftest import interruptible, lab_id_of, sim_lab_config, wait_for

pytestmark = pytest.mark.integration

SEED = 20261128
KILLS = 24
TARGETS = ("wrapper", "model", "prometheus", "supervisor", "experiment")
METHOD_S = 5.0
# Every fault of the experiment ends by this many seconds after the method started (its TTL).
LAST_FAULT_END_S = 4.5
# How late a fault may end after its TTL: the holder's timer, one scrape, a loaded 2-core machine.
TTL_SLACK_S = 2.0
EXPERIMENT = {
    "title": "faults held by the lab while its own parts are killed",
    "duration_s": METHOD_S,
    "load": {"rate": 8, "stream": True, "max_tokens": 8, "arrival": "constant"},
    "steady_state": {"enabled": False},
    "faults": [
        {"kind": "latency", "start_s": 0.5, "duration_s": 3.0, "params": {"delay_s": 0.2}},
        {"kind": "pause", "target": "model", "start_s": 1.5, "duration_s": 1.5},
        {"kind": "error", "start_s": 3.0, "duration_s": 1.5, "params": {"probability": 0.3}},
        {"kind": "cpu_stress", "start_s": 2.0, "duration_s": 1.0, "params": {"workers": 1}},
    ],
}


@dataclass
class Tally:
    """What the test saw, printed at the end for docs/reliability.md."""

    kills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TARGETS, 0))
    rows: int = 0
    scheduled: int = 0
    prometheus_samples_checked: int = 0
    prometheus_samples_lost: int = 0
    faults_past_ttl: int = 0
    labs: int = 0


def kill_plan(seed: int, kills: int) -> list[tuple[str, float]]:
    """(target, seconds after the load started) for each kill; every target at least 4 times."""
    rng = random.Random(seed)
    per_target = kills // len(TARGETS)
    targets = [t for t in TARGETS for _ in range(per_target)]
    targets += rng.sample(TARGETS, kills - len(targets))
    rng.shuffle(targets)
    return [(t, round(rng.uniform(0.2, METHOD_S - 0.3), 2)) for t in targets]


def test_the_plan_is_seeded_and_covers_every_component() -> None:
    plan = kill_plan(SEED, KILLS)
    assert plan == kill_plan(SEED, KILLS)
    assert plan != kill_plan(SEED + 1, KILLS)
    assert len(plan) >= 20
    assert {t for t, _ in plan} == set(TARGETS)
    assert all(0 < at < METHOD_S for _, at in plan)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[LabConfig, list[str]]]:
    """A sim lab configuration and the ids of every lab started under it; all are swept at the end."""
    config = sim_lab_config(tmp_path, max_in_flight=64)
    lab_ids: list[str] = []
    try:
        yield config, lab_ids
    finally:
        LocalBackend(config).down()
        for lab_id in lab_ids:
            for proc in find_lab_processes(lab_id):
                proc.kill()


def start_lab(config: LabConfig, lab_ids: list[str]) -> LocalBackend:
    backend = LocalBackend(config)
    backend.up()
    lab_ids.append(lab_id_of(backend))
    return backend


def pid_of(backend: LocalBackend, target: str) -> int:
    if target == "supervisor":
        return int(backend.lab.read_state()["supervisor_pid"])
    status = next(s for s in backend.status() if s.name == target)
    assert status.pid is not None, f"{target} has no process: {status}"
    return status.pid


def all_ready(backend: LocalBackend) -> bool:
    return all(s.state in ("ready", "external") for s in backend.status())


def wait_for_load_start(out: Path, proc: subprocess.Popen[str]) -> tuple[RunDirectory, float]:
    """The experiment's run directory and the wall time its load started (from its journal)."""

    def started() -> tuple[RunDirectory, float] | None:
        assert proc.poll() is None, f"the experiment ended early: {proc.communicate()}"
        for path in out.iterdir():
            for event in RunDirectory(path).read_jsonl(RunFile.EVENTS):
                if event["kind"] == "load_started":
                    return RunDirectory(path), float(event["wall_time"])
        return None

    found = wait_for(started, timeout_s=60, what="the experiment's load to start", interval_s=0.05)
    assert isinstance(found, tuple)
    return found


def prometheus_samples(url: str, start: float, end: float) -> dict[str, list[float]]:
    """The raw timestamps of every `up` sample (one per target per scrape) in (start, end], by job."""
    response = httpx.get(
        f"{url}/api/v1/query",
        params={"query": f"up[{int(end - start)}s]", "time": end},
        timeout=10,
    )
    response.raise_for_status()
    result = response.json()["data"]["result"]
    return {r["metric"]["job"]: [float(t) for t, _ in r["values"]] for r in result}


def assert_run_directory_reads_back(run: RunDirectory, *, experiment_killed: bool, tally: Tally) -> None:
    """Every file parses; every JSON Lines line is whole; one row per scheduled request."""
    for path in run.path.rglob("*"):
        if path.suffix == ".jsonl":
            text = path.read_text(encoding="utf-8")
            assert text == "" or text.endswith("\n"), f"{path} ends in a torn line"
            for number, line in enumerate(text.splitlines(), 1):
                try:
                    json.loads(line)
                except ValueError as exc:
                    raise AssertionError(f"{path}:{number} is not JSON: {line[:200]!r}") from exc
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    events = list(run.read_jsonl(RunFile.EVENTS))
    scheduled = next(int(e["scheduled"]) for e in events if e["kind"] == "load_started")
    frame = load_requests_frame(run)
    ids = sorted(int(i) for i in frame.request_id)
    assert len(ids) == len(set(ids)), "a request was recorded twice"
    if experiment_killed:
        # A SIGKILLed process cannot write the rows of the requests it still had in flight.
        assert set(ids) <= set(range(scheduled))
    else:
        assert ids == list(range(scheduled)), f"{len(ids)} rows for {scheduled} scheduled requests"
        assert any(e["kind"] == "load_finished" for e in events), "the load did not journal its end"
    tally.rows += len(ids)
    tally.scheduled += scheduled


def assert_no_fault_left(backend: LocalBackend, lab_id: str, load_start: float, tally: Tally) -> None:
    """By the last fault's TTL (plus slack): nothing paused, no stress-ng, no fault in the wrapper."""
    deadline = load_start + LAST_FAULT_END_S + TTL_SLACK_S
    time.sleep(max(0.0, deadline - time.time()))
    left = []
    for proc in find_lab_processes(lab_id):
        try:
            if proc.status() == psutil.STATUS_STOPPED:
                left.append(f"pid {proc.pid} ({proc.name()}) is still stopped")
            elif proc.name().startswith("stress-ng"):
                left.append(f"stress-ng (pid {proc.pid}) still runs")
        except psutil.NoSuchProcess:
            continue
    if backend.is_running():
        cfg = backend.saved_config()
        token = backend.lab.read_token()
        try:
            response = httpx.get(
                f"http://127.0.0.1:{cfg.wrapper_port}/admin/faults",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            faults = response.json()["faults"] if response.status_code == 200 else []
        except httpx.TransportError:
            faults = []  # the wrapper is restarting: a new wrapper holds no fault
        left += [f"wrapper still holds {f['kind']} (id {f['id']})" for f in faults]
    tally.faults_past_ttl += len(left)
    assert not left, f"faults past their TTL: {left}"


def run_experiment_process(
    config: LabConfig, out: Path, experiment: Path, log: Path
) -> subprocess.Popen[str]:
    out.mkdir()
    return subprocess.Popen(
        [
            sys.executable, "-m", "labkit.cli", "--lab-dir", str(config.lab_dir),
            "chaos", "run", "--file", str(experiment), "--out", str(out),
        ],
        stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible,
    )  # fmt: skip


def test_random_sigkills_of_every_component(lab: tuple[LabConfig, list[str]], tmp_path: Path) -> None:
    config, lab_ids = lab
    plan = kill_plan(SEED, KILLS)
    print(f"kill plan (seed {SEED}):", ", ".join(f"{t}@{at:g}s" for t, at in plan))
    experiment = tmp_path / "experiment.json"
    experiment.write_text(json.dumps(EXPERIMENT))
    tally = Tally()
    backend = start_lab(config, lab_ids)
    backend.wait_scraped()
    tally.labs = 1
    prom_url = f"http://127.0.0.1:{config.prometheus_port}"
    for index, (target, at) in enumerate(plan):
        lab_id = lab_ids[-1]
        log = tmp_path / f"experiment-{index}.log"
        proc = run_experiment_process(config, tmp_path / f"runs-{index}", experiment, log)
        try:
            run, load_start = wait_for_load_start(tmp_path / f"runs-{index}", proc)
            time.sleep(max(0.0, load_start + at - time.time()))
            if target == "prometheus":
                window = (load_start - 30, time.time() - 1)
                snapshot = prometheus_samples(prom_url, *window)
                assert sum(map(len, snapshot.values())) > 0, "Prometheus had nothing to lose"
            if target == "experiment":
                proc.kill()
            else:
                os.kill(pid_of(backend, target), signal.SIGKILL)
            tally.kills[target] += 1
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        output = log.read_text()
        assert "Traceback" not in output, f"kill {index} ({target}): the experiment crashed:\n{output}"
        assert_no_fault_left(backend, lab_id, load_start, tally)
        assert_run_directory_reads_back(run, experiment_killed=target == "experiment", tally=tally)
        if target == "supervisor":
            # The supervisor is the lab: its services die with it (PR_SET_PDEATHSIG); `down` sweeps the rest.
            backend.down()
            assert find_lab_processes(lab_id) == [], f"kill {index}: processes left after labkit down"
            backend = start_lab(config, lab_ids)
            backend.wait_scraped()
            tally.labs += 1
            continue
        wait_for(lambda b=backend: all_ready(b), timeout_s=60, what=f"the lab to recover after kill {index}")
        if target == "prometheus":
            # Samples scraped before the kill come back from the TSDB in the lab directory (its WAL).
            after = prometheus_samples(prom_url, *window)
            for job, stamps in snapshot.items():
                lost = sorted(set(stamps) - set(after.get(job, [])))
                tally.prometheus_samples_checked += len(stamps)
                tally.prometheus_samples_lost += len(lost)
                assert not lost, f"kill {index}: {len(lost)} samples of job {job} lost: {lost[:5]}"
    backend.down()
    for lab_id in lab_ids:
        assert find_lab_processes(lab_id) == [], f"lab {lab_id}: processes left after labkit down"
    print("tally:", json.dumps(tally.__dict__))
    assert sum(tally.kills.values()) >= 20
