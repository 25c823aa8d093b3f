"""Batch runs of the scenario notebooks (`labkit run`, `labkit report`): papermill executes a notebook into a
new run directory (`runs`), on a kernelspec that starts this interpreter (`kernel`), after its parameters were
checked against the notebook's cell and the scenario's spec (`notebooks`); the SLO report notebook is then
rendered as one self-contained HTML file (`html`), with cells.json and run.json describing the run (`cells`).
"""

from __future__ import annotations

from labkit.params import ParameterError
from labkit.runner.html import export_html
from labkit.runner.kernel import KERNEL_NAME, KernelSpecError, ensure_kernelspec
from labkit.runner.notebooks import (
    NotebookError,
    NotebookParameter,
    convert_parameter,
    notebook_parameters,
    notebooks_dir,
)
from labkit.runner.runs import (
    ReportRenderError,
    RunFailedError,
    RunInterruptedError,
    RunPlan,
    RunResult,
    Scenario,
    ScenarioRunner,
    load_catalog,
    render_report,
)
from labkit.scenarios.specs import REPORT_NOTEBOOK, RESERVED_PARAMETERS

__all__ = [
    "KERNEL_NAME",
    "REPORT_NOTEBOOK",
    "RESERVED_PARAMETERS",
    "KernelSpecError",
    "NotebookError",
    "NotebookParameter",
    "ParameterError",
    "ReportRenderError",
    "RunFailedError",
    "RunInterruptedError",
    "RunPlan",
    "RunResult",
    "Scenario",
    "ScenarioRunner",
    "convert_parameter",
    "ensure_kernelspec",
    "export_html",
    "load_catalog",
    "notebook_parameters",
    "notebooks_dir",
    "render_report",
]
