"""What the random-kill tests of both backends share: the experiment the lab holds faults for, seeded kill
plans, running `labkit chaos run` as a user would, and the checks made after every kill (the run directory
reads back with one row per scheduled request, the wrapper holds no fault past its TTL, Prometheus lost no
sample).

tests/integration/test_kill_chaos.py kills the local backend's processes, tests/integration/
test_docker_kill_chaos.py the Docker backend's containers; each keeps only what differs (how a component is
found and killed, what a fault left behind looks like, what `labkit down` may leave).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from labkit.config import LabConfig
from labkit.lab.backend import Backend
from labkit.measure.load import load_requests_frame
from labkit.rundir import RunDirectory, RunFile
from tests.conftest import interruptible, wait_for

__all__ = [
    "EXPERIMENT",
    "LAST_FAULT_END_S",
    "METHOD_S",
    "TTL_SLACK_S",
    "KillRound",
    "Tally",
    "all_ready",
    "assert_experiment_did_not_crash",
    "assert_run_directory_reads_back",
    "check_samples_kept",
    "kill_round",
    "prometheus_samples",
    "round_plan",
    "run_experiment_process",
    "sleep_until_ttl_passed",
    "wait_for_load_start",
    "wrapper_faults",
]

METHOD_S = 5.0
# Every fault of the experiment ends by this many seconds after the method started (its TTL).
LAST_FAULT_END_S = 4.5
# How late a fault may end after its TTL: the holder's timer, one scrape, a loaded 2-core machine.
TTL_SLACK_S = 2.0
EXPERIMENT: dict[str, Any] = {
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
    """What a test saw, printed at the end for docs/reliability.md."""

    targets: Sequence[str]
    kills: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    runs_read_back: int = 0
    faults_applied: int = 0
    faults_not_applied: int = 0
    rows: int = 0
    scheduled: int = 0
    prometheus_samples_checked: int = 0
    prometheus_samples_lost: int = 0
    faults_past_ttl: int = 0
    labs: int = 0
    left_after_down: int = 0

    def __post_init__(self) -> None:
        self.kills = dict.fromkeys(self.targets, 0)

    def as_json(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if k != "targets"})


def round_plan(
    seed: int, rounds: int, per_round: int, targets: Sequence[str]
) -> list[list[tuple[str, float]]]:
    """Several kills per experiment: for each round, `per_round` distinct targets, each at its own random
    moment of the load (in time order). Every target is killed as often as any other, give or take one:
    each round takes the targets with the most kills still owed, ties broken by the seeded generator."""
    if not 0 < per_round <= len(targets):
        raise ValueError(f"per_round must be 1..{len(targets)} (distinct targets per round), not {per_round}")
    rng = random.Random(seed)
    total = rounds * per_round
    owed = {t: total // len(targets) for t in targets}
    for extra in rng.sample(list(targets), total % len(targets)):
        owed[extra] += 1
    plan = []
    for _ in range(rounds):
        order = list(targets)
        rng.shuffle(order)
        picked = sorted(order, key=lambda t: -owed[t])[:per_round]
        for target in picked:
            owed[target] -= 1
        moments = sorted(round(rng.uniform(0.2, METHOD_S - 0.3), 2) for _ in picked)
        rng.shuffle(picked)
        plan.append(list(zip(picked, moments, strict=True)))
    return plan


def all_ready(backend: Backend) -> bool:
    return all(s.state in ("ready", "external") for s in backend.status())


def run_experiment_process(
    config: LabConfig, out: Path, experiment: Path, log: Path
) -> subprocess.Popen[str]:
    """`labkit chaos run --file EXPERIMENT --out OUT` in a process of its own, its output in `log`."""
    out.mkdir()
    return subprocess.Popen(
        [
            sys.executable, "-m", "labkit.cli", "--lab-dir", str(config.lab_dir),
            "chaos", "run", "--file", str(experiment), "--out", str(out),
        ],
        stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible,
    )  # fmt: skip


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


@dataclass
class KillRound:
    """One experiment of a kill test, after its kills: its run directory, when its load started, its log,
    and the `up` samples Prometheus held in `window` before it was killed (none when it was not)."""

    run: RunDirectory
    load_start: float
    log: Path
    snapshot: dict[str, list[float]]
    window: tuple[float, float]


def kill_round(
    config: LabConfig,
    folder: Path,
    index: int,
    experiment: Path,
    kills: Sequence[tuple[str, float]],
    kill: Callable[[str, subprocess.Popen[str]], None],
    tally: Tally,
) -> KillRound:
    """Run experiment number `index` and, at each (target, seconds after its load started) of `kills`,
    `kill(target, the experiment's process)`, after a snapshot of Prometheus' samples when the target is
    Prometheus; wait for the experiment to end (or end it)."""
    out, log = folder / f"runs-{index}", folder / f"experiment-{index}.log"
    prom_url = f"http://127.0.0.1:{config.prometheus_port}"
    proc = run_experiment_process(config, out, experiment, log)
    snapshot: dict[str, list[float]] = {}
    window = (0.0, 0.0)
    try:
        run, load_start = wait_for_load_start(out, proc)
        for target, at in kills:
            time.sleep(max(0.0, load_start + at - time.time()))
            if target == "prometheus":
                window = (load_start - 30, time.time() - 1)
                snapshot = prometheus_samples(prom_url, *window)
                assert sum(map(len, snapshot.values())) > 0, "Prometheus had nothing to lose"
            kill(target, proc)
            tally.kills[target] += 1
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return KillRound(run, load_start, log, snapshot, window)


def assert_experiment_did_not_crash(log: Path, what: str) -> None:
    output = log.read_text()
    assert "Traceback" not in output, f"{what}: the experiment crashed:\n{output}"


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


def check_samples_kept(
    url: str, window: tuple[float, float], snapshot: dict[str, list[float]], tally: Tally, what: str
) -> None:
    """Every `up` sample of `snapshot` (taken before Prometheus was killed) is back after its restart."""
    after = prometheus_samples(url, *window)
    for job, stamps in snapshot.items():
        lost = sorted(set(stamps) - set(after.get(job, [])))
        tally.prometheus_samples_checked += len(stamps)
        tally.prometheus_samples_lost += len(lost)
        assert not lost, f"{what}: {len(lost)} samples of job {job} lost: {lost[:5]}"


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
    applied = sum(1 for e in events if e["kind"] == "fault_start")
    failed = sum(1 for e in events if e["kind"] == "fault_failed")  # the component holding it was down
    if not experiment_killed:
        assert applied + failed == len(EXPERIMENT["faults"]), f"{applied} applied + {failed} failed faults"
    tally.faults_applied += applied
    tally.faults_not_applied += failed
    tally.runs_read_back += 1
    tally.rows += len(ids)
    tally.scheduled += scheduled


def sleep_until_ttl_passed(load_start: float) -> None:
    """Until every fault of EXPERIMENT is past its TTL, with the slack a loaded machine needs."""
    time.sleep(max(0.0, load_start + LAST_FAULT_END_S + TTL_SLACK_S - time.time()))


def wrapper_faults(backend: Backend) -> list[str]:
    """The faults the running lab's wrapper still holds ("kind (id ...)"); none from a wrapper that is
    restarting (a new wrapper holds no fault)."""
    if not backend.is_running():
        return []
    cfg = backend.saved_config()
    try:
        response = httpx.get(
            f"http://127.0.0.1:{cfg.wrapper_port}/admin/faults",
            headers={"Authorization": f"Bearer {backend.lab.read_token()}"},
            timeout=5,
        )
    except httpx.TransportError:
        return []
    faults = response.json()["faults"] if response.status_code == 200 else []
    return [f"wrapper still holds {f['kind']} (id {f['id']})" for f in faults]
