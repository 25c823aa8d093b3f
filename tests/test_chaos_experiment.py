"""labkit.chaos experiments without a lab: every bad input fails before anything is created or injected."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import labkit.chaos
from labkit.chaos import ExperimentSpec, Fault, FaultInjector, halt_all, run_experiment
from labkit.chaos._result import recovery_records
from labkit.errors import ConfigError, LabNotRunningError
from labkit.measure.recovery import default_slow_threshold_s
from labkit.measure.slo import load_slo_spec


def _isort_style(name: str) -> tuple[int, str]:
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def test_public_surface_is_sorted_and_complete() -> None:
    names = labkit.chaos.__all__
    assert names == sorted(names, key=_isort_style)
    for name in names:
        assert hasattr(labkit.chaos, name), name
    public = {n for n in vars(labkit.chaos) if not n.startswith("_") and n != "annotations"}
    assert public <= set(names), public - set(names)


def test_a_lab_that_is_not_up_is_refused_before_anything(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    spec = ExperimentSpec(schedule=[Fault(kind="pause", duration_s=2)], duration_s=10)
    with pytest.raises(LabNotRunningError, match="no lab is running"):
        run_experiment(tmp_path / "lab", spec, out_dir=out, say=None)
    assert not out.exists()  # no run directory, no journal: nothing happened
    with pytest.raises(LabNotRunningError):
        FaultInjector(tmp_path / "lab")


def test_run_experiment_takes_one_spec(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="takes an ExperimentSpec, not a list"):
        run_experiment(tmp_path / "lab", [Fault(kind="pause", duration_s=2)], say=None)  # type: ignore[arg-type]


def test_a_schedule_longer_than_the_run_is_refused_first() -> None:
    fits = r"does not fit the run: faults\[0\]: pause .* after the run's 10 s"
    with pytest.raises(ConfigError, match=fits):
        ExperimentSpec(schedule=[Fault(kind="pause", start_s=5, duration_s=6)], duration_s=10)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"duration_s": 0}, r"^invalid experiment: duration_s: Input should be greater than 0"),
        ({"duration_s": 10, "steady_state": {"duration_s": -1}}, r"steady_state.duration_s: Input should be"),
        ({"duration_s": 10, "settle_timeout_s": 0}, r"settle_timeout_s: Input should be greater"),
        ({"duration_s": 10, "slow_threshold_s": float("nan")}, r"slow_threshold_s: Input should be a finite"),
        ({"duration_s": 10, "remediation": {"target": "db"}}, r"remediation.target: Input should be"),
        ({"duration_s": 10, "remediation": {"cooldown_s": -1}}, r"remediation.cooldown_s: Input should be"),
        ({"duration_s": 10, "load": {"rate": 0}}, r"load.rate: Input should be greater than 0"),
        ({"duration_s": 10, "load": {"rates": 1}}, r"load.rates: unknown field"),
    ],
)
def test_a_bad_spec_is_one_config_error_naming_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExperimentSpec(schedule=[], **fields)  # type: ignore[arg-type]


def test_bad_faults_given_as_mappings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"faults\[0\]\.target: 'database' is not a target"):
        ExperimentSpec(schedule=[{"kind": "kill", "target": "database", "duration_s": 1}], duration_s=5)


def test_a_spec_is_changed_only_into_another_valid_one() -> None:
    spec = ExperimentSpec(schedule=[Fault(kind="pause", start_s=1, duration_s=2)], duration_s=10)
    longer = spec.replace(load={"rate": 0.5}, steady_state={"enabled": False})
    assert (longer.load.rate, longer.load.max_tokens, longer.steady_state.enabled) == (0.5, 32, False)
    assert longer.schedule == spec.schedule
    with pytest.raises(ConfigError, match="after the run's 2 s"):
        spec.replace(duration_s=2)


def test_halt_without_a_lab_has_nothing_to_end(tmp_path: Path) -> None:
    report = halt_all(tmp_path / "lab")
    assert not report.lab_running and report.ok
    assert "no lab is running" in report.summary()
    assert halt_all(tmp_path / "lab") == report  # idempotent


def test_the_default_slow_threshold_is_the_tightest_end_to_end_latency_objective() -> None:
    assert default_slow_threshold_s(load_slo_spec()) == 3.0  # stack/slo.yaml: 95% within 3 s, 99% within 5 s
    assert default_slow_threshold_s([]) == 3.0  # no latency objective: the documented fallback


def test_recovery_records_are_json_ready() -> None:
    frame = pd.DataFrame(
        [{"fault_id": "f1", "kind": "pause", "time_to_detect_s": float("nan"), "requests_lost": 0}]
    )
    (row,) = recovery_records(frame)
    assert row == {"fault_id": "f1", "kind": "pause", "time_to_detect_s": None, "requests_lost": 0}
    assert recovery_records(None) == []
