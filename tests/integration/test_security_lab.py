"""SECURITY.md's promises on a real lab (sim engine, started with `labkit up` as a user would): every socket
on loopback, both token-protected APIs refusing what they must, chaos and `labkit down` touching only the
lab's own processes, and no token in any file the lab or an experiment wrote."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from labkit.config import LabConfig
from labkit.lab.processes import LAB_ID_ENV, find_lab_processes
from tests.conftest import sim_lab_config, wait_for

pytestmark = pytest.mark.integration

SERVICES = ("model", "wrapper", "prometheus", "exporter")


def _cli(cfg: LabConfig, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABKIT_LAB_DIR": str(cfg.lab_dir)}
    return subprocess.run(
        [sys.executable, "-m", "labkit.cli", *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip


@dataclass
class Lab:
    config: LabConfig
    lab_id: str
    token: str
    api_key: str  # the wrapper's /generate key: the lab runs with --api-key-file
    outputs: list[str]  # everything the lab's commands printed, scanned for the token too

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = _cli(self.config, *args, timeout=timeout)
        self.outputs += [done.stdout, done.stderr]
        return done

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{getattr(self.config, f'{service}_port')}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    cfg = sim_lab_config(tmp_path_factory.mktemp("security"))
    ports = [f"--{s}-port={getattr(cfg, f'{s}_port')}" for s in SERVICES]
    key_file = tmp_path_factory.mktemp("secrets") / "api_key"
    key_file.write_text(secrets.token_urlsafe(24) + "\n")
    key_file.chmod(0o600)
    try:
        up = _cli(cfg, "up", "--engine", "sim", "--wait-scraped", "--api-key-file", str(key_file), *ports)
        assert up.returncode == 0, up.stderr
        assert "warning:" not in up.stderr  # the default, loopback, exposes nothing
        saved = json.loads((cfg.lab_dir / "config.json").read_text())
        token = (cfg.lab_dir / "token").read_text().strip()
        yield Lab(cfg, saved["lab_id"], token, key_file.read_text().strip(), [up.stdout, up.stderr])
    finally:
        _cli(cfg, "down")


_RECORDER = textwrap.dedent("""
    import signal, sys, time
    log = sys.argv[1]
    def record(number, frame):
        with open(log, "a") as out:
            out.write(f"{number}\\n")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGCONT):
        signal.signal(sig, record)
    open(log, "a").close()
    time.sleep(600)
