"""The lab's Alertmanager: its settings, command line and configuration (checked by the real amtool), the
manager's webhook receiver (alerts.jsonl, GET since=N, the token) and the feed into a run directory."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from labkit.config import LabConfig
from labkit.errors import BackendError, ConfigError
from labkit.lab.alert_feed import AlertFeed
from labkit.lab.alertmanager_config import (
    ALERTMANAGER_GROUP_INTERVAL_S,
    ALERTMANAGER_GROUP_WAIT_S,
    render_alertmanager_config,
)
from labkit.lab.contract import ALERTS_ROUTE, ALERTS_WEBHOOK_ROUTE, MANAGED_SERVICES, SERVICE_NAMES
from labkit.lab.labdir import LabDir
from labkit.lab.manager.alert_receiver import AlertJournal
from labkit.lab.manager.supervisor import Supervisor
from labkit.lab.specs import service_specs
from labkit.notifications import AlertNotification, WebhookPayload, notifications_from_webhook
from labkit.rundir import RunDirectory, RunFile
from tests.conftest import sim_lab_config

WEBHOOK_BODY: dict[str, Any] = {
    "version": "4",
    "groupKey": '{}:{alertname="SloErrorBudgetBurnPage"}',
    "status": "firing",
    "receiver": "lab",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "SloErrorBudgetBurnPage", "severity": "page", "slo": "availability"},
            "annotations": {"summary": "burning"},
            "startsAt": "2026-12-03T10:00:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "abc",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "SloErrorBudgetBurnTicket", "severity": "ticket"},
            "startsAt": "2026-12-03T09:59:00Z",
            "endsAt": "2026-12-03T10:00:30Z",
        },
    ],
}


# ---- settings and command line ---------------------------------------------------------------------
def test_alertmanager_is_a_managed_service_started_before_prometheus() -> None:
    assert "alertmanager" in SERVICE_NAMES and "alertmanager" in MANAGED_SERVICES
    assert MANAGED_SERVICES.index("alertmanager") < MANAGED_SERVICES.index("prometheus")


def test_its_port_url_and_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = LabConfig(lab_dir=tmp_path)
    assert cfg.alertmanager_port == 9093
    assert cfg.alertmanager_url == cfg.service_url("alertmanager") == "http://127.0.0.1:9093"
    monkeypatch.setenv("LABKIT_ALERTMANAGER_PORT", "19093")
    assert LabConfig(lab_dir=tmp_path).alertmanager_port == 19093
    with pytest.raises(ValueError, match="five service ports must differ"):
        LabConfig(lab_dir=tmp_path, alertmanager_port=9090)


def test_a_missing_binary_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = LabConfig(lab_dir=tmp_path, alertmanager_bin="/nonexistent/alertmanager")
    with pytest.raises(ConfigError, match="apt-get install prometheus-alertmanager"):
        given.alertmanager_binary()
    monkeypatch.setenv("PATH", str(tmp_path))  # neither prometheus-alertmanager nor alertmanager
    with pytest.raises(ConfigError, match="apt-get install prometheus-alertmanager"):
        LabConfig(lab_dir=tmp_path).alertmanager_binary()


def test_the_command_line_keeps_it_on_the_lab_host_with_no_cluster(tmp_path: Path) -> None:
    if shutil.which("prometheus-alertmanager") is None and shutil.which("alertmanager") is None:
        pytest.skip("Alertmanager is not installed (Debian package prometheus-alertmanager)")
    cfg = sim_lab_config(tmp_path)
    lab = LabDir(cfg.lab_dir)
    specs = service_specs(cfg, lab)
    assert [s.name for s in specs] == ["model", "wrapper", "alertmanager", "prometheus"]
    spec = specs[2]
    assert spec.argv[1:] == [
        f"--config.file={lab.alertmanager_dir / 'alertmanager.yml'}",
        f"--storage.path={lab.alertmanager_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{cfg.alertmanager_port}",
        "--cluster.listen-address=",  # empty: no gossip listener on 0.0.0.0:9094
        "--log.level=warn",
        "--log.format=json",  # one JSON object per line, like every lab service's log
    ]
    assert (spec.url, spec.ready_path) == (cfg.alertmanager_url, "/-/ready")
    # In a container the image's binary runs: no host binary is looked up.
    inside = service_specs(cfg, LabDir(Path("/lab")), for_containers=True)
    assert next(s for s in inside if s.name == "alertmanager").argv[0] == "alertmanager"


# ---- alertmanager.yml ------------------------------------------------------------------------------
def test_every_alert_is_its_own_group_sent_to_the_lab_with_its_token(tmp_path: Path) -> None:
    text = render_alertmanager_config(
        webhook_url="http://127.0.0.1:9188" + ALERTS_WEBHOOK_ROUTE, token_file=tmp_path / "token"
    )
    doc = yaml.safe_load(text)
    route = doc["route"]
    assert route["group_by"] == ["..."] and route["receiver"] == "lab"
    assert route["group_wait"] == f"{round(ALERTMANAGER_GROUP_WAIT_S * 1000)}ms"
    assert route["group_interval"] == f"{round(ALERTMANAGER_GROUP_INTERVAL_S * 1000)}ms"
    (receiver,) = doc["receivers"]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"] == "http://127.0.0.1:9188/v1/alerts/webhook"
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": str(tmp_path / "token"),
    }


def test_amtool_accepts_the_rendered_config(tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian package prometheus-alertmanager)")
    (tmp_path / "token").write_text("secret\n")
    path = tmp_path / "alertmanager.yml"
    path.write_text(
        render_alertmanager_config(
            webhook_url="http://127.0.0.1:9/v1/alerts/webhook", token_file=tmp_path / "token"
        )
    )
    result = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# ---- the receiver ----------------------------------------------------------------------------------
def _supervisor(tmp_path: Path) -> tuple[Supervisor, str]:
    cfg = sim_lab_config(tmp_path)
    lab = LabDir(cfg.lab_dir)
    lab.prepare()
    token = lab.new_token()
    lab.config_file.write_text(json.dumps({"lab_id": "x", "config": json.loads(cfg.model_dump_json())}))
    return Supervisor(lab), token


def _ask(app: Any, *calls: tuple[str, str, dict[str, Any]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [await client.request(method, path, **kw) for method, path, kw in calls]

    return asyncio.run(run())


def test_a_webhook_becomes_lines_of_alerts_jsonl_read_back_from_an_index(tmp_path: Path) -> None:
    supervisor, token = _supervisor(tmp_path)
    auth = {"Authorization": f"Bearer {token}"}
    posted, everything, later = _ask(
        supervisor.app(),
        ("POST", ALERTS_WEBHOOK_ROUTE, {"json": WEBHOOK_BODY, "headers": auth}),
        ("GET", ALERTS_ROUTE, {"headers": auth}),
        ("GET", ALERTS_ROUTE + "?since=1", {"headers": auth}),
    )
    assert posted.status_code == 200 and posted.json() == {"received": 2, "next": 2}
    lines = supervisor.lab.alerts_file.read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["firing", "resolved"]
    first = AlertNotification(**json.loads(lines[0]))
    assert (first.alertname, first.receiver, first.labels["severity"]) == (
        "SloErrorBudgetBurnPage",
        "lab",
        "page",
    )
    assert first.starts_unix is not None and first.ends_unix is None
    assert abs(first.received_unix - time.time()) < 60
    assert everything.json()["next"] == 2
    assert [n["alertname"] for n in everything.json()["notifications"]] == [
        "SloErrorBudgetBurnPage",
        "SloErrorBudgetBurnTicket",
    ]
    assert later.json()["next"] == 2
    assert [n["alertname"] for n in later.json()["notifications"]] == ["SloErrorBudgetBurnTicket"]
    # A manager that starts again serves what the lab had received.
    (read,) = _ask(Supervisor(supervisor.lab).app(), ("GET", ALERTS_ROUTE + "?since=0", {"headers": auth}))
    assert read.json() == everything.json()


def test_a_body_that_is_not_a_webhook_is_refused_with_what_is_wrong(tmp_path: Path) -> None:
    supervisor, token = _supervisor(tmp_path)
    auth = {"Authorization": f"Bearer {token}"}
    bad_status = {**WEBHOOK_BODY, "alerts": [{**WEBHOOK_BODY["alerts"][0], "status": "pending"}]}
    answers = _ask(
        supervisor.app(),
        ("POST", ALERTS_WEBHOOK_ROUTE, {"content": b"not json", "headers": auth}),
        ("POST", ALERTS_WEBHOOK_ROUTE, {"json": {"status": "firing"}, "headers": auth}),
        ("POST", ALERTS_WEBHOOK_ROUTE, {"json": bad_status, "headers": auth}),
        ("GET", ALERTS_ROUTE + "?since=-1", {"headers": auth}),
        ("GET", ALERTS_ROUTE + "?from=1", {"headers": auth}),
    )
    assert [a.status_code for a in answers] == [400] * 5
    assert "Alertmanager's webhook payload" in answers[1].json()["error"]
    assert "alerts" in answers[1].json()["error"]
    assert "status" in answers[2].json()["error"]
    assert "since must be a whole number" in answers[3].json()["error"]
    assert "since=N" in answers[4].json()["error"]
    assert not supervisor.lab.alerts_file.exists()  # nothing half-done


def test_no_token_no_notification(tmp_path: Path) -> None:
    supervisor, _ = _supervisor(tmp_path)
    answers = _ask(
        supervisor.app(),
        ("POST", ALERTS_WEBHOOK_ROUTE, {"json": WEBHOOK_BODY}),
        ("POST", ALERTS_WEBHOOK_ROUTE, {"json": WEBHOOK_BODY, "headers": {"Authorization": "Bearer wrong"}}),
        ("GET", ALERTS_ROUTE, {}),
    )
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert "bearer token" in answers[0].json()["error"]
    assert not supervisor.lab.alerts_file.exists()


# ---- the feed into a run directory -----------------------------------------------------------------
class JournalBackend:
    """Stands in for a Backend's control API client: the real journal, read in process (the HTTP path is
    tests/integration/test_alertmanager_lab.py's)."""

    def __init__(self, journal: AlertJournal) -> None:
        self.journal = journal
        self.fail = False

    def alert_notifications(self, since: int = 0) -> tuple[list[AlertNotification], int]:
        if self.fail:
            raise BackendError("the supervisor does not answer")
        return self.journal.since(since)


