"""Issue 18's "done when" for the alerting scenario, on a fresh sim lab with a real Prometheus and
Alertmanager: `labkit run alerting --quick --engine sim` pages within 1.5x the time the rules' arithmetic
expects, the page resolves after the storm, alerts.jsonl holds its firing and resolved notifications, and
the fault-free baseline pages nobody."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.measure.slo.alerts import ALERT_PROFILES
from labkit.measure.slo.rules import alert_name
from labkit.notifications import AlertNotification
from labkit.report import RunData
from labkit.report.alert_data import alert_measures
from labkit.rundir import RunFile
from tests.conftest import lab_port_env, sim_lab_config

pytestmark = pytest.mark.integration

FAST_PAGE = ALERT_PROFILES["lab"].alerts[0]  # page 14.4x over 2m & 10s


def test_the_quick_alerting_run_pages_in_time_resolves_and_never_pages_for_nothing(tmp_path: Path) -> None:
    cfg = sim_lab_config(tmp_path)
    ports = lab_port_env(cfg)
    runs = tmp_path / "reports" / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "--lab-dir", str(cfg.lab_dir), "run", "alerting", "--quick",
         "--engine", "sim", "--out", str(runs), "--no-progress"],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, **ports},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    run = RunData.load(run_dir)
    assert run.status == "completed"
    storm, kill = run.fault_windows
    assert (storm.kind, kill.kind) == ("error", "kill")

    lines = (run_dir / RunFile.ALERTS).read_text().splitlines()
    notes = [AlertNotification.model_validate(json.loads(line)) for line in lines]
    fast = [
        n
        for n in notes
        if n.alertname == alert_name(FAST_PAGE)
        and n.labels.get("slo") == "availability"
        and n.labels.get("long_window") == FAST_PAGE.long_window
    ]
    assert {"firing", "resolved"} <= {n.status for n in fast}, lines
    # The baseline pages nobody: no page notification arrives before the storm.
    pages = [n for n in notes if n.labels.get("severity") == "page"]
    assert all(n.received_unix > storm.start for n in pages), lines

    measures = alert_measures(run)
    assert measures is not None
    (row,) = [
        m
        for m in measures.measures
        if m.fault.fault_id == storm.fault_id and m.alert == FAST_PAGE and m.slo == "availability"
    ]
    assert row.arithmetic.should_fire and row.arithmetic.expected_s is not None, row.arithmetic
    assert row.outcome == "fired"
    assert row.fired_s is not None and row.fired_s <= 1.5 * row.arithmetic.expected_s, (
        row.fired_s,
        row.arithmetic.expected_s,
    )
    assert row.resolved_after_end_s is not None and row.resolved_after_end_s > 0
    assert measures.false_page_count == 0
    record = json.loads((run_dir / RunFile.RUN).read_text())
    assert record["headline"]["false_pages"] == 0, record["headline"]
    assert record["headline"]["time_to_page_s"] is not None, record["headline"]
