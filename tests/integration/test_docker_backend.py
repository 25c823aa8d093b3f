"""The Docker backend against a real Docker engine: `labkit up --backend docker`, a kill that Docker's restart
policy counts, pause/unpause, chaos faults through the agent, and a `labkit down` that removes the lab's
containers and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from labkit.chaos import ExperimentSpec, Fault, run_experiment
from labkit.config import LabConfig
from labkit.errors import BackendError
from labkit.lab.contract import LABEL_LAB, LABEL_SERVICE, SERVICE_NAMES
from labkit.lab.docker import DockerBackend
from labkit.measure.prom import PrometheusClient
from tests.conftest import sim_lab_config, wait_for

pytestmark = pytest.mark.integration


def _cli(lab_dir: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labkit.cli", "--lab-dir", str(lab_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
        check=False,
    )


def _ports(cfg: LabConfig) -> list[str]:
    return [
        f"--model-port={cfg.model_port}",
        f"--wrapper-port={cfg.wrapper_port}",
        f"--prometheus-port={cfg.prometheus_port}",
        f"--exporter-port={cfg.exporter_port}",
        f"--alertmanager-port={cfg.alertmanager_port}",
    ]


@pytest.fixture(scope="module")
def docker_lab(
    docker_client: Any, lab_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DockerBackend]:
    """One sim-engine lab on the Docker backend, started with the CLI as a user would (a script that
    queries Prometheus next: --wait-scraped)."""
    cfg = sim_lab_config(tmp_path_factory.mktemp("docker"), backend="docker")
    up = _cli(
        cfg.lab_dir, "up", "--backend", "docker", "--engine", "sim", *_ports(cfg), "--json", "--wait-scraped"
    )
    backend = DockerBackend.attach(cfg.lab_dir)
    try:
        assert up.returncode == 0, up.stderr
        yield backend
    finally:
        _cli(cfg.lab_dir, "down")
        left = docker_client.containers.list(all=True, filters={"label": f"{LABEL_LAB}"})
        for container in left:  # a failed test must not leave the lab's containers behind
            if container.labels.get(LABEL_LAB) == backend._lab_id():
                container.remove(force=True)


def _status(backend: DockerBackend) -> dict[str, Any]:
    return {s.name: s for s in backend.status()}


def _exported_restarts(cfg: LabConfig, service: str) -> float | None:
    body = httpx.get(f"http://127.0.0.1:{cfg.exporter_port}/metrics", timeout=5).text
    for line in body.splitlines():
        if line.startswith(f'lab_service_restarts_total{{service="{service}"}}'):
            return float(line.split()[-1])
    return None


def _value(cfg: LabConfig, query: str) -> float | None:
    with PrometheusClient(f"http://127.0.0.1:{cfg.prometheus_port}") as prom:
        result = prom.instant(query)
    return float(result[0]["value"][1]) if result else None


def _generate(cfg: LabConfig, timeout: float = 10) -> int:
    try:
        response = httpx.post(
            f"http://127.0.0.1:{cfg.wrapper_port}/generate",
            json={"prompt": "hello", "max_tokens": 4},
            timeout=timeout,
        )
    except httpx.HTTPError:
        return 0
    return response.status_code


def test_up_runs_every_service_as_a_labelled_container(docker_lab: DockerBackend, docker_client: Any) -> None:
    cfg = docker_lab.saved_config()
    status = _status(docker_lab)
    assert list(status) == ["model", "wrapper", "alertmanager", "prometheus", "exporter"]
    assert all(s.state == "ready" for s in status.values()), status
    lab_id = docker_lab._lab_id()
    containers = docker_client.containers.list(filters={"label": f"{LABEL_LAB}={lab_id}"})
    by_service = {c.labels[LABEL_SERVICE]: c for c in containers}
    assert sorted(by_service) == ["alertmanager", "exporter", "model", "prometheus", "wrapper"]
    assert docker_lab.prometheus_unscraped_targets() == {}  # the fixture passed --wait-scraped
    for name, container in by_service.items():
        attrs = container.attrs
        assert attrs["HostConfig"]["NetworkMode"] == "host"
        assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        # Not root: not by the configured user, not by the main process's real uid (read on the host, where
        # the engine runs its processes), and with nothing to regain it (no capability, no setuid).
        assert attrs["Config"]["User"].split(":")[0] not in ("", "0", "root"), (name, attrs["Config"]["User"])
        assert psutil.Process(attrs["State"]["Pid"]).uids().real != 0, name
        assert attrs["HostConfig"]["CapDrop"] == ["ALL"], name
        assert "no-new-privileges" in attrs["HostConfig"]["SecurityOpt"], name
        if name != "exporter":
            assert status[name].container == container.short_id
    assert _generate(cfg) == 200
    # Prometheus (a container too) scrapes every service, the agent included.
    wait_for(
        lambda: _value(cfg, "sum(up)") == len(SERVICE_NAMES),
        timeout_s=20,
        what="Prometheus scrapes every service",
    )


def test_kill_of_the_model_container_is_counted_by_docker_and_recovers(
    docker_lab: DockerBackend, docker_client: Any
) -> None:
    cfg = docker_lab.saved_config()
    model = next(
        c
        for c in docker_client.containers.list(filters={"label": f"{LABEL_LAB}={docker_lab._lab_id()}"})
        if c.labels[LABEL_SERVICE] == "model"
    )
    assert model.attrs["RestartCount"] == 0
    docker_lab.kill("model")
    wait_for(
        lambda: (model.reload() or model.attrs["RestartCount"]) == 1, timeout_s=30, what="RestartCount 1"
    )
    wait_for(lambda: _exported_restarts(cfg, "model") == 1, timeout_s=30, what="exported restarts 1")
    wait_for(lambda: _status(docker_lab)["model"].state == "ready", timeout_s=60, what="model ready")
    wait_for(lambda: _generate(cfg) == 200, timeout_s=60, what="requests recover")
    wait_for(
        lambda: _value(cfg, 'lab_service_restarts_total{service="model"}') == 1,
        timeout_s=30,
        what="Prometheus sees the restart",
    )
    assert _status(docker_lab)["model"].restarts == 1
    assert _status(docker_lab)["wrapper"].restarts == 0


def test_pause_holds_requests_until_unpause_and_ends_at_its_ttl(
    docker_lab: DockerBackend, docker_client: Any
) -> None:
    cfg = docker_lab.saved_config()
    docker_lab.pause("model", 60)
    assert _status(docker_lab)["model"].state == "paused"
    model_url = f"http://127.0.0.1:{cfg.model_port}/api/tags"
    with pytest.raises(httpx.TimeoutException):
        httpx.get(model_url, timeout=1.5)
    docker_lab.unpause("model")
    assert httpx.get(model_url, timeout=5).status_code == 200
    # A pause ends by itself at its TTL, held by the agent.
    docker_lab.pause("model", 2)
    started = time.monotonic()
    wait_for(lambda: _status(docker_lab)["model"].state == "ready", timeout_s=20, what="pause TTL")
    assert time.monotonic() - started >= 1.5
    assert httpx.get(model_url, timeout=5).status_code == 200


def test_chaos_faults_work_through_the_agent(docker_lab: DockerBackend, tmp_path: Path) -> None:
    """Faults of every way of applying them — a graceful restart (signal from the agent), a pause (TTL in
    the agent), stress-ng (in the agent's container), the wrapper's own faults — on one short experiment."""
    cfg = docker_lab.saved_config()
    before = _status(docker_lab)["wrapper"].restarts
    schedule = [
        Fault(kind="restart", target="wrapper", start_s=1, duration_s=2),
        Fault(kind="pause", target="model", start_s=4, duration_s=2),
        Fault(kind="cpu_stress", start_s=8, duration_s=2, params={"workers": 1}),
        Fault(kind="latency", start_s=11, duration_s=2, params={"delay_s": 0.3}),
        Fault(kind="error", start_s=13.5, duration_s=1, params={"probability": 1.0, "status": 503}),
        Fault(kind="stream_cut", start_s=15, duration_s=1, params={"after_tokens": 2}),
        Fault(kind="unload", start_s=16.5, duration_s=1),
    ]
    spec = ExperimentSpec(
        schedule=schedule, duration_s=18, load={"rate": 4, "max_tokens": 4}, steady_state={"enabled": False}
    )
    result = run_experiment(docker_lab.lab.root, spec, run_dir=tmp_path, say=None)
    assert result.verdict == "not checked", result.summary()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    started = [(e["fault_kind"], e["outcome"]) for e in events if e["kind"] == "fault_start"]
    kinds = ("restart", "pause", "cpu_stress", "latency", "error", "stream_cut", "unload")
    assert started == [(k, "applied") for k in kinds], events
    ended = {e["fault_kind"] for e in events if e["kind"] == "fault_end"}
    assert ended >= {"pause", "cpu_stress", "latency", "error", "stream_cut"}, events
    # The error fault's 503s reached the client.
    statuses = [
        json.loads(line).get("status") for line in (tmp_path / "requests.jsonl").read_text().splitlines()
    ]
    assert 503 in statuses
    wait_for(
        lambda: _status(docker_lab)["wrapper"].restarts == before + 1, timeout_s=30, what="restart counted"
    )
    wait_for(lambda: _value(cfg, "sum(llm_faults_active)") == 0, timeout_s=30, what="no fault left")
    assert _generate(cfg) == 200


def test_a_second_lab_in_the_same_directory_is_refused(docker_lab: DockerBackend, tmp_path: Path) -> None:
    """A local `up` in a Docker lab's directory (on other ports) would orphan the Docker lab: refused."""
    other = sim_lab_config(tmp_path)
    up = _cli(docker_lab.lab.root, "up", "--engine", "sim", *_ports(other))
    assert up.returncode == 1, up.stdout + up.stderr
    assert "already running" in up.stderr and "backend docker" in up.stderr
    assert docker_lab.is_running() and docker_lab.saved_config().backend == "docker"


def test_down_removes_the_labs_containers_and_nothing_else(
    docker_client: Any, lab_images: dict[str, str], tmp_path: Path
) -> None:
    cfg = sim_lab_config(tmp_path, backend="docker")
    bystander = docker_client.containers.run(
        lab_images["service"],
        ["python", "-c", "import time; time.sleep(300)"],
        detach=True,
        network_mode="none",
        labels={"io.labkit.test": "bystander"},
    )
    try:
        up = _cli(cfg.lab_dir, "up", "--backend", "docker", "--engine", "sim", *_ports(cfg))
        assert up.returncode == 0, up.stderr
        lab_id = DockerBackend.attach(cfg.lab_dir)._lab_id()
        assert len(docker_client.containers.list(filters={"label": f"{LABEL_LAB}={lab_id}"})) == len(
            SERVICE_NAMES
        )
        down = _cli(cfg.lab_dir, "down")
        assert down.returncode == 0 and f"({len(SERVICE_NAMES)} containers)" in down.stdout, (
            down.stdout + down.stderr
        )
        assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_LAB}={lab_id}"}) == []
        assert docker_client.networks.list(filters={"label": f"{LABEL_LAB}={lab_id}"}) == []
        bystander.reload()
        assert bystander.status == "running"
        again = _cli(cfg.lab_dir, "down")
        assert again.returncode == 0 and "nothing to stop" in again.stdout
    finally:
        _cli(cfg.lab_dir, "down")  # a failed check above must not leave the lab's containers running
        bystander.remove(force=True)


