"""labkit.scenarios without a lab: the catalog matches the notebooks, bad values fail before any run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labkit import scenarios
from labkit.errors import ConfigError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_every_scenario_names_an_existing_notebook() -> None:
    assert list(scenarios.SCENARIOS) == [
        "check_setup",
        "baseline",
        "kill_and_recover",
        "latency_and_remediation",
        "random_chaos",
    ]
    for scenario in scenarios.SCENARIOS.values():
        assert (NOTEBOOKS / scenario.notebook).is_file(), scenario.notebook


def test_out_dir_is_the_given_one_else_the_environment_s_else_reports_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LABKIT_OUT_DIR", raising=False)
    assert scenarios.resolve_out_dir("") == Path("reports/runs")
    monkeypatch.setenv("LABKIT_OUT_DIR", str(tmp_path))
    assert scenarios.resolve_out_dir(None) == tmp_path
    assert scenarios.resolve_out_dir("elsewhere") == Path("elsewhere")


@pytest.mark.parametrize(
    ("call", "kwargs", "message"),
    [
        (scenarios.kill_and_recover, {"duration_s": 10, "kill_at_s": 20}, r"kill_at_s must be in \[0, "),
        (scenarios.latency_and_remediation, {"duration_s": 10, "latency_at_s": 9.5}, r"latency_at_s must be"),
    ],
)
def test_timeline_values_outside_the_run_are_refused_before_the_lab_is_touched(
    call: Any, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        call(None, **kwargs)  # no lab: the check comes first


def test_an_unknown_backend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="backend must be 'local' or 'docker', not 'kubernetes'"):
        scenarios.open_lab(tmp_path / "lab", backend="kubernetes", say=None)
    assert not (tmp_path / "lab").exists()


def test_check_setup_says_what_the_machine_has(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = scenarios.check_setup().set_index("check")
    assert checks.loc["python", "ok"] is True
    assert {"prometheus", "promtool", "stress-ng", "llama-cpp-python", "model file", "GPU (NVML)"} <= set(
        checks.index
    )
    # Optional parts that are absent are None (not a failure), with what to do.
    monkeypatch.setattr(scenarios.shutil, "which", lambda name: None)
    absent = scenarios.check_setup().set_index("check")
    assert absent.loc["prometheus", "ok"] is False and absent.loc["stress-ng", "ok"] is None
    assert "cpu_stress" in absent.loc["stress-ng", "found"]
