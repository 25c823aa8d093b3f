"""The `Backend` protocol every way of running the lab implements, and the status it reports.

`local` (child processes under a supervisor) is the default; `docker` runs the same services as
containers (`labkit.backends.docker`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

__all__ = ["SERVICE_NAMES", "Backend", "ServiceName", "ServiceState", "ServiceStatus"]

ServiceName = Literal["model", "wrapper", "prometheus", "exporter"]
SERVICE_NAMES: tuple[ServiceName, ...] = ("model", "wrapper", "prometheus", "exporter")

ServiceState = Literal[
    "starting",  # launched, not yet answering its readiness check
    "ready",  # answering its readiness check
    "unready",  # was ready, now failing its readiness check while its process lives
    "restarting",  # its process ended; the restart policy is bringing it back
    "paused",  # SIGSTOPped on purpose
    "failed",  # kept exiting during start-up; the policy gave up
    "stopped",  # not running
    "external",  # run by somebody else (an Ollama at --ollama-url): neither supervised nor probed
]


class ServiceStatus(BaseModel):
    """One service as `labkit status --json` shows it."""

    model_config = ConfigDict(frozen=True)

    name: ServiceName
    state: ServiceState
    pid: int | None
    restarts: int | None
    url: str
    container: str | None = None  # the Docker backend's container id (short), else None


@runtime_checkable
class Backend(Protocol):
    """What the lab needs from whatever runs its services."""

    def up(self) -> list[ServiceStatus]: ...
    def wait_scraped(  # Prometheus has scraped every service: measurements may start
        self, *, timeout_s: float = ..., say: Callable[[str], None] | None = None
    ) -> None: ...
    def down(self) -> int: ...  # how many processes or containers were stopped
    def status(self) -> list[ServiceStatus]: ...
    def kill(self, service: ServiceName) -> None: ...
    def restart(self, service: ServiceName) -> None: ...
    def pause(self, service: ServiceName, duration_s: float) -> None: ...
    def unpause(self, service: ServiceName) -> None: ...
    def logs(self, service: ServiceName, lines: int = 100) -> str: ...