""")


@dataclass
class Bystander:
    """A process that is not the lab's: it records every signal it can catch (SIGKILL and SIGSTOP it cannot,
    but they leave it dead or stopped)."""

    what: str
    proc: subprocess.Popen[bytes]
    log: Path

    def untouched(self) -> bool:
        status = psutil.Process(self.proc.pid).status()
        return self.proc.poll() is None and status != psutil.STATUS_STOPPED and self.log.read_text() == ""


@pytest.fixture(scope="module")
def bystanders(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Bystander]]:
    folder = tmp_path_factory.mktemp("bystanders")
    markers = {
        "no lab id": None,
        "another lab's id": uuid.uuid4().hex,
        "this id with a suffix": lab.lab_id + "0",
        "this id less its last character": lab.lab_id[:-1],
    }
    started: list[Bystander] = []
    try:
        for i, (what, marker) in enumerate(markers.items()):
            env = {k: v for k, v in os.environ.items() if k != LAB_ID_ENV}
            if marker is not None:
                env[LAB_ID_ENV] = marker
            log = folder / f"signals-{i}.log"
            proc = subprocess.Popen(
                [sys.executable, "-c", _RECORDER, str(log)], env=env, start_new_session=True
            )
            started.append(Bystander(what, proc, log))
        wait_for(lambda: all(b.log.exists() for b in started), what="the bystanders' handlers")
        yield started
    finally:
        for b in started:
            b.proc.kill()
            b.proc.wait(timeout=10)


def _lab_pids(lab: Lab) -> set[int]:
    state = json.loads((lab.config.lab_dir / "state.json").read_text())
    supervisor = psutil.Process(state["supervisor_pid"])
    return {supervisor.pid, *(c.pid for c in supervisor.children(recursive=True))} | {
        p.pid for p in find_lab_processes(lab.lab_id)
    }


def test_every_socket_the_lab_listens_on_is_loopback(lab: Lab) -> None:
    listening: dict[int, str] = {}
    unconnected_udp: list[str] = []
    for pid in _lab_pids(lab):
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                listening[conn.laddr.port] = conn.laddr.ip
            elif conn.type == socket.SOCK_DGRAM and not conn.raddr:
                unconnected_udp.append(f"{conn.laddr.ip}:{conn.laddr.port}")
    # Every service's port is found (the check saw the real sockets), and nothing listens off loopback.
    assert {getattr(lab.config, f"{s}_port") for s in SERVICES} <= set(listening), listening
    assert {port: ip for port, ip in listening.items() if ip != "127.0.0.1"} == {}
    assert [a for a in unconnected_udp if not a.startswith("127.")] == []


def test_prometheus_cannot_be_stopped_without_the_token(lab: Lab) -> None:
    """Its lifecycle API is off: /-/quit would stop it for anyone on the machine, token or not."""
    assert httpx.post(f"{lab.url('prometheus')}/-/quit").status_code == 403
    assert httpx.get(f"{lab.url('prometheus')}/-/ready").status_code == 200


def test_the_control_api_refuses_what_it_must_and_acts_on_the_right_token(lab: Lab) -> None:
    base = lab.url("exporter")
    auth = {"Authorization": f"Bearer {lab.token}"}
    model_pid = next(
        s["pid"] for s in httpx.get(f"{base}/v1/status", headers=auth).json() if s["name"] == "model"
    )
    for headers, query, status in (
        ({}, {}, 401),
        ({"Authorization": "Bearer wrong"}, {}, 401),
        ({"Authorization": f"Bearer {lab.token[:-1]}"}, {}, 401),
        ({}, {"token": lab.token}, 400),
        (auth, {"token": lab.token}, 400),  # refused even beside the right header, and not executed
        (auth, {"access_token": lab.token}, 400),
    ):
        assert httpx.get(f"{base}/v1/status", headers=headers, params=query).status_code == status
        kill = httpx.post(f"{base}/v1/services/model/kill", headers=headers, params=query)
        assert kill.status_code == status, kill.text
        assert lab.token not in kill.text
    statuses = {s["name"]: s for s in httpx.get(f"{base}/v1/status", headers=auth).json()}
    assert statuses["model"]["pid"] == model_pid and statuses["model"]["restarts"] == 0
    assert httpx.get(f"{base}/v1/stress", headers=auth).status_code == 200


def test_the_wrappers_fault_api_refuses_what_it_must_and_acts_on_the_right_token(lab: Lab) -> None:
    faults = f"{lab.url('wrapper')}/admin/faults"
    auth = {"Authorization": f"Bearer {lab.token}"}
    body = {"kind": "latency", "duration_s": 30, "params": {"delay_s": 0.01}}
    for headers, query, status in (
        ({}, {}, 401),
        ({"Authorization": "Bearer wrong"}, {}, 401),
        ({}, {"token": lab.token}, 400),
        (auth, {"token": lab.token}, 400),
        (auth, {"access_token": lab.token}, 400),
    ):
        assert httpx.get(faults, headers=headers, params=query).status_code == status
        assert httpx.post(faults, headers=headers, params=query, json=body).status_code == status
    assert httpx.get(faults, headers=auth).json()["faults"] == []  # nothing was injected
    injected = httpx.post(faults, headers=auth, json=body)
    assert injected.status_code == 201, injected.text
    assert httpx.delete(faults, headers=auth).json()["ended"] == 1


def test_chaos_takes_only_service_names_and_signals_nothing_else(
    lab: Lab, bystanders: list[Bystander]
) -> None:
    base = lab.url("exporter")
    auth = {"Authorization": f"Bearer {lab.token}"}
    before = {
        s["name"]: (s["pid"], s["restarts"]) for s in httpx.get(f"{base}/v1/status", headers=auth).json()
    }
    names = [str(b.proc.pid) for b in bystanders] + [
        str(before["model"][0]),
        "exporter",
        "supervisor",
        "python",
    ]
    for name in names:
        for action in ("kill", "restart", "pause", "unpause"):
            answer = httpx.post(f"{base}/v1/services/{name}/{action}", headers=auth, json={"duration_s": 1})
            assert answer.status_code == 404, (name, action, answer.text)
    after = {
        s["name"]: (s["pid"], s["restarts"]) for s in httpx.get(f"{base}/v1/status", headers=auth).json()
    }
    assert after == before
    assert [b.what for b in bystanders if not b.untouched()] == []


@contextmanager
def recording_proxy() -> Iterator[tuple[str, list[bytes]]]:
    """An HTTP proxy on loopback that answers 502 to everything and keeps what it was sent."""
    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    received.append(conn.recv(65536))
                    conn.sendall(
                        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", received
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def test_the_token_never_goes_to_a_proxy_from_the_environment(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`labkit status` and `labkit chaos halt` send the token to the lab itself, never through HTTP_PROXY."""
    with recording_proxy() as (proxy, received):
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert httpx.get(f"{lab.url('exporter')}/metrics").status_code == 502  # the proxy does catch requests
        received.clear()
        for command in (("status", "--json"), ("chaos", "halt")):
            done = lab.cli(*command)
            assert done.returncode == 0, done.stdout + done.stderr
    assert [r for r in received if lab.token.encode() in r] == []
    assert received == []


