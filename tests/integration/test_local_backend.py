"""The local backend for real: supervisor, model server, wrapper, Prometheus and exporter as processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from labkit.config import LabConfig
from labkit.errors import ConfigError, LabAlreadyRunningError, PortInUseError
from labkit.lab.local import LocalBackend
from labkit.lab.processes import find_lab_processes
from labkit.rundir import RunFile
from tests.conftest import lab_id_of, promtool_check_metrics, wait_for

pytestmark = pytest.mark.integration


def prometheus_value(cfg: LabConfig, query: str) -> float | None:
    response = httpx.get(f"http://127.0.0.1:{cfg.prometheus_port}/api/v1/query", params={"query": query})
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def generate(cfg: LabConfig, prompt: str = "Hello", **extra: object) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{cfg.wrapper_port}/generate", json={"prompt": prompt, **extra}, timeout=30
    )


def test_up_starts_five_ready_services_and_serves_requests(running_lab: LocalBackend) -> None:
    services = {s.name: s for s in running_lab.status()}
    assert set(services) == {"model", "wrapper", "alertmanager", "prometheus", "exporter"}
    assert all(s.state == "ready" for s in services.values())
    assert all(s.pid and psutil.pid_exists(s.pid) for s in services.values())
    assert all(s.restarts == 0 for s in services.values())
    response = generate(running_lab.config, max_tokens=8)
    assert response.status_code == 200, response.text
    assert response.json()["output_tokens"] == 8
    # Prometheus scrapes every service that has metrics.
    cfg = running_lab.config
    wait_for(
        lambda: (
            prometheus_value(cfg, 'count(up{job=~"model|wrapper|exporter|alertmanager|prometheus"} == 1)')
            == 5
        ),
        what="five healthy scrape targets",
    )


def test_prometheus_loads_the_slo_recording_and_alerting_rules(running_lab: LocalBackend) -> None:
    url = f"http://127.0.0.1:{running_lab.config.prometheus_port}/api/v1/rules"
    groups = httpx.get(url).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert any(r["type"] == "alerting" and r["name"] == "SloErrorBudgetBurnPage" for r in rules)
    assert any(r["type"] == "recording" and r["name"].startswith("slo:sli_error:ratio_rate") for r in rules)
    assert all(r["health"] != "err" for r in rules), [r for r in rules if r["health"] == "err"]


def test_the_control_api_needs_the_lab_token(running_lab: LocalBackend) -> None:
    base = f"http://127.0.0.1:{running_lab.config.exporter_port}"
    assert httpx.get(f"{base}/v1/status").status_code == 401
    assert httpx.get(f"{base}/v1/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    token = running_lab.lab.read_token()
    assert httpx.get(f"{base}/v1/status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert oct(running_lab.lab.token_file.stat().st_mode & 0o777) == "0o600"


def test_exporter_metrics_pass_promtool(running_lab: LocalBackend) -> None:
    body = httpx.get(f"http://127.0.0.1:{running_lab.config.exporter_port}/metrics").text
    assert 'lab_service_restarts_total{service="model"} 0.0' in body
    assert "lab_gpu_available" in body
    result = promtool_check_metrics(body)
    assert result.returncode == 0 and not result.stdout and not result.stderr, result.stdout + result.stderr


def test_kill_from_outside_is_restarted_and_counted_once(running_lab: LocalBackend) -> None:
    cfg = running_lab.config
    model_pid = next(s.pid for s in running_lab.status() if s.name == "model")
    assert model_pid is not None
    wait_for(
        lambda: prometheus_value(cfg, 'lab_service_restarts_total{service="model"}') == 0,
        what="Prometheus seeing zero restarts",
    )
    os.kill(model_pid, signal.SIGKILL)  # as `kill -9 <pid>` from a shell would
    wait_for(
        lambda: prometheus_value(cfg, 'lab_service_restarts_total{service="model"}') == 1,
        what="Prometheus counting the restart",
    )
    wait_for(lambda: generate(cfg, max_tokens=4).status_code == 200, what="a successful request")
    model = next(s for s in running_lab.status() if s.name == "model")
    assert model.restarts == 1
    assert model.pid != model_pid
    # Counted once: it stays 1 over further scrapes.
    time.sleep(2.5 * cfg.scrape_interval_s)
    assert prometheus_value(cfg, 'lab_service_restarts_total{service="model"}') == 1
    assert prometheus_value(cfg, 'lab_service_restarts_total{service="wrapper"}') == 0


def test_restart_through_the_backend_is_counted(running_lab: LocalBackend) -> None:
    running_lab.restart("wrapper")
    wait_for(
        lambda: (
            next(s for s in running_lab.status() if s.name == "wrapper").state == "ready"
            and next(s for s in running_lab.status() if s.name == "wrapper").restarts == 1
        ),
        what="the wrapper restarted and ready",
    )


def test_down_leaves_no_process(lab_config: LabConfig) -> None:
    backend = LocalBackend(lab_config)
    try:
        backend.up()
        lab_id = lab_id_of(backend)
        assert len(find_lab_processes(lab_id)) >= 4  # supervisor, model, wrapper, prometheus
    finally:
        backend.down()
    assert find_lab_processes(lab_id) == []
    assert not backend.is_running()


def test_down_leaves_no_process_after_the_supervisor_was_killed(lab_config: LabConfig) -> None:
    backend = LocalBackend(lab_config)
    try:
        backend.up()
        lab_id = lab_id_of(backend)
        pids = [s.pid for s in backend.status() if s.pid]
        supervisor_pid = json.loads(backend.lab.state_file.read_text())["supervisor_pid"]
        os.kill(supervisor_pid, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10)
    finally:
        backend.down()
    assert find_lab_processes(lab_id) == []
    # Nothing listens on the lab's ports any more.
    for port in (lab_config.model_port, lab_config.wrapper_port, lab_config.prometheus_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_taken_port_is_refused_before_anything_starts(lab_config: LabConfig) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", lab_config.prometheus_port))
        blocker.listen()
        backend = LocalBackend(lab_config)
        with pytest.raises(PortInUseError, match=r"--prometheus-port"):
            backend.up()
    assert not backend.is_running()
    assert not backend.lab.state_file.exists()


def test_missing_prometheus_binary_is_refused(lab_config: LabConfig) -> None:
    cfg = lab_config.model_copy(update={"prometheus_bin": "/nonexistent/prometheus"})
    with pytest.raises(ConfigError, match="apt-get install prometheus"):
        LocalBackend(cfg).up()


def test_a_second_up_is_refused_and_leaves_the_first_running(running_lab: LocalBackend) -> None:
    with pytest.raises(LabAlreadyRunningError, match="labkit down"):
        LocalBackend(running_lab.config).up()
    assert all(s.state == "ready" for s in running_lab.status())


def test_a_service_that_cannot_start_fails_up_and_nothing_is_left(
    lab_config: LabConfig, tmp_path: Path
) -> None:
    broken = tmp_path / "prometheus-broken"
    broken.write_text("#!/bin/sh\necho 'this prometheus refuses to start' >&2\nexit 3\n")
    broken.chmod(0o755)
    backend = LocalBackend(lab_config.model_copy(update={"prometheus_bin": str(broken)}))
    with pytest.raises(Exception, match="refuses to start"):
        backend.up()
    assert not backend.is_running()
    assert find_lab_processes(lab_id_of(backend)) == []


def _cli(lab_config: LabConfig, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABKIT_LAB_DIR": str(lab_config.lab_dir)}
    return subprocess.run(
        [sys.executable, "-m", "labkit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_up_status_json_down(lab_config: LabConfig) -> None:
    ports = [
        f"--model-port={lab_config.model_port}",
        f"--wrapper-port={lab_config.wrapper_port}",
        f"--prometheus-port={lab_config.prometheus_port}",
        f"--exporter-port={lab_config.exporter_port}",
        f"--alertmanager-port={lab_config.alertmanager_port}",
    ]
    try:
        up = _cli(lab_config, "up", "--engine", "sim", *ports)
        assert up.returncode == 0, up.stderr
        status = _cli(lab_config, "status", "--json")
        assert status.returncode == 0, status.stderr
        services = json.loads(status.stdout)
        assert [s["name"] for s in services] == ["model", "wrapper", "alertmanager", "prometheus", "exporter"]
        for svc in services:
            assert set(svc) == {"name", "state", "pid", "restarts", "url", "container"}
            assert svc["state"] == "ready" and svc["restarts"] == 0 and isinstance(svc["pid"], int)
            assert svc["container"] is None  # only the Docker backend's services have one
        again = _cli(lab_config, "up", "--engine", "sim", *ports)
        assert again.returncode == 1 and again.stderr.startswith("error: a lab is already running")
    finally:
        down = _cli(lab_config, "down")
    assert down.returncode == 0 and "stopped the lab" in down.stdout
    nothing = _cli(lab_config, "down")
    assert nothing.returncode == 0 and "nothing to stop" in nothing.stdout
    status = _cli(lab_config, "status")
    assert status.returncode == 1 and "labkit up" in status.stderr


def _port_flags(cfg: LabConfig) -> list[str]:
    return [
        f"--model-port={cfg.model_port}",
        f"--wrapper-port={cfg.wrapper_port}",
        f"--prometheus-port={cfg.prometheus_port}",
        f"--exporter-port={cfg.exporter_port}",
        f"--alertmanager-port={cfg.alertmanager_port}",
    ]


def test_cli_up_returns_at_services_ready_and_wait_scraped_follows(lab_config: LabConfig) -> None:
    """`labkit up` does not wait for Prometheus' first scrape (5-6 s after it starts, on 2.42's 5 s ticks);
    `wait_scraped` does, and then every target is up in Prometheus itself."""
    try:
        up = _cli(lab_config, "up", "--engine", "sim", *_port_flags(lab_config))
        assert up.returncode == 0, up.stderr
        assert "scripts can pass --wait-scraped" in up.stderr
        assert "prometheus has scraped every service" not in up.stderr  # it did not wait for that
        backend = LocalBackend.attach(lab_config.lab_dir)
        assert all(s.state == "ready" for s in backend.status())
        said: list[str] = []
        backend.wait_scraped(say=said.append)
        assert backend.prometheus_unscraped_targets() == {}
        assert prometheus_value(lab_config, "count(up == 1)") == 5
        assert prometheus_value(lab_config, "count(up)") == 5
        status = _cli(lab_config, "status")
        assert status.returncode == 0, status.stderr
        assert status.stdout.rstrip().endswith("prometheus: every service answered its last scrape")
    finally:
        _cli(lab_config, "down")


def test_cli_up_wait_scraped_returns_with_every_target_scraped(lab_config: LabConfig) -> None:
    try:
        up = _cli(lab_config, "up", "--engine", "sim", "--wait-scraped", "--json", *_port_flags(lab_config))
        assert up.returncode == 0, up.stderr
        assert [s["name"] for s in json.loads(up.stdout)] == [
            "model",
            "wrapper",
            "alertmanager",
            "prometheus",
            "exporter",
        ]
        assert "prometheus has scraped every service" in up.stderr
        assert LocalBackend.attach(lab_config.lab_dir).prometheus_unscraped_targets() == {}
    finally:
        _cli(lab_config, "down")


def test_a_kill_right_after_cli_up_is_seen_by_prometheus(lab_config: LabConfig, tmp_path: Path) -> None:
    """`labkit up`, then a chaos run at once: the experiment waits for Prometheus' first scrape, so the
    restart counter has a sample from before the kill (increase() needs one) and the run loses nothing."""
    from labkit.chaos import ExperimentSpec, Fault, run_experiment

    try:
        up = _cli(lab_config, "up", "--engine", "sim", *_port_flags(lab_config))
        assert up.returncode == 0, up.stderr
        spec = ExperimentSpec(
            schedule=[Fault(kind="kill", target="model", start_s=0, duration_s=2)],
            duration_s=2,
            load={"rate": 2},
            steady_state={"enabled": False},
        )
        result = run_experiment(lab_config.lab_dir, spec, out_dir=tmp_path / "runs", say=None)
        assert result.verdict == "not checked", result.summary()
        # The run followed the lab's Alertmanager notifications (whether or not any alert fired).
        assert result.run_dir.file(RunFile.ALERTS).is_file()
        assert all(row["receiver"] == "lab" for row in result.run_dir.read_jsonl(RunFile.ALERTS))
        restarts = 'lab_service_restarts_total{service="model"}'
        wait_for(lambda: prometheus_value(lab_config, restarts) == 1, what="Prometheus sees the restart")
        assert prometheus_value(lab_config, f"min_over_time({restarts}[10m])") == 0
        assert (prometheus_value(lab_config, f"increase({restarts}[10m])") or 0) > 0
    finally:
        _cli(lab_config, "down")


def test_open_lab_on_a_lab_cli_up_just_started_waits_for_the_first_scrape(lab_config: LabConfig) -> None:
    """`labkit up`, then `labkit run` at once: the notebook's open_lab attaches and waits for the scrape."""
    from labkit.scenarios import open_lab

    try:
        up = _cli(lab_config, "up", "--engine", "sim", *_port_flags(lab_config))
        assert up.returncode == 0, up.stderr
        with open_lab(lab_config.lab_dir, say=None) as session:
            assert not session.started_here
            assert session.backend.prometheus_unscraped_targets() == {}
        assert LocalBackend.attach(lab_config.lab_dir).is_running()  # attached, so left running
    finally:
        _cli(lab_config, "down")
