"""`LabBackend.wait_scraped` against a fake Prometheus: every target state, the timeout's message.

The fake is a real HTTP server on loopback that answers /api/v1/targets as Prometheus 2.42 does. A real
Prometheus cannot be held in these states on demand (it applies new targets only on its own 5 s ticks,
and a target it has applied is scraped within a second), so the states are served instead.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from labkit.errors import BackendError, ConfigError
from labkit.lab.backend import describe_unscraped
from labkit.lab.local import LocalBackend
from tests.conftest import free_port, reply_json, sim_lab_config

JOBS = ("model", "wrapper", "exporter", "alertmanager", "prometheus")


class FakePrometheus(ThreadingHTTPServer):
    """Serves `targets` (job -> (health, lastError)) as /api/v1/targets; after `flip_after` requests
    every target reports "up"."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TargetsHandler)
        self.targets: dict[str, tuple[str, str]] = {}
        self.requests = 0
        self.flip_after: int | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def active_targets(self) -> list[dict[str, Any]]:
        self.requests += 1
        if self.flip_after is not None and self.requests > self.flip_after:
            self.targets = dict.fromkeys(JOBS, ("up", ""))
        return [
            {"labels": {"job": job, "instance": f"127.0.0.1:{i}"}, "scrapePool": job, "health": health,
             "lastError": error}
            for i, (job, (health, error)) in enumerate(self.targets.items())
        ]  # fmt: skip


class _TargetsHandler(BaseHTTPRequestHandler):
    server: FakePrometheus

    def do_GET(self) -> None:
        if not self.path.startswith("/api/v1/targets"):
            self.send_error(404)
            return
        reply_json(
            self,
            {
                "status": "success",
                "data": {"activeTargets": self.server.active_targets(), "droppedTargets": []},
            },
        )

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _backend(tmp_path: Path, prometheus_port: int) -> LocalBackend:
    return LocalBackend(sim_lab_config(tmp_path, prometheus_port=prometheus_port))


def test_returns_at_once_when_every_target_is_up(tmp_path: Path, prometheus: FakePrometheus) -> None:
    prometheus.targets = dict.fromkeys(JOBS, ("up", ""))
    said: list[str] = []
    _backend(tmp_path, prometheus.port).wait_scraped(say=said.append)
    assert prometheus.requests == 1
    assert said == []  # nothing to wait for, nothing said


def test_waits_until_every_target_has_been_scraped(tmp_path: Path, prometheus: FakePrometheus) -> None:
    # exporter, alertmanager, prometheus: not yet
    prometheus.targets = {"model": ("up", ""), "wrapper": ("unknown", "")}
    prometheus.flip_after = 3
    said: list[str] = []
    backend = _backend(tmp_path, prometheus.port)
    assert backend.prometheus_unscraped_targets() == dict.fromkeys(
        ("wrapper", "exporter", "alertmanager", "prometheus"), "not scraped yet"
    )
    backend.wait_scraped(timeout_s=30, say=said.append)
    assert prometheus.requests == 4
    assert backend.prometheus_unscraped_targets() == {}
    assert len(said) == 2 and "waiting for Prometheus' first scrape" in said[0]
    assert said[1].strip() == "prometheus has scraped every service"


def test_the_timeout_names_every_target_that_is_not_up(tmp_path: Path, prometheus: FakePrometheus) -> None:
    prometheus.targets = {
        "model": ("up", ""),
        "wrapper": ("down", 'Get "http://127.0.0.1:8000/metrics": connection refused'),
        "exporter": ("unknown", ""),
    }
    backend = _backend(tmp_path, prometheus.port)
    with pytest.raises(BackendError) as caught:
        backend.wait_scraped(timeout_s=0.3)
    message = str(caught.value)
    assert "within 0.3 s" in message
    assert 'wrapper down: Get "http://127.0.0.1:8000/metrics": connection refused' in message
    assert "exporter, alertmanager, prometheus not scraped yet" in message
    assert "model" not in message.split("(", 1)[1].split(")")[0]  # model is up: not named
    assert "labkit logs prometheus" in message and "longer timeout" in message


def test_a_prometheus_that_does_not_answer_is_named(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(BackendError, match=rf"Prometheus at http://127.0.0.1:{port}/\S+ does not answer"):
        _backend(tmp_path, port).wait_scraped(timeout_s=0.2)


def test_an_attached_backend_asks_the_saved_labs_prometheus(
    tmp_path: Path, prometheus: FakePrometheus
) -> None:
    """`labkit up` then `labkit run`: the attached backend knows only the directory; the port is saved."""
    cfg = sim_lab_config(tmp_path, prometheus_port=prometheus.port)
    cfg.lab_dir.mkdir(parents=True)
    (cfg.lab_dir / "config.json").write_text(
        json.dumps({"lab_id": "x", "backend": "local", "config": json.loads(cfg.model_dump_json())})
    )
    prometheus.targets = {"model": ("up", ""), "wrapper": ("up", ""), "exporter": ("unknown", "")}
    assert LocalBackend.attach(cfg.lab_dir).prometheus_unscraped_targets() == {
        "exporter": "not scraped yet",
        "alertmanager": "not scraped yet",
        "prometheus": "not scraped yet",
    }


def test_a_lab_on_an_outside_ollama_waits_for_no_model_target(
    tmp_path: Path, prometheus: FakePrometheus
) -> None:
    # A real Ollama has no /metrics (ollama/ollama#3144): it is not a scrape target at all.
    prometheus.targets = dict.fromkeys(("wrapper", "exporter", "alertmanager", "prometheus"), ("up", ""))
    cfg = sim_lab_config(
        tmp_path, engine="ollama", ollama_url="http://127.0.0.1:1", prometheus_port=prometheus.port
    )
    LocalBackend(cfg).wait_scraped(timeout_s=0)


@pytest.mark.parametrize("timeout_s", [-1, 601])
def test_the_timeout_is_bounded(tmp_path: Path, timeout_s: float) -> None:
    with pytest.raises(ConfigError, match="timeout_s must be between 0 and 600"):
        LocalBackend(sim_lab_config(tmp_path)).wait_scraped(timeout_s=timeout_s)


def test_unscraped_targets_in_words() -> None:
    assert describe_unscraped({}) == ""
    assert (
        describe_unscraped(
            {"model": "not scraped yet", "wrapper": "down: refused", "exporter": "not scraped yet"}
        )
        == "model, exporter not scraped yet; wrapper down: refused"
    )
