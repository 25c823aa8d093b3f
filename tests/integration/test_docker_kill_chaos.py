"""The Docker lab under its own chaos: SIGKILL its containers at random moments of running experiments.

The Docker backend's counterpart of test_kill_chaos.py (whose experiment, plan and checks it shares through
tests/kill_chaos.py). One seeded test (the same seed gives the same kills, printed before it runs) runs
`labkit chaos run` again and again on one Docker lab (sim engine) and, during each experiment's load, SIGKILLs
the main process of several of the lab's containers — model, wrapper, Prometheus, Alertmanager and the
agent (the `exporter` container: the lab's manager, which holds pause TTLs and runs stress-ng) — from the
host, as a crash would (a process that dies is what Docker's restart policy answers; `docker kill` through
the API is not, moby#28396). After every experiment it checks what the lab promises: no fault outlives its
TTL (no container left paused, no stress-ng, no fault in the wrapper), the run directory reads back whole
with one row per scheduled request, Prometheus kept every sample it had before it was killed, and at the
end `labkit down` leaves no container of the lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from labkit.config import LabConfig
from labkit.errors import BackendError
from labkit.lab.contract import LABEL_LAB, LABEL_SERVICE
from labkit.lab.docker import DockerBackend
from tests.conftest import sim_lab_config, wait_for
from tests.kill_chaos import (
    EXPERIMENT,
    METHOD_S,
    TTL_SLACK_S,
    Tally,
    all_ready,
    assert_experiment_did_not_crash,
    assert_run_directory_reads_back,
    check_samples_kept,
    kill_round,
    round_plan,
    sleep_until_ttl_passed,
    wrapper_faults,
)

pytestmark = pytest.mark.integration

SEED = 20261203
ROUNDS = 12
KILLS_PER_ROUND = 4
# The agent is the container labelled service "exporter" (labkit/lab/docker.py).
TARGETS = ("model", "wrapper", "prometheus", "alertmanager", "agent")
SERVICE_OF = {"agent": "exporter"}
# A restarting container has no process to kill yet: how long a kill may wait for one.
PROCESS_WAIT_S = 30.0


def test_the_plan_is_seeded_and_kills_every_container_alike() -> None:
    plan = round_plan(SEED, ROUNDS, KILLS_PER_ROUND, TARGETS)
    assert plan == round_plan(SEED, ROUNDS, KILLS_PER_ROUND, TARGETS)
    assert plan != round_plan(SEED + 1, ROUNDS, KILLS_PER_ROUND, TARGETS)
    kills = [kill for round_ in plan for kill in round_]
    assert len(plan) == ROUNDS and len(kills) == ROUNDS * KILLS_PER_ROUND >= 26
    counts = {t: sum(1 for k, _ in kills if k == t) for t in TARGETS}
    assert min(counts.values()) >= ROUNDS * KILLS_PER_ROUND // len(TARGETS), counts
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    for round_ in plan:
        assert len({t for t, _ in round_}) == KILLS_PER_ROUND  # distinct containers in one experiment
        moments = [at for _, at in round_]
        assert moments == sorted(moments) and all(0 < at < METHOD_S for at in moments)
    with pytest.raises(ValueError, match="distinct targets"):
        round_plan(SEED, 1, len(TARGETS) + 1, TARGETS)


@pytest.fixture
def docker_lab(docker_client: Any, lab_images: dict[str, str], tmp_path: Path) -> Iterator[DockerBackend]:
    """A sim-engine lab on the Docker backend; whatever the test did, no container of it is left."""
    config = sim_lab_config(tmp_path, backend="docker", max_in_flight=64)
    backend = DockerBackend(config)
    try:
        backend.up()
        yield backend
    finally:
        lab_id = backend._lab_id()
        with contextlib.suppress(BackendError):
            backend.down()
        if lab_id is not None:
            for container in lab_containers(docker_client, lab_id):
                container.remove(force=True)


def lab_containers(client: Any, lab_id: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"{LABEL_LAB}={lab_id}"}))


def container_of(client: Any, lab_id: str, target: str) -> Any:
    service = SERVICE_OF.get(target, target)
    (container,) = [c for c in lab_containers(client, lab_id) if c.labels[LABEL_SERVICE] == service]
    return container


def kill_main_process(client: Any, lab_id: str, target: str) -> None:
    """SIGKILL of the container's main process from the host (a container Docker is still restarting from
    an earlier kill gets its kill once its process runs)."""
    container = container_of(client, lab_id, target)

    def main_pid() -> int:
        container.reload()
        return int(container.attrs["State"]["Pid"] or 0)

    pid = wait_for(main_pid, timeout_s=PROCESS_WAIT_S, what=f"a process in the {target} container")
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)


def ready(backend: DockerBackend) -> bool:
    try:
        return all_ready(backend)
    except BackendError:  # the agent is restarting: the control API does not answer yet
        return False


def stress_ng_of(container_ids: set[str]) -> list[str]:
    """stress-ng processes anywhere on the host that run in one of the lab's containers (by cgroup)."""
    found = []
    for proc in psutil.process_iter(["name", "pid"]):
        if not (proc.info["name"] or "").startswith("stress-ng"):
            continue
        try:
            cgroups = Path(f"/proc/{proc.info['pid']}/cgroup").read_text()
        except OSError:
            continue
        if any(cid in cgroups for cid in container_ids):
            found.append(f"stress-ng (pid {proc.info['pid']}) still runs")
    return found


