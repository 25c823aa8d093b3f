"""labkit — the LLM Reliability Lab: start an LLM serving stack, drive load, break it, heal it, measure it.

The public surface is re-exported here; notebooks and the CLI use nothing else.
"""

__version__ = "0.1.0"

import typing as _typing

from labkit._lazy import lazy_exports as _lazy_exports

_EXPORTS = {
    "SERVICE_NAMES": "labkit.backends.base",
    "Backend": "labkit.backends.base",
    "ServiceStatus": "labkit.backends.base",
    "LocalBackend": "labkit.backends.local",
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
    "INTER_TOKEN_LATENCY_BUCKETS": "labkit.histograms",
    "REQUEST_DURATION_BUCKETS": "labkit.histograms",
    "TIME_TO_FIRST_TOKEN_BUCKETS": "labkit.histograms",
}

__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)

if _typing.TYPE_CHECKING:
    from labkit.backends.base import SERVICE_NAMES, Backend, ServiceStatus
    from labkit.backends.local import LocalBackend
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
    from labkit.histograms import (
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