def _receive(journal: AlertJournal, status: str = "firing") -> None:
    body = {**WEBHOOK_BODY, "alerts": [{**WEBHOOK_BODY["alerts"][0], "status": status}]}
    journal.append(notifications_from_webhook(WebhookPayload(**body), time.time()))


def test_the_run_gets_what_arrives_while_it_runs_and_not_before(tmp_path: Path) -> None:
    lab = LabDir(tmp_path / "lab")
    lab.prepare()
    journal = AlertJournal(lab)
    _receive(journal)  # before the run: not the run's
    backend = JournalBackend(journal)
    run = RunDirectory.create(tmp_path / "runs", "test")
    feed = AlertFeed(backend, interval_s=0.05)  # type: ignore[arg-type]
    with feed.follow_into(run):
        assert run.file(RunFile.ALERTS).read_text() == ""
        _receive(journal, "firing")
        deadline = time.monotonic() + 10
        while feed.copied < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert feed.copied == 1  # copied while the run goes on, not only at its end
        backend.fail = True  # a failing poll is logged, never raised
        time.sleep(0.2)
        backend.fail = False
        _receive(journal, "resolved")  # the last one, drained when the run ends
    statuses = [row["status"] for row in run.read_jsonl(RunFile.ALERTS)]
    assert statuses == ["firing", "resolved"]


def test_a_lab_without_a_receiver_never_breaks_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lab = LabDir(tmp_path / "lab")
    lab.prepare()
    backend = JournalBackend(AlertJournal(lab))
    backend.fail = True
    run = RunDirectory.create(tmp_path / "runs", "test")
    done = threading.Event()
    with AlertFeed(backend).follow_into(run):  # type: ignore[arg-type]
        done.set()
    assert done.is_set()
    assert not run.file(RunFile.ALERTS).exists()
    assert "gets no alerts.jsonl" in caplog.text
