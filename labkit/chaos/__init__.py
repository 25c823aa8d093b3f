"""labkit.chaos — chaos experiments on the lab: faults (kill, restart, pause, latency, error, stream_cut,
cpu_stress, unload), explicit or seeded schedules, experiments with a steady-state hypothesis, and automated
remediation beside them (on p95 latency, or on a firing Alertmanager notification).

Every fault ends by itself: its TTL is held by the component that applies it (the supervisor, the wrapper,
stress-ng), so a dead experiment process never leaves one behind; `halt_all` ends them all at once. What a
fault is (`Fault`, its kinds, targets and parameters) is `labkit.faults`, shared with the wrapper's fault API.
"""

from __future__ import annotations

from labkit.chaos._applicable import (
    alert_refusal,
    applicable_faults,
    fault_refusal,
    lab_alert_names,
    remediation_refusal,
)
from labkit.chaos._background import ExperimentInterrupted
from labkit.chaos._experiment import run_experiment
from labkit.chaos._files import EXAMPLE_EXPERIMENT, ExperimentFile, load_experiment_file
from labkit.chaos._inject import ActiveFault, FaultInjector, HaltReport, RevertOutcome, halt_all
from labkit.chaos._remediation import (
    DEFAULT_THRESHOLD_S,
    AlertSource,
    Decision,
    RemediationPolicy,
    Remediator,
    p95_latency_query,
    prometheus_signal,
)
from labkit.chaos._result import ExperimentResult, Verdict
from labkit.chaos._schedule import (
    DEFAULT_RANDOM_TARGETS,
    MAX_RUN_S,
    Schedule,
    as_schedule,
    check_schedule_fits,
    plan_text,
    random_schedule,
)
from labkit.chaos._spec import ExperimentLoad, ExperimentSpec, SteadyState
from labkit.faults import FAULT_KINDS, Fault

__all__ = [
    "DEFAULT_RANDOM_TARGETS",
    "DEFAULT_THRESHOLD_S",
    "EXAMPLE_EXPERIMENT",
    "FAULT_KINDS",
    "MAX_RUN_S",
    "ActiveFault",
    "AlertSource",
    "Decision",
    "ExperimentFile",
    "ExperimentInterrupted",
    "ExperimentLoad",
    "ExperimentResult",
    "ExperimentSpec",
    "Fault",
    "FaultInjector",
    "HaltReport",
    "RemediationPolicy",
    "Remediator",
    "RevertOutcome",
    "Schedule",
    "SteadyState",
    "Verdict",
    "alert_refusal",
    "applicable_faults",
    "as_schedule",
    "check_schedule_fits",
    "fault_refusal",
    "halt_all",
    "lab_alert_names",
    "load_experiment_file",
    "p95_latency_query",
    "plan_text",
    "prometheus_signal",
    "random_schedule",
    "remediation_refusal",
    "run_experiment",
]
