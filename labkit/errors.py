"""The one exception hierarchy of labkit: every exception it defines derives from `LabkitError`, and every
message says what happened and what to do about it. The whole tree (a test keeps it complete):

    LabkitError
    ├── ConfigError                   a setting, flag, variable, parameter or file is invalid
    │   ├── PortInUseError            a port the lab needs is taken
    │   ├── ModelNotFoundError        the model file or name does not exist
    │   ├── FieldError                one field of a document, at its location (also a ValueError)
    │   ├── ParameterError            a scenario's parameter: unknown, reserved, mistyped or out of range
    │   │                             (labkit.params)
    │   ├── InvalidFaultError         a fault fails validation (labkit.faults)
    │   └── SloSpecError              an SLO spec fails validation (labkit.measure.slo.spec)
    ├── BackendError                  a backend could not do what was asked
    │   ├── ServiceStartError         a service did not become ready; the lab was torn down
    │   ├── LabAlreadyRunningError    `up` where a lab runs already
    │   ├── LabNotRunningError        an action needs a running lab
    │   └── StressUnavailableError    stress-ng is missing where the manager runs (labkit.lab.manager.control)
    ├── RunDirectoryError             a run directory is missing or cannot hold what is asked (labkit.rundir)
    │   ├── ReportError               a run directory cannot be reported on (labkit.report.data)
    │   └── DiskFullError             no room for a run's files, before or during it (labkit.diskspace)
    ├── SamplesError                  a run's per-request samples are unreadable (labkit.measure.slo.client)
    ├── PrometheusError               Prometheus failed a query (labkit.measure.prom)
    │   ├── PrometheusUnreachableError
    │   └── PrometheusQueryError
    ├── ExperimentInterrupted         a signal stopped a chaos experiment (labkit.chaos._experiment)
    ├── ExerciseNotDone               a workshop exercise's answer is still empty (labkit.scenarios)
    ├── NotebookError                 a notebook is missing or cannot run as a scenario (labkit.runner)
    ├── KernelSpecError               the `labkit` kernelspec cannot start this interpreter (labkit.runner)
    ├── ReportRenderError             a report notebook failed or did not render (labkit.runner)
    ├── RunFailedError                a scenario run failed; its run directory stays readable (labkit.runner)
    │   └── RunInterruptedError       ... by Ctrl-C
    ├── ClientGoneError               an HTTP client left before its answer (a service records 499)
    ├── UpstreamError                 the wrapper's model backend failed (labkit.services.wrapper)
    ├── InjectedFaultError            a wrapper fault decided a request's answer (labkit.services.wrapper)
    └── ModelServerAPIError           an Ollama or OpenAI API error answer (labkit.services.modelserver)
        ├── BadRequestError
        ├── UnknownModelError
        └── QueueFullError
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ClientGoneError",
    "ConfigError",
    "FieldError",
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


class FieldError(ConfigError, ValueError):
    """A problem with the field at `loc` (a path in a document: ("params", "delay_s"), ("spec", 0)).

    Also a ValueError, so that a pydantic validator may raise it and the location survives into the
    message (`params.delay_s: ...`)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


class BackendError(LabkitError):
    """A backend could not do what was asked of it."""


class ServiceStartError(BackendError):
    """A service did not become ready; the stack was torn down again."""


class LabAlreadyRunningError(BackendError):
    """`up` was asked for while a lab is already running in the same lab directory."""


class LabNotRunningError(BackendError):
    """An action needs a running lab and there is none."""


class ClientGoneError(LabkitError):
    """The HTTP client disconnected before its answer was ready (the services record status 499)."""
