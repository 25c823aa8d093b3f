"""labkit — the LLM Reliability Lab: start an LLM serving stack, drive load, break it, heal it, measure it.

The public surface is re-exported here; notebooks and the CLI use nothing else.
"""

import typing as _typing

from labkit._lazy import lazy_exports as _lazy_exports
from labkit._version import __version__

_EXPORTS = {
    "SERVICE_NAMES": "labkit.lab.contract",
    "Backend": "labkit.lab.backend",
    "ServiceStatus": "labkit.lab.contract",
    "LocalBackend": "labkit.lab.local",
    "DEFAULT_MODEL_NAME": "labkit.config",
    "LabConfig": "labkit.config",
    "load_config": "labkit.config",
    "BackendError": "labkit.errors",
    "ConfigError": "labkit.errors",
    "LabAlreadyRunningError": "labkit.errors",
    "LabkitError": "labkit.errors",
    "LabNotRunningError": "labkit.errors",
    "ModelNotFoundError": "labkit.errors",
    "PortInUseError": "labkit.errors",
    "ServiceStartError": "labkit.errors",
    "INTER_TOKEN_LATENCY_BUCKETS": "labkit.measure.histograms",
    "REQUEST_DURATION_BUCKETS": "labkit.measure.histograms",
    "TIME_TO_FIRST_TOKEN_BUCKETS": "labkit.measure.histograms",
}

__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)

if _typing.TYPE_CHECKING:
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
    from labkit.lab.local import LocalBackend
    from labkit.measure.histograms import (
        INTER_TOKEN_LATENCY_BUCKETS,
        REQUEST_DURATION_BUCKETS,
        TIME_TO_FIRST_TOKEN_BUCKETS,
    )

__all__ = [
    "DEFAULT_MODEL_NAME",
    "INTER_TOKEN_LATENCY_BUCKETS",
    "REQUEST_DURATION_BUCKETS",
    "SERVICE_NAMES",
    "TIME_TO_FIRST_TOKEN_BUCKETS",
    "Backend",
    "BackendError",
    "ConfigError",
    "LabAlreadyRunningError",
    "LabConfig",
    "LabNotRunningError",
    "LabkitError",
    "LocalBackend",
    "ModelNotFoundError",
    "PortInUseError",
    "ServiceStartError",
    "ServiceStatus",
    "__version__",
    "load_config",
]
