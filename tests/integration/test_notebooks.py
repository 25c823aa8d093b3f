"""Every notebook runs top to bottom under nbval (`--nbval-lax`: a cell fails the test only if it raises)
against a real sim-engine lab, with the small parameters CI uses, injected by papermill (`prepare_only`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import papermill
import pytest

from labkit.lab.local import LocalBackend
from labkit.scenarios import SCENARIOS

pytestmark = pytest.mark.integration

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ALL = sorted(
    p.relative_to(NOTEBOOKS).as_posix()
    for p in NOTEBOOKS.rglob("*.ipynb")
    if ".ipynb_checkpoints" not in p.parts
)

# Small parameters for the notebooks that are not scenarios of `labkit run` (those use SCENARIOS' quick ones).
QUICK: dict[str, dict[str, Any]] = {
    "workshop/W1_predict_the_p95.ipynb": {"duration_s": 5, "rate": 1.0, "faster": 2.0, "max_tokens": 16},
    "workshop/W2_your_first_experiment.ipynb": {"duration_s": 10, "pause_s": 2, "steady_state_s": 2},
}


# Smaller than `--quick` where a scenario's quick run is long and has its own integration test: here only the
# notebook's cells must run (the A/B's quick run, 6 arms, is in test_remediation_ab_scenario.py).
SMALLER: dict[str, dict[str, Any]] = {
    "08_remediation_ab.ipynb": {"runs_per_arm": 1, "duration_s": 6, "fault_at_s": 1, "after_s": 1},
}

# The notebook whose scenario renders its own report and index line, as a run made in JupyterLab does.
REPORTS_ITSELF = "02_kill_and_recover.ipynb"


def quick_parameters(name: str) -> dict[str, Any] | None:
    """The CI parameters of notebook `name`; None for the report notebook (it reads a run, not the lab)."""
    if name == "05_slo_report.ipynb":
        return None
    for scenario in SCENARIOS.values():
        if scenario.notebook == name:
            return dict(scenario.quick) | SMALLER.get(name, {})
    return QUICK[name]


def test_every_notebook_has_ci_parameters_and_typed_documented_parameters() -> None:
    assert len(ALL) >= 8, ALL
    for name in ALL:
        quick = quick_parameters(name)
        declared = papermill.inspect_notebook(str(NOTEBOOKS / name))
        assert declared, f"{name} has no parameters cell"
        for parameter in declared.values():
            assert parameter["inferred_type_name"] != "None", (name, parameter)
            assert parameter["help"], f"{name}: {parameter['name']} has no comment"
        if quick is not None:
            assert "duration_s" in declared, f"{name} does not take duration_s"
            assert set(quick) <= set(declared), (name, set(quick) - set(declared))


def test_notebooks_are_stored_without_outputs() -> None:
    import nbformat

    for name in ALL:
        book = nbformat.read(NOTEBOOKS / name, as_version=4)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name}: strip outputs"


def test_all_notebooks_run_under_nbval(running_lab: LocalBackend, tmp_path: Path) -> None:
    prepared = tmp_path / "notebooks"
    out_dir = tmp_path / "runs"
    for name in ALL:
        quick = quick_parameters(name)
        parameters: dict[str, Any] = {"out_dir": str(out_dir)}
        if quick is not None:
            parameters |= quick | {"lab_dir": str(running_lab.lab.root), "engine": "sim"}
            # One notebook renders its report as in JupyterLab (no run_dir); the others skip the ~15 s each.
            parameters["render_report"] = name == REPORTS_ITSELF
        target = prepared / name
        target.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(
            str(NOTEBOOKS / name), str(target), parameters=parameters, prepare_only=True, progress_bar=False
        )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's settings (testpaths, timeout)
    # nbval runs files in path order: 05_slo_report reports on the newest run, made just before it.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"),
         "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=300", str(prepared)],
        capture_output=True, text=True, timeout=1200, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert f"{sum(1 for _ in prepared.rglob('*.ipynb'))} " in result.stdout.splitlines()[-1] or "passed" in (
        result.stdout
    )
    runs = [p.name for p in out_dir.iterdir()]
    for scenario in ("baseline", "kill_and_recover", "latency_and_remediation", "random_chaos"):
        assert any(r.endswith(scenario) for r in runs), (scenario, runs)
    # Run from a notebook (as in JupyterLab: no run_dir given), a scenario renders its own report and puts
    # itself in the index next to its runs folder, as `labkit run` does.
    index = (tmp_path / "index.html").read_text()
    (run,) = [p for p in out_dir.iterdir() if p.name.endswith("kill_and_recover")]
    assert (run / "report.html").is_file() and (run / "lab.json").is_file(), run
    assert f'href="runs/{run.name}/report.html"' in index, run.name
    skipped = [p for p in out_dir.iterdir() if p.name.endswith("random_chaos")]
    assert skipped and not (skipped[0] / "report.html").exists()  # render_report=False: the run only
