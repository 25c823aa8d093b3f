"""A Docker engine for the tests: the one at DOCKER_HOST when it answers, else a `dockerd` started here.

A dockerd started here runs with its own data root, socket and exec root under a temporary folder, no bridge,
no iptables and no masquerading (the lab's containers use host networking on 127.0.0.1), and is stopped when
the session ends. Tests skip, saying why, only when no engine answers and none can be started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

START_TIMEOUT_S = 60.0


def _ping(url: str | None) -> tuple[Any | None, str]:
    try:
        import docker
    except ImportError as exc:
        return None, f"the docker SDK is not installed ({exc})"
    try:
        client = docker.DockerClient(base_url=url) if url else docker.from_env()
        client.ping()
    except Exception as exc:  # any failure means "no engine here"
        return None, f"{type(exc).__name__}: {exc}"
    return client, ""


@contextmanager
def docker_engine() -> Iterator[tuple[Any | None, str]]:
    """(client, "") for a usable engine, or (None, why not); a dockerd started here is stopped on exit."""
    client, why = _ping(None)
    if client is not None:
        yield client, ""
        client.close()
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        yield (
            None,
            f"no Docker engine answers ({why}) and dockerd is not installed (apt-get install docker.io)",
        )
        return
    if os.geteuid() != 0:
        yield None, f"no Docker engine answers ({why}) and starting dockerd needs root"
        return
    root = Path(tempfile.mkdtemp(prefix="labkit-dockerd-"))
    socket = root / "docker.sock"
    argv = [
        dockerd,
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'docker.pid'}",
        f"--host=unix://{socket}",
        # Its own containerd namespaces: where a system containerd runs, dockerd would share it.
        "--containerd-namespace=labkit-test",
        "--containerd-plugins-namespace=labkit-test-plugins",
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
    ]
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - closed after dockerd stops
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"unix://{socket}"
    deadline = time.monotonic() + START_TIMEOUT_S
    client = None
    while time.monotonic() < deadline and proc.poll() is None:
        client, why = _ping(url) if socket.exists() else (None, "socket not there yet")
        if client is not None:
            break
        time.sleep(0.5)
    old_host = os.environ.get("DOCKER_HOST")
    try:
        if client is None:
            tail = (root / "dockerd.log").read_text(errors="replace")[-2000:]
            yield None, f"dockerd did not start ({why}); its log ends:\n{tail}"
            return
        os.environ["DOCKER_HOST"] = url  # the lab's backend and the CLI's subprocesses use it
        yield client, ""
        client.close()
    finally:
        if old_host is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old_host
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:  # a test stopped it and started it again (engine_stopped): the pidfile names the new one
            _stop_pidfile(root / "docker.pid")
        log.close()
        # The data root holds overlay mounts while dockerd runs; after it stops they are gone, but dockerd
        # leaves its default network namespace mounted under the exec root (as .ci/run also undoes).
        netns = root / "exec" / "netns" / "default"
        if os.path.ismount(netns):
            subprocess.run(["umount", str(netns)], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _stop_pidfile(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    _terminate(psutil.Process(pid) if psutil.pid_exists(pid) else None)


def _terminate(proc: psutil.Process | None, timeout_s: float = 30.0) -> None:
    if proc is None:
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


def _engine_process(url: str) -> psutil.Process | None:
    """The dockerd serving `url` (unix://...), found by its --host flag; None for one started otherwise."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        argv = proc.info["cmdline"] or []
        if proc.info["name"] == "dockerd" and (f"--host={url}" in argv or ("--host" in argv and url in argv)):
            return proc
    return None


@contextmanager
def engine_stopped(url: str, log: Path) -> Iterator[None]:
    """Stop the dockerd serving `url` (SIGTERM, as `systemctl stop docker` does), then start it again with
    the same command line and wait until it answers: its data root keeps the images. Skips where the engine
    was not started with --host (a system service this test must not restart)."""
    import pytest

    proc = _engine_process(url)
    if proc is None:
        pytest.skip(f"the Docker engine at {url} was not started with --host={url}: not restarted by a test")
    argv, cwd = proc.cmdline(), proc.cwd()
    _terminate(proc)
    try:
        yield
    finally:
        with open(log, "ab") as out:
            subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while _ping(url)[0] is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer at {url} again after a restart; see {log}")
            time.sleep(0.5)
