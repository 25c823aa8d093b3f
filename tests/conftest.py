"""Shared fixtures: free loopback ports, a lab configuration in a temporary directory, promtool."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from labkit.config import LabConfig
from labkit.lab.local import LocalBackend


def interruptible() -> None:
    """`preexec_fn` for a child the test will send Ctrl-C (SIGINT): a job started in the background (a CI
    runner's `cmd &`, nohup) ignores SIGINT, its children inherit that, and Python then installs no
    KeyboardInterrupt handler at all, so the child would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def reply_json(handler: BaseHTTPRequestHandler, data: object, status: int = 200) -> None:
    """Answer a request of a stand-in HTTP server (`http.server`) with `data` as JSON."""
    body = json.dumps(data).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """A service's main run in-process (`main([...])`) sends the process's logging to its stderr as JSON
    (labkit.service_logs.configure_service_logging); the next test gets pytest's own handlers back."""
    root, labkit_logger = logging.getLogger(), logging.getLogger("labkit")
    handlers, level, labkit_level = list(root.handlers), root.level, labkit_logger.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    labkit_logger.setLevel(labkit_level)
    logging.captureWarnings(False)


@pytest.fixture
def engine_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A unix socket where DOCKER_HOST points (nothing answers it; container specs only mount it)."""
    path = tmp_path / "docker.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    yield path
    sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports: all are held open while picked, so the kernel cannot hand
    out the same one twice (picking them one at a time occasionally did)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


LAB_PORTS = ("model_port", "wrapper_port", "prometheus_port", "exporter_port", "alertmanager_port")


def lab_port_env(cfg: LabConfig) -> dict[str, str]:
    """`LABKIT_<SERVICE>_PORT` of each of the lab's ports: the environment a `labkit` subprocess needs to
    start (or find) the lab of `cfg`."""
    return {f"LABKIT_{name.upper()}": str(getattr(cfg, name)) for name in LAB_PORTS}


def sim_lab_config(tmp_path: Path, **overrides: object) -> LabConfig:
    """A sim-engine lab on free ports in a temporary lab directory; `overrides` change any setting."""
    settings: dict[str, object] = {
        "lab_dir": tmp_path / "lab",
        "engine": "sim",
        **dict(
            zip(
                LAB_PORTS,
                free_ports(len(LAB_PORTS)),
                strict=True,
            )
        ),
        "sim_ttft_s": 0.01,
        "sim_itl_s": 0.002,
        "ready_timeout_s": 60,
    }
    return LabConfig(**{**settings, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def lab_config(tmp_path: Path) -> LabConfig:
    """A sim-engine lab on free ports in a temporary lab directory."""
    return sim_lab_config(tmp_path)


@pytest.fixture
def running_lab(lab_config: LabConfig) -> Iterator[LocalBackend]:
    """A real local lab (sim engine); always taken down, whatever the test did."""
    backend = LocalBackend(lab_config)
    try:
        backend.up()
        yield backend
    finally:
        backend.down()


def lab_id_of(backend: LocalBackend) -> str:
    """The id every process of this lab carries in its environment."""
    return str(json.loads(backend.lab.config_file.read_text())["lab_id"])


def wait_for(
    condition: Callable[[], object], timeout_s: float = 20.0, what: str = "condition", interval_s: float = 0.2
) -> object:
    """Poll `condition` until it is truthy (HTTP and lookup errors mean "not yet"); fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval_s)
    raise AssertionError(f"{what} not reached within {timeout_s}s (last: {last!r})")


def wait_until_model_server_answers(url: str, process: subprocess.Popen[str], timeout_s: float) -> None:
    """Poll `GET /` of a model server started as `process` until it answers; fail with its stderr."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=1).text == "Ollama is running":
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            pytest.fail(f"the model server exited with {process.returncode}: {process.communicate()[1]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the model server did not answer within {timeout_s:g} s")
        time.sleep(0.05)


def promtool_check_metrics(body: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, check=False, timeout=30
    )


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    """A Docker engine (DOCKER_HOST's, or a dockerd started for the session); skips, saying why, only when
    none answers and none can be started."""
    from tests.dockerd import docker_engine

    with docker_engine() as (client, why):
        if client is None:
            pytest.skip(f"no Docker engine: {why}")
        yield client


@pytest.fixture(scope="session")
def lab_images(docker_client: object) -> dict[str, str]:
    """The lab's images, built offline (debootstrap base, host wheels) where they are missing or stale."""
    from labkit.lab.images import build_images

    return build_images(docker_client, offline=True, progress=lambda line: print(line, flush=True))


@contextmanager
def llamacpp_server(folder: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server, started with the lab's command line
    (`labkit.lab.specs.llamacpp_server_spec`) on a free loopback port, its log in `folder`; yields its OpenAI
    base URL (ending /v1) once /v1/models answers, and always stops it. Skips without the server extra or
    the model file."""
    from labkit.config import embedded_model_path
    from labkit.errors import ModelNotFoundError
    from labkit.lab.specs import llamacpp_server_spec

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("sse_starlette") is None:
        pytest.skip("llama-cpp-python's server is not installed (pip install 'llama-cpp-python[server]')")
    try:
        embedded_model_path()
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
    config = sim_lab_config(folder, engine="llamacpp-server")
    spec = llamacpp_server_spec(config, config.model_url)
    log = folder / "llamacpp-server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            spec.argv,
            env={**os.environ, **spec.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = config.model_api_url
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"llama_cpp.server did not answer (exit {process.poll()}): {log.read_text()[-2000:]}"
                )
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
