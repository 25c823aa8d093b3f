"""Remediation on an alert against a real lab: an error storm in the wrapper burns the availability budget,
Prometheus fires the lab's page, Alertmanager notifies the lab, and the remediation loop restarts the wrapper
(which drops the fault) — counted with the reason `alert:SloErrorBudgetBurnPage`. An alert name the lab's
rules do not define is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from labkit.chaos import ExperimentSpec, Fault, run_experiment
from labkit.errors import ConfigError
from labkit.lab.local import LocalBackend
from labkit.rundir import RunFile

pytestmark = pytest.mark.integration

PAGE = "SloErrorBudgetBurnPage"


def _spec(on_alert: str) -> ExperimentSpec:
    return ExperimentSpec(
        # Every request fails from 2 s on; at 5 req/s the page's 10 s window holds its 20 events.
        schedule=[Fault(kind="error", start_s=2, duration_s=26, params={"probability": 1.0, "seed": 1})],
        duration_s=30,
        load={"rate": 5, "max_tokens": 4},
        steady_state={"enabled": False},
        remediation={"target": "wrapper", "on_alert": on_alert, "interval_s": 1, "cooldown_s": 120},
    )


def test_a_page_from_alertmanager_restarts_the_wrapper(running_lab: LocalBackend, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"known: SloErrorBudgetBurnPage, SloErrorBudgetBurnTicket"):
        run_experiment(running_lab.lab.root, _spec("NoSuchAlert"), out_dir=out, say=None)
    assert not out.exists()  # refused before the run directory, let alone a fault

    result = run_experiment(running_lab.lab.root, _spec(PAGE), out_dir=out, say=None)
    events = list(result.run_dir.read_jsonl(RunFile.EVENTS))
    actions = [e for e in events if e["kind"] == "remediation_action"]
    assert len(actions) == 1, result.summary()  # the cooldown holds back a second one
    (action,) = actions
    assert action["outcome"] == "acted" and action["on_alert"] == PAGE and action["dry_run"] is False
    assert action["alert"]["alertname"] == PAGE and action["alert"]["status"] == "firing"
    assert action["alert"]["labels"]["severity"] == "page"
    assert action["alert"]["labels"]["alert_profile"] == "lab"
    assert action["value_s"] is None and action["threshold_s"] is None
    # The restart dropped the error fault long before its planned end.
    (end,) = [e for e in events if e["kind"] == "fault_end"]
    assert (end["why"], end["outcome"]) == ("remediation", "cleared")
    assert end["offset_s"] < 2 + 26, end
    assert f"alert {PAGE} firing since" in result.summary()
    # The notification it acted on is in the run's alerts.jsonl too.
    notified = [n for n in result.run_dir.read_jsonl(RunFile.ALERTS) if n["alertname"] == PAGE]
    assert any(n["startsAt"] == action["alert"]["startsAt"] for n in notified)
    metrics = httpx.get(f"{running_lab.config.exporter_url}/metrics", timeout=5).text
    assert (
        f'lab_remediation_actions_total{{action="restart",reason="alert:{PAGE}",target="wrapper"}} 1.0'
        in metrics
    )