def test_an_experiment_leaves_no_token_in_any_file_and_signals_no_bystander(
    lab: Lab, bystanders: list[Bystander], tmp_path: Path
) -> None:
    """A chaos run that uses both protected APIs (latency through the wrapper's, pause and kill through the
    supervisor's), tokens offered in URLs to both, then a halt: the token is only in its own file."""
    experiment = tmp_path / "exp.json"
    experiment.write_text(json.dumps({
        "duration_s": 5,
        "load": {"rate": 2, "max_tokens": 8},
        "steady_state": {"enabled": False},
        "faults": [
            {"kind": "latency", "start_s": 0, "duration_s": 2, "params": {"delay_s": 0.05}},
            {"kind": "pause", "target": "wrapper", "start_s": 0.5, "duration_s": 1},
            {"kind": "kill", "target": "model", "start_s": 2.5, "duration_s": 2},
        ],
    }))  # fmt: skip
    runs = tmp_path / "runs"
    run = lab.cli("chaos", "run", "--file", str(experiment), "--out", str(runs))
    assert run.returncode == 0, run.stdout + run.stderr
    # The lab's load generator read the API key from its file: the wrapper admitted its requests.
    (requests,) = runs.rglob("requests.jsonl")
    statuses = [json.loads(line)["status"] for line in requests.read_text().splitlines()]
    assert 200 in statuses and 401 not in statuses, statuses
    assert httpx.post(f"{lab.url('wrapper')}/generate", json={"prompt": "hi"}).status_code == 401
    halt = lab.cli("chaos", "halt")
    assert halt.returncode == 0, halt.stderr
    for url in (f"{lab.url('wrapper')}/admin/faults", f"{lab.url('exporter')}/v1/status"):
        assert httpx.get(url, params={"token": lab.token}).status_code == 400
    smoke = lab.cli("status")
    assert smoke.returncode == 0, smoke.stderr
    assert [b.what for b in bystanders if not b.untouched()] == []

    token_file = lab.config.lab_dir / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    scanned = [p for root in (lab.config.lab_dir, runs) for p in root.rglob("*") if p.is_file()]
    scanned.remove(token_file)
    names = {p.relative_to(lab.config.lab_dir).as_posix() for p in scanned if lab.config.lab_dir in p.parents}
    # The scan reads what matters: every service's log, the lab's state and settings, Prometheus' data.
    assert {"config.json", "state.json", "logs/supervisor.log", "logs/wrapper.log", "logs/model.log"} <= names
    assert any(n.startswith("prometheus/data/") for n in names)
    assert any(runs in p.parents for p in scanned)
    for secret in (lab.token, lab.api_key):
        assert [str(p) for p in scanned if secret.encode() in p.read_bytes()] == []
        assert [i for i, text in enumerate(lab.outputs) if secret in text] == []


def test_down_stops_every_lab_process_and_spares_the_others(lab: Lab, bystanders: list[Bystander]) -> None:
    pids = _lab_pids(lab)
    assert len(pids) >= 4
    down = lab.cli("down")
    assert down.returncode == 0 and "stopped the lab" in down.stdout, down.stdout + down.stderr
    assert find_lab_processes(lab.lab_id) == []
    assert [
        p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ] == []
    assert [b.what for b in bystanders if not b.untouched()] == []
    # A bystander that carries the lab's id would have been swept: the sweep is by that marker, not by name.
    assert all(b.proc.poll() is None for b in bystanders)
    os.kill(bystanders[0].proc.pid, signal.SIGUSR1)  # the recorder really records
    wait_for(lambda: bystanders[0].log.read_text() == f"{int(signal.SIGUSR1)}\n", what="the recorded signal")
