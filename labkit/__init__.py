"""labkit — the LLM Reliability Lab: start an LLM serving stack, drive load, break it, heal it, measure it.

This is the public API: what notebooks, scripts and the README import, one list (`__all__`, tested against
what the README and the notebooks use). The names load lazily, on first use (labkit._lazy), so that a service
process importing `labkit.services...` pays for none of them. docs/architecture.md maps the rest.
"""

import typing as _typing

from labkit._lazy import lazy_exports as _lazy_exports
from labkit._version import __version__

if _typing.TYPE_CHECKING:
    from labkit import chaos, report, scenarios
    from labkit.chaos import (
        ExperimentResult,
        ExperimentSpec,
        Fault,
        RemediationPolicy,
        Schedule,
        halt_all,
        random_schedule,
        run_experiment,
    )
    from labkit.config import DEFAULT_MODEL_NAME, LabConfig, load_config
    from labkit.errors import (
        BackendError,
        ConfigError,
        LabAlreadyRunningError,
        LabkitError,
        LabNotRunningError,
        ModelNotFoundError,
        PortInUseError,
        ServiceStartError,
    )
    from labkit.lab.backend import Backend
    from labkit.lab.contract import SERVICE_NAMES, ServiceStatus
    from labkit.lab.docker import DockerBackend
    from labkit.lab.local import LocalBackend
    from labkit.lab.registry import attach_backend, backend_for
    from labkit.measure.capacity import CapacityResult, CapacitySpec, find_capacity
    from labkit.measure.collect import save_prometheus_series
    from labkit.measure.histograms import (
        INTER_TOKEN_LATENCY_BUCKETS,
        REQUEST_DURATION_BUCKETS,
        TIME_TO_FIRST_TOKEN_BUCKETS,
    )
    from labkit.measure.load import LoadResult, LoadSpec, run_load
    from labkit.measure.prom import PrometheusSeries
    from labkit.measure.slo import SloReport, compare_client_server, evaluate_client_slos, load_slo_spec
    from labkit.report import RunData
    from labkit.rundir import EventKind, RunDirectory, RunFile
    from labkit.scenarios import LabSession, open_lab

__getattr__, __dir__ = _lazy_exports(__name__)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "INTER_TOKEN_LATENCY_BUCKETS",
    "REQUEST_DURATION_BUCKETS",
    "SERVICE_NAMES",
    "TIME_TO_FIRST_TOKEN_BUCKETS",
    "Backend",
    "BackendError",
    "CapacityResult",
    "CapacitySpec",
    "ConfigError",
    "DockerBackend",
    "EventKind",
    "ExperimentResult",
    "ExperimentSpec",
    "Fault",
    "LabAlreadyRunningError",
    "LabConfig",
    "LabNotRunningError",
    "LabSession",
    "LabkitError",
    "LoadResult",
    "LoadSpec",
    "LocalBackend",
    "ModelNotFoundError",
    "PortInUseError",
    "PrometheusSeries",
    "RemediationPolicy",
    "RunData",
    "RunDirectory",
    "RunFile",
    "Schedule",
    "ServiceStartError",
    "ServiceStatus",
    "SloReport",
    "__version__",
    "attach_backend",
    "backend_for",
    "chaos",
    "compare_client_server",
    "evaluate_client_slos",
    "find_capacity",
    "halt_all",
    "load_config",
    "load_slo_spec",
    "open_lab",
    "random_schedule",
    "report",
    "run_experiment",
    "run_load",
    "save_prometheus_series",
    "scenarios",
]
