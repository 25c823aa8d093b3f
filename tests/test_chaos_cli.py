"""`labkit chaos plan|run|halt` from the command line (no lab needed for these)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _labkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def test_plan_with_the_same_seed_prints_the_identical_schedule_in_two_processes() -> None:
    first, second = _labkit("chaos", "plan", "--seed", "7"), _labkit("chaos", "plan", "--seed", "7")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert "seed 7" in first.stdout and "kind" in first.stdout
    other = _labkit("chaos", "plan", "--seed", "8")
    assert other.returncode == 0 and other.stdout != first.stdout


def test_plan_needs_a_seed_or_a_file() -> None:
    result = _labkit("chaos", "plan")
    assert result.returncode == 1 and "--seed" in result.stderr and "--file" in result.stderr


def test_run_without_a_lab_injects_nothing_and_says_so(tmp_path: Path) -> None:
    result = _labkit("--lab-dir", str(tmp_path / "none"), "chaos", "run", "--seed", "1", "--duration-s", "10")
    assert result.returncode == 1 and "labkit up" in result.stderr


def test_halt_without_a_lab_is_a_no_op(tmp_path: Path) -> None:
    result = _labkit("--lab-dir", str(tmp_path / "none"), "chaos", "halt")
    assert result.returncode == 0 and "no lab is running" in result.stdout


def test_remediation_options_are_checked_before_the_lab(tmp_path: Path) -> None:
    lab = ["--lab-dir", str(tmp_path / "none"), "chaos", "run", "--seed", "1", "--duration-s", "10"]
    alone = _labkit(*lab, "--remediation-dry-run")
    assert alone.returncode == 1 and "need --remediate SERVICE" in alone.stderr
    bad = _labkit(*lab, "--remediate", "wrapper", "--remediation-threshold-s", "-2")
    assert bad.returncode == 1 and "threshold_s: Input should be greater than 0" in bad.stderr
    unknown = _labkit(*lab, "--remediate", "database")
    assert unknown.returncode == 2 and "'database' is not one of" in unknown.stderr


def test_on_alert_is_one_trigger_and_needs_a_target(tmp_path: Path) -> None:
    lab = ["--lab-dir", str(tmp_path / "none"), "chaos", "run", "--seed", "1", "--duration-s", "10"]
    both = _labkit(*lab, "--remediate", "wrapper", "--on-alert", "SloErrorBudgetBurnPage",
                   "--remediation-threshold-s", "1")  # fmt: skip
    assert both.returncode == 2
    assert "--on-alert" in both.stderr and "--remediation-threshold-s" in both.stderr
    alone = _labkit(*lab, "--on-alert", "SloErrorBudgetBurnPage")
    assert alone.returncode == 2 and "--on-alert ALERTNAME needs --remediate SERVICE" in alone.stderr
    bad = _labkit(*lab, "--remediate", "wrapper", "--on-alert", "no such name")
    assert bad.returncode == 1 and "on_alert: String should match pattern" in bad.stderr
    # Well-formed: checked as far as it can be without a lab, then the missing lab is the error.
    fine = _labkit(*lab, "--remediate", "wrapper", "--on-alert", "SloErrorBudgetBurnPage")
    assert fine.returncode == 1 and "labkit up" in fine.stderr
