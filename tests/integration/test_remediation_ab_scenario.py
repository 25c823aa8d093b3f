"""Issue 19's "done when" for the remediation A/B, on a fresh sim lab each: `labkit run remediation_ab --quick
--engine sim` with a latency fault says remediation `helps`, with an interval of the time to recover that
excludes zero; with cpu_stress (which a restart of the wrapper cannot end) it does not claim `helps`. Each run
is 6 interleaved arms of 14 s (about 2 minutes with the lab's start and the report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from labkit.measure.remediation_ab import AB_TEST_MEASURE
from labkit.rundir import EventKind, RunDirectory, RunFile, RunFolder
from tests.conftest import lab_port_env, sim_lab_config

pytestmark = pytest.mark.integration


def _run_ab(tmp_path: Path, *extra: str) -> tuple[Path, dict[str, Any]]:
    cfg = sim_lab_config(tmp_path)
    ports = lab_port_env(cfg)
    runs = tmp_path / "reports" / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "--lab-dir", str(cfg.lab_dir), "run", "remediation_ab",
         "--quick", "--engine", "sim", "--out", str(runs), "--no-progress", *extra],
        capture_output=True, text=True, timeout=400, check=False, env={**os.environ, **ports},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    return run_dir, json.loads((run_dir / RunFile.REMEDIATION_AB).read_text())


def _check_arms(run_dir: Path, record: dict[str, Any], kind: str) -> None:
    """Six arms, interleaved off/on, each a run directory of its own whose one fault was applied."""
    arms = record["arms"]
    assert [a["arm"] for a in arms] == ["off", "on"] * 3
    assert [a["order"] for a in arms] == [1, 2, 3, 4, 5, 6]
    for arm in arms:
        assert arm["run_dir"] == f"{RunFolder.ARMS}/{arm['order']:02d}-{kind}-{arm['arm']}"
        sub = RunDirectory(run_dir / arm["run_dir"])
        (start,) = sub.events(EventKind.FAULT_START)
        assert (start["fault_kind"], start["outcome"]) == (kind, "applied")
        assert len(arm["rows"]) == 1
    # the arms without remediation ran its loop in dry run: it restarted nothing
    assert all(a["remediation_actions"] == 0 for a in arms if a["arm"] == "off")


def test_restart_on_latency_helps_with_an_interval_that_excludes_zero(tmp_path: Path) -> None:
    run_dir, record = _run_ab(tmp_path)
    _check_arms(run_dir, record, "latency")
    latency = record["kinds"]["latency"]
    assert latency["verdict"] == "helps", latency["why"]
    mttr = latency["differences"][AB_TEST_MEASURE]
    assert mttr["high"] < 0 and mttr["n_a"] == mttr["n_b"] == 3, mttr
    # with remediation the wrapper was restarted in every arm, and the fault ended there
    assert all(a["remediation_actions"] == 1 for a in record["arms"] if a["arm"] == "on")
    headline = json.loads((run_dir / RunFile.RUN).read_text())["headline"]
    assert headline["ab_verdicts"] == {"latency": "helps"}
    assert headline["mttr_difference_high_s"]["latency"] == pytest.approx(mttr["high"])
    assert "Remediation A/B" in (run_dir / RunFile.REPORT).read_text()
    assert "latency: helps" in (tmp_path / "reports" / "index.html").read_text()


def test_cpu_stress_which_a_restart_cannot_end_never_gets_helps(tmp_path: Path) -> None:
    # Arms shorter than --quick's 14 s (CI's time): a stress no restart ends needs no long tail to show it.
    run_dir, record = _run_ab(tmp_path, "-p", "kinds", "cpu_stress", "-p", "duration_s", "9")
    _check_arms(run_dir, record, "cpu_stress")
    stress = record["kinds"]["cpu_stress"]
    assert stress["verdict"] != "helps", stress
    headline = json.loads((run_dir / RunFile.RUN).read_text())["headline"]
    assert headline["ab_verdicts"] == {"cpu_stress": stress["verdict"]}
