"""labkit.chaos — chaos experiments on the lab: faults (kill, restart, pause, latency, error, stream_cut,
cpu_stress, unload), explicit or seeded schedules, and experiments with a steady-state hypothesis.

Every fault ends by itself: its TTL is held by the component that applies it (the supervisor, the wrapper,
stress-ng), so a dead experiment process never leaves one behind; `halt_all` ends them all at once.
"""

from __future__ import annotations

from labkit.chaos._experiment import EXPERIMENT_FILE, ExperimentResult, Verdict, run_experiment
from labkit.chaos._faults import (
    DEFAULT_TARGETS,
    FAULT_KINDS,
    FAULT_TARGETS,
    INSTANT_KINDS,
    MAX_FAULT_DURATION_S,
    Fault,
    FaultKind,
)
from labkit.chaos._files import EXAMPLE_EXPERIMENT, ExperimentFile, load_experiment_file
from labkit.chaos._inject import ActiveFault, FaultInjector, HaltReport, RevertOutcome, halt_all
from labkit.chaos._schedule import (
    DEFAULT_RANDOM_TARGETS,
    MAX_RUN_S,
    Schedule,
    as_schedule,
    check_schedule_fits,
    plan_text,
    random_schedule,
)

__all__ = [
    "DEFAULT_RANDOM_TARGETS",
    "DEFAULT_TARGETS",
    "EXAMPLE_EXPERIMENT",
    "EXPERIMENT_FILE",
    "FAULT_KINDS",
    "FAULT_TARGETS",
    "INSTANT_KINDS",
    "MAX_FAULT_DURATION_S",
    "MAX_RUN_S",
    "ActiveFault",
    "ExperimentFile",
    "ExperimentResult",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "HaltReport",
    "RevertOutcome",
    "Schedule",
    "Verdict",
    "as_schedule",
    "check_schedule_fits",
    "halt_all",
    "load_experiment_file",
    "plan_text",
    "random_schedule",
    "run_experiment",
]
