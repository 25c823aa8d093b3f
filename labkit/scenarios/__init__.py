"""The lab's scenarios, as the notebooks run them: one call each, so that a notebook only narrates.

`SCENARIOS` is the catalog `labkit run` reads (name -> notebook, title, parameter spec). A notebook checks its
parameters first (`KillAndRecover.from_notebook(globals())`), then `open_lab` attaches to a running lab or
brings one up (and takes down only a lab it started), then one scenario call writes one run directory.
"""

from __future__ import annotations

from labkit.scenarios.catalog import (
    NOTEBOOK_PARAMS,
    SCENARIOS,
    WORKSHOP_NOTEBOOKS,
    WORKSHOP_SOLUTIONS,
    Scenario,
)
from labkit.scenarios.exercises import (
    CLOSE_WITHIN,
    ExerciseNotDone,
    PredictionCheck,
    SloCheck,
    check_slo,
    compare_prediction,
    require_answer,
)
from labkit.scenarios.remediation_ab import AbRun, remediation_ab
from labkit.scenarios.runs import (
    ScenarioRun,
    alerting,
    baseline,
    capacity,
    kill_and_recover,
    latency_and_remediation,
    random_chaos,
)
from labkit.scenarios.session import LabSession, open_lab, resolve_out_dir, warm_up
from labkit.scenarios.setup_check import check_setup
from labkit.scenarios.specs import (
    REPORT_NOTEBOOK,
    RESERVED_PARAMETERS,
    Alerting,
    Baseline,
    Capacity,
    CheckSetup,
    ExperimentParams,
    KillAndRecover,
    LabParams,
    LatencyAndRemediation,
    LoadParams,
    RandomChaos,
    RemediationAB,
    SloReport,
    WorkshopCapacity,
    WorkshopExperiment,
    WorkshopPredictP95,
    WorkshopSloPage,
)

__all__ = [
    "CLOSE_WITHIN",
    "NOTEBOOK_PARAMS",
    "REPORT_NOTEBOOK",
    "RESERVED_PARAMETERS",
    "SCENARIOS",
    "WORKSHOP_NOTEBOOKS",
    "WORKSHOP_SOLUTIONS",
    "AbRun",
    "Alerting",
    "Baseline",
    "Capacity",
    "CheckSetup",
    "ExerciseNotDone",
    "ExperimentParams",
    "KillAndRecover",
    "LabParams",
    "LabSession",
    "LatencyAndRemediation",
    "LoadParams",
    "PredictionCheck",
    "RandomChaos",
    "RemediationAB",
    "Scenario",
    "ScenarioRun",
    "SloCheck",
    "SloReport",
    "WorkshopCapacity",
    "WorkshopExperiment",
    "WorkshopPredictP95",
    "WorkshopSloPage",
    "alerting",
    "baseline",
    "capacity",
    "check_setup",
    "check_slo",
    "compare_prediction",
    "kill_and_recover",
    "latency_and_remediation",
    "open_lab",
    "random_chaos",
    "remediation_ab",
    "require_answer",
    "resolve_out_dir",
    "warm_up",
]
