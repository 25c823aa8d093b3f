"""labkit.scenarios without a lab: the catalog matches the notebooks, bad values fail before any run."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

import labkit.scenarios.setup_check
from generators.notebooks import parameters_cell_source
from labkit import scenarios
from labkit.errors import ConfigError
from labkit.params import Params
from labkit.runner.notebooks import notebook_parameters

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_every_scenario_names_an_existing_notebook() -> None:
    assert list(scenarios.SCENARIOS) == [
        "check_setup",
        "baseline",
        "kill_and_recover",
        "latency_and_remediation",
        "random_chaos",
        "alerting",
        "capacity",
        "remediation_ab",
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
    ("spec", "values", "message"),
    [
        (scenarios.KillAndRecover, {"duration_s": 10, "kill_at_s": 20}, r"kill_at_s must be in \[0, "),
        (scenarios.LatencyAndRemediation, {"duration_s": 10, "latency_at_s": 9.5}, r"latency_at_s must be"),
        (
            scenarios.RemediationAB,
            {"duration_s": 10, "fault_at_s": 6, "after_s": 4},
            r"leaves the fault no time",
        ),
        (scenarios.RemediationAB, {"on_alert": "two words"}, r"on_alert 'two words' is not an alert name"),
    ],
)
def test_timeline_values_outside_the_run_are_refused_before_the_lab_is_touched(
    spec: type[Params], values: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        spec(**values)  # a notebook builds its spec before it opens the lab


@pytest.mark.parametrize("notebook", list(scenarios.NOTEBOOK_PARAMS))
def test_every_notebook_s_parameters_cell_is_its_spec_s(notebook: str) -> None:
    spec = scenarios.NOTEBOOK_PARAMS[notebook]
    assert parameters_cell_source(NOTEBOOKS / notebook) == spec.parameters_cell(), (
        f"{notebook}'s parameters cell is not what {spec.__name__} declares; regenerate it with "
        "`python -m generators.notebooks` (or change the spec, in labkit/scenarios/specs.py)"
    )
    # what papermill reads of the cell: every name, with the spec's type and default
    declared = notebook_parameters(NOTEBOOKS / notebook)
    assert list(declared) == sorted(spec.model_fields, key=lambda name: name in spec.set_by_runner())
    for name, parameter in declared.items():
        assert parameter.type_name == spec.type_name(name), name
        assert ast.literal_eval(parameter.default) == spec.model_fields[name].default, name


def test_every_notebook_has_a_spec_and_checks_its_parameters_first() -> None:
    on_disk = {p.relative_to(NOTEBOOKS).as_posix() for p in NOTEBOOKS.rglob("*.ipynb")}
    assert on_disk == set(scenarios.NOTEBOOK_PARAMS)
    for notebook, spec in scenarios.NOTEBOOK_PARAMS.items():
        code = [
            c.source for c in nbformat.read(NOTEBOOKS / notebook, as_version=4).cells if c.cell_type == "code"
        ]
        assert f"params = scenarios.{spec.__name__}.from_notebook(globals())" in code[1], notebook


def test_a_spec_reads_its_parameters_from_a_notebook_s_namespace() -> None:
    namespace = {"duration_s": 30, "kill_at_s": 5, "target": "wrapper", "unrelated": object(), "lab_dir": "x"}
    params = scenarios.KillAndRecover.from_notebook(namespace)
    assert (params.duration_s, params.kill_at_s, params.target, params.lab_dir) == (30.0, 5.0, "wrapper", "x")
    assert params.rate == 1.0  # not in the namespace: the spec's default


@pytest.mark.parametrize("spec", [scenarios.Baseline, scenarios.KillAndRecover, scenarios.RandomChaos])
def test_every_scenario_with_load_takes_the_api_it_speaks(spec: type[Params]) -> None:
    assert spec.defaults()["api"] == "generate"
    spec.check({"api": "openai-chat"})
    with pytest.raises(ConfigError, match=r"parameter api .* one of generate, openai-chat, openai-compl"):
        spec.check({"api": "grpc"})


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
    monkeypatch.setattr(labkit.scenarios.setup_check.shutil, "which", lambda name: None)
    absent = scenarios.check_setup().set_index("check")
    assert absent.loc["prometheus", "ok"] is False and absent.loc["stress-ng", "ok"] is None
    assert "cpu_stress" in absent.loc["stress-ng", "found"]
