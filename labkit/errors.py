"""The one exception hierarchy of labkit.

Every message says what happened and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConfigError",
    "LabAlreadyRunningError",
    "LabNotRunningError",
    "LabkitError",
    "ModelNotFoundError",
    "PortInUseError",
    "ServiceStartError",
]


class LabkitError(Exception):
    """Base class of every error labkit raises on purpose."""


class ConfigError(LabkitError):
    """A setting, flag or environment variable is invalid."""


class PortInUseError(ConfigError):
    """A port the lab needs is taken by another program."""

    def __init__(self, service: str, port: int, flag: str) -> None:
        self.service, self.port, self.flag = service, port, flag
        # The lab's port flags have LABKIT_* twins; a standalone service's --port has none.
        variable = "LABKIT_" + flag.removeprefix("--").replace("-", "_").upper()
        env = "" if flag == "--port" else f" (or set {variable})"
        super().__init__(
            f"port {port} (for the {service} service) is in use by another program; "
            f"pass {flag}{env} with a free port, or stop that program"
        )


class ModelNotFoundError(ConfigError):
    """The model file or model name the lab should serve does not exist."""


class BackendError(LabkitError):
    """A backend could not do what was asked of it."""


class ServiceStartError(BackendError):
    """A service did not become ready; the stack was torn down again."""


class LabAlreadyRunningError(BackendError):
    """`up` was asked for while a lab is already running in the same lab directory."""


class LabNotRunningError(BackendError):
    """An action needs a running lab and there is none."""
