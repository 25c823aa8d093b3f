"""The local supervisor's services and their readiness probe: an answer that was on its way while the
service was paused or replaced does not overwrite what the supervisor has done since.

The service is a real child process (a sleeping Python); its readiness URL is a real HTTP server on
loopback that holds its answer until the test lets it go, so the answer arrives exactly when the test
wants (with the lab's wrapper it arrives there by chance, a few times in a hundred pauses under load).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from labkit.lab.labdir import LabDir
from labkit.lab.manager.log_files import RotatingLog
from labkit.lab.manager.supervisor import SupervisedService
from labkit.lab.specs import ServiceSpec
from tests.conftest import reply_json


class HeldReadiness(ThreadingHTTPServer):
    """Answers GET /ready with 200 once `release` is set; `asked` is set when a request has arrived."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HeldHandler)
        self.asked = threading.Event()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _HeldHandler(BaseHTTPRequestHandler):
    server: HeldReadiness

    def do_GET(self) -> None:
        self.server.asked.set()
        self.server.release.wait(10)
        reply_json(self, {"status": "ready"})

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def readiness() -> Iterator[HeldReadiness]:
    server = HeldReadiness()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _service(tmp_path: Path, url: str) -> SupervisedService:
    lab = LabDir(tmp_path / "lab")
    lab.logs.mkdir(parents=True)
    spec = ServiceSpec("wrapper", [sys.executable, "-c", "import time; time.sleep(60)"], url, "/ready")
    log = RotatingLog(lab.log_file("wrapper"), max_bytes=1 << 20, files=2)
    return SupervisedService(spec, lab, "test-lab", on_change=lambda: None, log=log)


async def _ready_service(svc: SupervisedService, server: HeldReadiness, client: httpx.AsyncClient) -> None:
    await svc.start()
    server.release.set()
    await svc.probe(client)
    assert svc.state == "ready"
    server.release.clear()
    server.asked.clear()


def test_a_ready_answer_that_arrives_after_a_pause_leaves_the_service_paused(
    tmp_path: Path, readiness: HeldReadiness
) -> None:
    async def scenario() -> None:
        svc = _service(tmp_path, readiness.url)
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            try:
                await _ready_service(svc, readiness, client)
                probe = asyncio.create_task(svc.probe(client))
                assert await asyncio.to_thread(readiness.asked.wait, 5)
                svc.pause(60)  # while the probe waits for its answer
                readiness.release.set()
                await probe
                assert svc.state == "paused"  # not "ready": the answer was about the service before
                svc.unpause()
                assert svc.state == "ready"
            finally:
                await svc.stop()

    asyncio.run(scenario())


def test_a_ready_answer_from_a_killed_process_does_not_make_its_successor_ready(
    tmp_path: Path, readiness: HeldReadiness
) -> None:
    async def scenario() -> None:
        svc = _service(tmp_path, readiness.url)
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            try:
                await _ready_service(svc, readiness, client)
                first_pid = svc.pid
                probe = asyncio.create_task(svc.probe(client))
                assert await asyncio.to_thread(readiness.asked.wait, 5)
                svc.kill()
                for _ in range(100):  # the watcher restarts it after its back-off
                    if svc.state == "starting" and svc.pid not in (None, first_pid):
                        break
                    await asyncio.sleep(0.05)
                assert svc.state == "starting" and svc.restarts == 1
                readiness.release.set()
                await probe
                assert svc.state == "starting"  # the new process has not answered yet
            finally:
                await svc.stop()

    asyncio.run(scenario())