def test_up_refuses_missing_images_before_anything_starts(docker_client: Any, tmp_path: Path) -> None:
    def lab_containers() -> set[str]:
        return {c.id for c in docker_client.containers.list(all=True, filters={"label": LABEL_LAB})}

    before = lab_containers()
    cfg = sim_lab_config(tmp_path, backend="docker")
    up = _cli(
        cfg.lab_dir, "up", "--backend", "docker", "--engine", "sim", *_ports(cfg),
        "--service-image", "labkit/no-such-image:0",
    )  # fmt: skip
    assert up.returncode == 1
    assert "labkit/no-such-image:0" in up.stderr and "labkit images build" in up.stderr
    assert lab_containers() <= before
    assert not (cfg.lab_dir / "config.json").exists()  # nothing was started, so no lab id was made


def test_kill_and_recover_notebook_runs_on_the_docker_backend(
    docker_client: Any, lab_images: dict[str, str], tmp_path: Path
) -> None:
    """The kill-and-recover notebook with backend="docker" (`labkit run` starts the lab and takes it down
    again): a report, one kill, the model container restarted exactly once. The sim engine keeps the
    steady-state check deterministic on two busy cores; the model image's real SmolLM2 answers in
    tests/integration/test_docker_images.py."""
    from labkit.report import RunData, restarts_figure

    cfg = sim_lab_config(tmp_path, backend="docker")
    runs = tmp_path / "reports" / "runs"
    ports = {"LABKIT_" + k.upper(): str(getattr(cfg, k)) for k in
             ("model_port", "wrapper_port", "prometheus_port", "exporter_port",
              "alertmanager_port")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "--lab-dir", str(cfg.lab_dir), "run", "kill_and_recover",
         "--quick", "--backend", "docker", "--engine", "sim", "--out", str(runs), "--no-progress"],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, **ports},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    assert (run_dir / "report.html").is_file()
    run = RunData.load(run_dir)
    assert run.status == "completed" and run.info["parameters"]["backend"] == "docker"
    assert [f.kind for f in run.fault_windows] == ["kill"]
    restarts = restarts_figure(run)
    model_line = next(line for line in restarts.axes[0].get_lines() if line.get_label() == "model")
    assert max(model_line.get_ydata()) == 1  # type: ignore[type-var]
    # The lab the run started is gone again, containers and all.
    assert not DockerBackend.attach(cfg.lab_dir).is_running()
    lab_id = json.loads((cfg.lab_dir / "config.json").read_text())["lab_id"]
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_LAB}={lab_id}"}) == []


