"""The lab's real Alertmanager (local backend, sim engine): listed and supervised like every service, and
an alert it receives reaches the lab's alerts.jsonl and a run directory's through the real webhook."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from labkit.lab.alert_feed import AlertFeed
from labkit.lab.local import LocalBackend
from labkit.rundir import RunDirectory, RunFile
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def _cli(backend: LocalBackend, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "--lab-dir", str(backend.lab.root), *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


def _restarts(backend: LocalBackend) -> float:
    body = httpx.get(f"{backend.config.exporter_url}/metrics", timeout=5).text
    line = next(
        li for li in body.splitlines() if li.startswith('lab_service_restarts_total{service="alertmanager"}')
    )
    return float(line.rsplit(" ", 1)[1])


def _rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def test_alertmanager_is_supervised_and_its_notifications_reach_the_run(
    running_lab: LocalBackend, tmp_path: Path
) -> None:
    backend = running_lab
    listed = {s["name"]: s for s in json.loads(_cli(backend, "status", "--json"))}
    assert listed["alertmanager"]["state"] == "ready"
    assert listed["alertmanager"]["url"] == backend.config.alertmanager_url
    # Prometheus sends its alerts there.
    answer = httpx.get(f"{backend.config.prometheus_url}/api/v1/alertmanagers", timeout=5).json()
    assert [a["url"] for a in answer["data"]["activeAlertmanagers"]] == [
        f"{backend.config.alertmanager_url}/api/v2/alerts"
    ]

    # kill -9 from outside: restarted, counted once, ready again.
    pid = listed["alertmanager"]["pid"]
    assert _restarts(backend) == 0
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _restarts(backend) == 1, what="the exporter counting the restart")
    wait_for(
        lambda: any(
            s.name == "alertmanager" and s.state == "ready" and s.pid not in (None, pid)
            for s in backend.status()
        ),
        what="Alertmanager ready again",
    )
    assert '"message": "starting alertmanager"' in _cli(backend, "logs", "alertmanager")

    # An alert that fires for 2 s: its firing and resolved notifications come through the webhook.
    run = RunDirectory.create(tmp_path / "runs", "alerting_test")
    with AlertFeed(backend).follow_into(run):
        now = time.time()
        alert = {
            "labels": {"alertname": "LabTestAlert", "severity": "page"},
            "startsAt": _rfc3339(now),
            "endsAt": _rfc3339(now + 2),
        }
        posted = httpx.post(f"{backend.config.alertmanager_url}/api/v2/alerts", json=[alert], timeout=5)
        assert posted.status_code == 200, posted.text
        wait_for(
            lambda: [n.status for n in backend.alert_notifications()[0]] == ["firing", "resolved"],
            timeout_s=30,
            what="the firing and resolved notifications",
        )
    lab_lines = [json.loads(line) for line in backend.lab.alerts_file.read_text().splitlines()]
    run_lines = list(run.read_jsonl(RunFile.ALERTS))
    assert run_lines == lab_lines
    firing, resolved = run_lines
    assert firing["alertname"] == resolved["alertname"] == "LabTestAlert"
    assert firing["receiver"] == "lab" and firing["labels"]["severity"] == "page"
    assert now <= firing["received_unix"] <= resolved["received_unix"]
    assert resolved["endsAt"].startswith(_rfc3339(now + 2)[:19])
