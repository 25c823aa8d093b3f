"""labkit — the LLM Reliability Lab: start an LLM serving stack, drive load, break it, heal it, measure it.

The public surface is re-exported here; notebooks and the CLI use nothing else.
"""

__version__ = "0.1.0"

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