def test_a_lab_a_notebook_started_is_removed_when_its_kernel_exits(
    docker_client: Any, lab_images: dict[str, str], tmp_path: Path
) -> None:
    """open_lab's backstop (atexit) takes a Docker lab down too: no thread or executor may start by then."""
    cfg = sim_lab_config(tmp_path, backend="docker")
    script = (
        "from labkit import scenarios\n"
        f"lab = scenarios.open_lab({str(cfg.lab_dir)!r}, engine='sim', backend='docker', say=None,\n"
        f"    model_port={cfg.model_port}, wrapper_port={cfg.wrapper_port},\n"
        f"    prometheus_port={cfg.prometheus_port}, exporter_port={cfg.exporter_port},\n"
        f"    alertmanager_port={cfg.alertmanager_port})\n"
        "print(lab.status().to_json())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"container"' in done.stdout
    lab_id = json.loads((cfg.lab_dir / "config.json").read_text())["lab_id"]
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_LAB}={lab_id}"}) == []


def test_a_pause_ends_when_the_agent_holding_it_is_killed(
    docker_lab: DockerBackend, docker_client: Any
) -> None:
    """SIGKILL of the agent mid-pause: Docker restarts it, and the new agent ends the pause whose TTL died
    with its predecessor; the exporter's own restart is counted."""
    cfg = docker_lab.saved_config()
    docker_lab.pause("model", 300)
    agent = next(
        c
        for c in docker_client.containers.list(filters={"label": f"{LABEL_LAB}={docker_lab._lab_id()}"})
        if c.labels[LABEL_SERVICE] == "exporter"
    )
    os.kill(agent.attrs["State"]["Pid"], 9)

    def model_state() -> str | None:
        try:
            return _status(docker_lab)["model"].state
        except BackendError:  # the agent is restarting
            return None

    # "ready", not "failed": the new agent takes earlier restarts for history.
    wait_for(lambda: model_state() == "ready", timeout_s=60, what="pause ended")
    assert httpx.get(f"http://127.0.0.1:{cfg.model_port}/api/tags", timeout=5).status_code == 200
    assert _status(docker_lab)["exporter"].restarts == 1
