"""Every notebook runs top to bottom under nbval (`--nbval-lax`: a cell fails the test only if it raises)
against a real sim-engine lab, with the small parameters CI uses, injected by papermill (`prepare_only`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest

from labkit.lab.local import LocalBackend
from labkit.runner.kernel import KERNEL_NAME, ensure_kernelspec
from labkit.scenarios import SCENARIOS, WORKSHOP_NOTEBOOKS, WORKSHOP_SOLUTIONS, ExerciseNotDone

pytestmark = pytest.mark.integration

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ALL = sorted(
    p.relative_to(NOTEBOOKS).as_posix()
    for p in NOTEBOOKS.rglob("*.ipynb")
    if ".ipynb_checkpoints" not in p.parts
)
# A workshop exercise stops "run all" at its empty answer cells, on purpose: its solution (the same cells,
# answered; tests/test_workshop_notebooks.py holds them together) runs instead, and one exercise is run to
# check that it stops where it should (test_an_exercise_run_all_stops_at_the_prediction_cell).
EXERCISES = [f"workshop/{name}" for name in WORKSHOP_NOTEBOOKS]
RUN = [name for name in ALL if name not in EXERCISES]

# Small parameters for the notebooks that are not scenarios of `labkit run` (those use SCENARIOS' quick ones);
# a workshop solution takes its exercise's. All four solutions run in about 2 minutes on 2 cores.
QUICK: dict[str, dict[str, Any]] = {
    "workshop/W1_predict_the_p95.ipynb": {"duration_s": 5, "rate": 1.0, "faster": 2.0, "max_tokens": 16},
    "workshop/W2_your_first_experiment.ipynb": {"duration_s": 10, "pause_s": 2, "steady_state_s": 2},
    # the storm long enough for the lab profile's fast page at 4 requests/s, then the shortest recovery
    "workshop/W3_write_an_slo.ipynb": {
        "duration_s": 60,
        "baseline_s": 10,
        "storm_s": 20,
        "kill_after_s": 5,
        "steady_state_s": 2,
    },
    # a few short points, up to a rate the sim engine and the load generator keep up with on 2 cores
    "workshop/W4_find_the_capacity.ipynb": {
        "point_s": 3,
        "min_requests": 3,
        "max_rate": 8.0,
        "precision": 0.3,
        "max_search_s": 30,
        "max_tokens": 8,
    },
}


# Smaller than `--quick` where a scenario's quick run is long and has its own integration test: here only the
# notebook's cells must run. The quick runs are checked in test_alerting_scenario.py (100 s),
# test_capacity_scenario.py and test_remediation_ab_scenario.py (6 arms); these are their workshop
# counterparts' sizes (W3, W4).
SMALLER: dict[str, dict[str, Any]] = {
    "06_alerting.ipynb": QUICK["workshop/W3_write_an_slo.ipynb"],
    "07_capacity.ipynb": QUICK["workshop/W4_find_the_capacity.ipynb"],
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
    return QUICK[name.replace(f"/{WORKSHOP_SOLUTIONS}/", "/")]


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
            # how long it loads the lab: the whole run, or each point of the capacity search
            assert {"duration_s", "point_s"} & set(declared), f"{name} takes neither duration_s nor point_s"
            assert set(quick) <= set(declared), (name, set(quick) - set(declared))


def test_notebooks_are_stored_without_outputs() -> None:
    for name in ALL:
        book = nbformat.read(NOTEBOOKS / name, as_version=4)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name}: strip outputs"


# Every scenario notebook and the workshop's solutions, one nbval run: about 5 minutes on 2 cores, over the
# project's 300 s default.
@pytest.mark.timeout(900)
def test_all_notebooks_run_under_nbval(running_lab: LocalBackend, tmp_path: Path) -> None:
    prepared = tmp_path / "notebooks"
    out_dir = tmp_path / "runs"
    for name in RUN:
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


def test_an_exercise_run_all_stops_at_the_prediction_cell(running_lab: LocalBackend, tmp_path: Path) -> None:
    """W1 run top to bottom as it ships (no prediction written): it stops at the prediction cell with one
    short line saying what to write, not a traceback, and runs nothing after it."""
    name = "workshop/W1_predict_the_p95.ipynb"
    parameters = QUICK[name] | {
        "lab_dir": str(running_lab.lab.root),
        "engine": "sim",
        "out_dir": str(tmp_path / "runs"),
        "render_report": False,
    }
    executed = tmp_path / "W1.ipynb"
    ensure_kernelspec()
    with pytest.raises(papermill.PapermillExecutionError) as raised:
        papermill.execute_notebook(
            str(NOTEBOOKS / name),
            str(executed),
            parameters=parameters,
            progress_bar=False,
            kernel_name=KERNEL_NAME,
        )
    assert raised.value.ename == ExerciseNotDone.__name__, raised.value
    cells = [c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"]
    (stopped,) = [i for i, c in enumerate(cells) if "exercise" in c.metadata.get("tags", [])]
    assert "my_p95_prediction_s = None" in cells[stopped].source
    (error,) = [o for o in cells[stopped].outputs if o.output_type == "error"]
    assert len(error.traceback) == 1, error.traceback  # the message alone, no traceback wall
    assert "set `my_p95_prediction_s`" in error.traceback[0], error.traceback
    assert all(c.execution_count for c in cells[:stopped]), "the cells before the exercise ran"
    assert not any(c.execution_count or c.outputs for c in cells[stopped + 1 :]), "nothing after it ran"
    assert [p.name.endswith("workshop-first") for p in (tmp_path / "runs").iterdir()] == [True]