def assert_no_fault_left(
    backend: DockerBackend, client: Any, lab_id: str, load_start: float, tally: Tally
) -> None:
    """By the last fault's TTL (plus slack): no container paused, no stress-ng, no fault in the wrapper."""
    sleep_until_ttl_passed(load_start)
    containers = lab_containers(client, lab_id)
    left = [f"{c.labels[LABEL_SERVICE]} is still paused" for c in containers if c.status == "paused"]
    left += stress_ng_of({c.id for c in containers})
    left += wrapper_faults(backend)
    tally.faults_past_ttl += len(left)
    assert not left, f"faults past their TTL: {left}"


def test_random_sigkills_of_every_container(
    docker_lab: DockerBackend, docker_client: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    backend = docker_lab
    config: LabConfig = backend.saved_config()
    lab_id = backend._lab_id()
    assert lab_id is not None
    plan = round_plan(SEED, ROUNDS, KILLS_PER_ROUND, TARGETS)
    print(
        f"kill plan (seed {SEED}):",
        "; ".join(", ".join(f"{t}@{at:g}s" for t, at in round_) for round_ in plan),
    )
    experiment = tmp_path / "experiment.json"
    experiment.write_text(json.dumps(EXPERIMENT))
    tally = Tally(TARGETS, labs=1)
    backend.wait_scraped()
    # The check for a stress-ng left behind sees the lab's own: one started by the agent is found, and is
    # gone by its TTL.
    ids = {c.id for c in lab_containers(docker_client, lab_id)}
    backend.start_stress(workers=1, duration_s=1.0)
    wait_for(lambda: stress_ng_of(ids), timeout_s=5, what="the agent's stress-ng", interval_s=0.05)
    wait_for(lambda: not stress_ng_of(ids), timeout_s=1 + TTL_SLACK_S, what="stress-ng gone by its TTL")
    prom_url = f"http://127.0.0.1:{config.prometheus_port}"

    def kill(target: str, _: subprocess.Popen[str]) -> None:
        kill_main_process(docker_client, lab_id, target)

    for index, kills in enumerate(plan):
        tally.rounds += 1
        what = f"round {index} ({', '.join(t for t, _ in kills)})"
        done = kill_round(config, tmp_path, index, experiment, kills, kill, tally)
        assert_experiment_did_not_crash(done.log, what)
        assert_no_fault_left(backend, docker_client, lab_id, done.load_start, tally)
        assert_run_directory_reads_back(done.run, experiment_killed=False, tally=tally)
        wait_for(lambda: ready(backend), timeout_s=90, what=f"the lab to recover after {what}")
        if done.snapshot:
            # Samples scraped before the kill come back from the TSDB in the lab directory (its WAL).
            check_samples_kept(prom_url, done.window, done.snapshot, tally, what)
    # Every kill took: Docker restarted each container once per kill of its process (nothing else restarts
    # them here: the experiment has no restart fault, and remediation is off).
    restarts = {t: container_of(docker_client, lab_id, t).attrs["RestartCount"] for t in TARGETS}
    assert restarts == tally.kills, f"restarts by Docker {restarts} != kills {tally.kills}"
    backend.down()
    left = lab_containers(docker_client, lab_id)
    tally.left_after_down = len(left)
    assert left == [], f"containers left after labkit down: {[c.name for c in left]}"
    print("tally:", tally.as_json())
    print(f"duration: {time.monotonic() - started:.0f} s")
    assert sum(tally.kills.values()) == ROUNDS * KILLS_PER_ROUND
