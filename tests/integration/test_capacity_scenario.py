"""Issue 19's "done when" for the capacity search, on a fresh sim lab: `labkit run capacity --quick --engine
sim` finds a knee within 15 % of the capacity the sim's settings imply, num_parallel / service time with a
service time of sim_ttft_s + (max_tokens - 1) x sim_itl_s (the sim engine sleeps one TTFT, then one ITL per
further token; lognormal jitter keeps those means), and stops at least one over-saturated point early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.measure.capacity import CapacityResult
from labkit.report import RunData, capacity_table
from labkit.rundir import RunFile, RunFolder
from labkit.scenarios import Capacity
from tests.conftest import sim_lab_config

pytestmark = pytest.mark.integration

NUM_PARALLEL = 2
TTFT_S = 0.05
ITL_S = 0.02


def test_the_quick_capacity_run_finds_the_sims_capacity_and_stops_saturated_points(tmp_path: Path) -> None:
    cfg = sim_lab_config(tmp_path, num_parallel=NUM_PARALLEL, sim_ttft_s=TTFT_S, sim_itl_s=ITL_S)
    env = {
        f"LABKIT_{name.upper()}": str(getattr(cfg, name))
        for name in ("model_port", "wrapper_port", "prometheus_port", "exporter_port", "alertmanager_port",
                     "num_parallel", "sim_ttft_s", "sim_itl_s")
    }  # fmt: skip
    runs = tmp_path / "reports" / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "--lab-dir", str(cfg.lab_dir), "run", "capacity", "--quick",
         "--engine", "sim", "--out", str(runs), "--no-progress"],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    result = CapacityResult.model_validate_json((run_dir / RunFile.CAPACITY).read_text())

    max_tokens = Capacity.quick()["max_tokens"]
    capacity = NUM_PARALLEL / (TTFT_S + (max_tokens - 1) * ITL_S)
    knee = result.max_rate_meeting_slos
    assert knee is not None and abs(knee - capacity) <= 0.15 * capacity, (knee, capacity, done.stdout[-3000:])
    assert result.complete and result.interval_method == "bracket"
    assert result.max_rate_meeting_slos_low == knee
    assert result.max_rate_meeting_slos_high is not None and result.max_rate_meeting_slos_high > knee

    stopped = [p for p in result.points if p.stopped_early]
    assert stopped, [(p.rate, p.passed, p.saturation) for p in result.points]
    assert all(p.saturated and not p.passed and p.saturation for p in stopped)
    # A point stopped early sent load for less than the point's length.
    assert all(p.duration_s < Capacity.quick()["point_s"] for p in stopped)
    # ... and was followed by a probe that waited for what it left in the service.
    assert all(
        p.drain_s is not None and (run_dir / p.run_dir / "drain" / RunFile.REQUESTS).is_file()
        for p in stopped
    )
    # Every point is a run directory of its own, with its requests and its SLO report (when judged).
    for point in result.points:
        folder = run_dir / point.run_dir
        assert folder.parent.name == RunFolder.POINTS and (folder / RunFile.REQUESTS).is_file()
    assert result.limiting_slo is not None

    record = json.loads((run_dir / RunFile.RUN).read_text())
    assert record["headline"]["max_rate_meeting_slos"] == pytest.approx(knee)
    assert record["headline"]["limiting_slo"] == result.limiting_slo
    assert (run_dir / RunFile.REPORT).is_file()
    table = capacity_table(RunData.load(run_dir))
    assert len(table) == len(result.points)
