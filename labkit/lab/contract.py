"""What the host side of a lab and its manager process (the local supervisor or the Docker agent) agree on:
the services' names and states, the status each reports, the control API's routes, the Docker labels.

The host side calls the control API (`labkit.lab.backend`); the manager serves it (`labkit.lab.manager`).
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ALERTS_ROUTE",
    "ALERTS_WEBHOOK_ROUTE",
    "LABEL_LAB",
    "LABEL_MODEL",
    "LABEL_READY",
    "LABEL_SERVICE",
    "LABEL_URL",
    "MANAGED_SERVICES",
    "SERVICE_ACTIONS",
    "SERVICE_NAMES",
    "SHUTDOWN_ROUTE",
    "STATUS_ROUTE",
    "STRESS_ROUTE",
    "ManagedServiceName",
    "ServiceAction",
    "ServiceName",
    "ServiceState",
    "ServiceStatus",
    "service_action_route",
]

ServiceName = Literal["model", "wrapper", "alertmanager", "prometheus", "exporter"]
SERVICE_NAMES: tuple[ServiceName, ...] = get_args(ServiceName)
# The services the manager runs, restarts, pauses and kills (the exporter is the manager itself), in start
# order: Alertmanager before the Prometheus that sends it alerts.
ManagedServiceName = Literal["model", "wrapper", "alertmanager", "prometheus"]
MANAGED_SERVICES: tuple[ManagedServiceName, ...] = get_args(ManagedServiceName)

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


# The control API, on the exporter port, behind the lab's token.
STATUS_ROUTE = "/v1/status"  # GET: a ServiceStatus per service
STRESS_ROUTE = "/v1/stress"  # GET, POST {workers, duration_s}, DELETE: the cpu_stress fault (stress-ng)
SHUTDOWN_ROUTE = "/v1/shutdown"  # POST: the manager stops its services, then itself
# Alertmanager's webhook receiver (POST, its payload) and the notifications received (GET ?since=N: the
# lines of the lab's alerts.jsonl from line N on, as labkit.notifications.AlertNotification).
ALERTS_WEBHOOK_ROUTE = "/v1/alerts/webhook"
ALERTS_ROUTE = "/v1/alerts"
ServiceAction = Literal["kill", "restart", "pause", "unpause"]
SERVICE_ACTIONS: tuple[ServiceAction, ...] = ("kill", "restart", "pause", "unpause")


def service_action_route(service: str = "{name}", action: str = "{action}") -> str:
    """POST /v1/services/<service>/<action>; with no arguments, the route's pattern as the server has it."""
    return f"/v1/services/{service}/{action}"


# The Docker backend's containers carry these labels: the agent finds the lab's services by them.
LABEL_LAB = "io.labkit.lab"
LABEL_SERVICE = "io.labkit.service"
LABEL_URL = "io.labkit.url"
LABEL_READY = "io.labkit.ready_path"
LABEL_MODEL = "io.labkit.model_name"
