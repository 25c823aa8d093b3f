"""The Docker backend's agent: the lab's exporter and control API, run as the lab's `exporter` container.

It finds the lab's containers by their labels (`io.labkit.lab=<lab id>`, `io.labkit.service=<name>`), probes
each service's readiness as the local supervisor does, exports `lab_service_restarts_total` from Docker's own
`RestartCount`, and serves the same control API (`/v1/status`, `/v1/services/{name}/{action}`, `/v1/stress`)
so that chaos, remediation and the CLI work unchanged on either backend.

- kill: SIGKILL of the container's main process *from the host's PID namespace* (the agent runs with
  `pid: host`). A `docker kill` through the API does not make the restart policy act (moby#28396,
  pumba#11); a process that dies does, so `RestartCount` grows by one per kill.
- restart: SIGTERM of the main process the same way; the service shuts down cleanly and the restart policy
  (`unless-stopped`) starts it again, so a graceful restart is counted by Docker too. (`docker restart`
  would reset `RestartCount` to 0, and the counter with it.)
- pause: `docker pause` (the cgroup freezer) with a TTL held here; an agent that starts and finds a lab
  container paused (its predecessor died mid-pause, TTL unknown) unpauses it at once.
- cpu_stress: stress-ng inside this container, which competes for the same CPUs as the model's container.

Run as `python -m labkit.lab.manager.docker_agent --lab-id ID --host H --port P --token-file F [--lab-dir D]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

from labkit.lab.contract import (
    LABEL_LAB,
    LABEL_MODEL,
    LABEL_READY,
    LABEL_SERVICE,
    LABEL_URL,
    MANAGED_SERVICES,
    ServiceState,
    ServiceStatus,
)
from labkit.lab.labdir import LabDir
from labkit.lab.manager.control import ControlServer
from labkit.lab.manager.readiness import ProbedState
from labkit.lab.specs import ServiceSpec
from labkit.service_logs import configure_service_logging

__all__ = [
    "ContainerService",
    "DockerAgent",
    "main",
]

logger = logging.getLogger(__name__)

# The services the agent manages; the exporter is the agent itself, grafana (compose) is only watched by
# Grafana's own healthcheck.
MAX_START_FAILURES = 3
# Docker's event stream says at once when a container dies, restarts or is paused; a full inspection of
# every container this often is the backstop (a missed event; the stream resubscribes after an engine
# restart). Inspecting every container on each 0.25 s probe cost ~5 % of a core in dockerd on a 2-core
# machine, taken from the model.
DISCOVER_EVERY_S = 2.0
# The container events that change what the agent reports.
_STATE_EVENTS = {"start", "die", "kill", "stop", "pause", "unpause", "restart", "destroy", "oom"}


def _start_order(container: Any) -> int:
    name = container.labels.get(LABEL_SERVICE, "")
    return MANAGED_SERVICES.index(name) if name in MANAGED_SERVICES else len(MANAGED_SERVICES)


def _parse_docker_time(value: str | None) -> float | None:
    """Docker's RFC 3339 timestamps (nanoseconds, 'Z') as unix time; None for the zero time."""
    if not value or value.startswith("0001-"):
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    digits = "".join(ch for ch in frac if ch.isdigit())
    return stamp + (float(f"0.{digits}") if digits else 0.0)


class ContainerService(ProbedState):
    """One lab container: its Docker state, restarts and host PID, plus the readiness probe."""

    def __init__(self, container: Any, on_change: Callable[[], None]) -> None:
        labels = container.labels
        self.container = container
        self.spec = ServiceSpec(
            name=labels[LABEL_SERVICE],
            argv=[],
            url=labels.get(LABEL_URL, ""),
            ready_path=labels.get(LABEL_READY, "/"),
            model_name=labels.get(LABEL_MODEL) or None,
        )
        self.on_change = on_change
        self.state: ServiceState = "starting"
        self.detail = ""
        self.ever_ready = False
        self.start_failures = 0
        self.restarts = 0
        self.started_at: float | None = None
        self.docker_status = "created"
        self._pid: int | None = None
        self._pause_timer: asyncio.TimerHandle | None = None
        # Restarts before this agent first saw the container: an agent that was itself restarted must not
        # take a service killed three times over the lab's life for one that never starts.
        self._restarts_before = int(container.attrs.get("RestartCount") or 0)
        self._lock = asyncio.Lock()  # one pause, unpause, signal or refresh at a time
        self._apply(container.attrs)

    @property
    def pid(self) -> int | None:
        return self._pid

    def _set_state(self, state: ServiceState, detail: str = "") -> None:
        if state != self.state or detail != self.detail:
            self.state, self.detail = state, detail
            self.on_change()

    def _apply(self, attrs: dict[str, Any]) -> None:
        """Fold a fresh `docker inspect` into the service's state."""
        state = attrs.get("State", {})
        status = state.get("Status", "created")
        started_at = _parse_docker_time(state.get("StartedAt"))
        new_process = self.started_at is not None and started_at != self.started_at
        self.restarts = int(attrs.get("RestartCount") or 0)
        self.started_at = started_at
        self.docker_status = status
        self._pid = (state.get("Pid") or None) if status in ("running", "paused") else None
        if status == "paused":
            self._set_state("paused", self.detail if self.state == "paused" else "paused with docker pause")
        elif status == "restarting":
            self._set_state("restarting", f"exited with code {state.get('ExitCode')}")
        elif status == "running":
            if not self.ever_ready and self.restarts - self._restarts_before >= MAX_START_FAILURES:
                self._set_state(
                    "failed",
                    f"restarted {self.restarts - self._restarts_before} times before becoming ready; "
                    f"see `labkit logs {self.spec.name}`",
                )
            elif new_process or self.state in ("restarting", "stopped", "failed"):
                self._set_state("starting")
            elif self.state == "paused":
                self._set_state("ready" if self.ever_ready else "starting")
        else:  # created, exited, dead, removing
            self._set_state("stopped", f"container {status}, exit code {state.get('ExitCode')}")

    async def refresh(self) -> None:
        async with self._lock:
            await self._refresh()
        if self.docker_status == "paused" and self._pause_timer is None:
            # Paused with no TTL held here (the agent that paused it died, or an unpause failed): end it.
            logger.warning("%s is paused with no pause held by this agent: unpausing it", self.spec.name)
            await self.unpause()

    async def _refresh(self) -> None:
        try:
            await asyncio.to_thread(self.container.reload)
        except docker.errors.NotFound:
            self.docker_status = "removed"
            self._pid = None
            self._set_state("stopped", "container removed")
            return
        except Exception as exc:  # the engine went away (requests' errors are not DockerExceptions)
            logger.warning("cannot inspect %s: %s", self.spec.name, exc)
            return
        self._apply(self.container.attrs)

    # ---- lifecycle: containers outlive the agent; `labkit down` removes them ---------------------
    async def start(self) -> None:
        await self.refresh()

    async def stop(self) -> None:
        """The agent is stopping: end a pause it holds (no fault outlives the agent)."""
        if self.docker_status == "paused":
            with contextlib.suppress(Exception):
                await self.unpause()
        self._cancel_pause_timer()

    # ---- actions ---------------------------------------------------------------------------------
    async def _main_pid(self) -> int:
        await self._refresh()
        if self._pid is None:
            raise ValueError(f"{self.spec.name} has no running process (container {self.docker_status})")
        return self._pid

    async def _signal_main(self, sig: int) -> None:
        async with self._lock:
            pid = await self._main_pid()
            if self.docker_status == "paused":  # a frozen process would hold the signal until thawed
                await self._unpause()
            try:
                os.kill(pid, sig)
            except ProcessLookupError as exc:
                raise ValueError(f"{self.spec.name}'s process {pid} is gone already") from exc
            except PermissionError as exc:
                raise ValueError(
                    f"not allowed to signal {self.spec.name}'s process {pid}: the agent and the lab's "
                    "containers must run as the same user, with the agent in the host's PID namespace"
                ) from exc

    async def kill(self) -> None:
        """SIGKILL the main process, as a crash would; Docker's restart policy brings it back."""
        await self._signal_main(signal.SIGKILL)

    async def restart(self) -> None:
        """Graceful restart: SIGTERM; the service exits cleanly and the restart policy starts it again."""
        await self._signal_main(signal.SIGTERM)

    async def pause(self, duration_s: float) -> None:
        async with self._lock:
            await self._main_pid()
            try:
                if self.docker_status != "paused":
                    await asyncio.to_thread(self.container.pause)
            except Exception as exc:
                raise ValueError(f"cannot pause {self.spec.name}: {exc}") from exc
            self._arm_unpause(duration_s)
            self.docker_status = "paused"
            self._set_state("paused", f"paused for {duration_s:g}s")

    def _arm_unpause(self, after_s: float) -> None:
        self._cancel_pause_timer()
        loop = asyncio.get_running_loop()
        self._pause_timer = loop.call_later(after_s, lambda: loop.create_task(self._timed_unpause()))

    async def _timed_unpause(self) -> None:
        self._pause_timer = None
        await self.unpause()

    async def unpause(self) -> None:
        async with self._lock:
            await self._unpause()

    async def _unpause(self) -> None:
        """Thaw the container; if the engine does not answer, try again in a second (the TTL holds)."""
        self._cancel_pause_timer()
        await self._refresh()
        if self.docker_status != "paused":
            return
        try:
            await asyncio.to_thread(self.container.unpause)
        except Exception as exc:
            logger.warning("cannot unpause %s (%s); trying again in 1 s", self.spec.name, exc)
            self._arm_unpause(1.0)
            return
        await self._refresh()

    def _cancel_pause_timer(self) -> None:
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None

    def status(self) -> ServiceStatus:
        return ServiceStatus(
            name=self.spec.name,  # type: ignore[arg-type]
            state=self.state,
            pid=self.pid,
            restarts=self.restarts,
            url=self.spec.url,
            container=self.container.short_id,
        )


class DockerAgent(ControlServer):
    """The control server over the lab's containers."""

    def __init__(
        self,
        *,
        client: Any,
        lab_id: str,
        token: str,
        host: str,
        port: int,
        lab: LabDir,
        external_model_url: str | None = None,
    ) -> None:
        super().__init__(lab_id=lab_id, token=token, host=host, port=port, lab=lab)
        self.client = client
        self.external_model_url = external_model_url
        self._discovered_at = 0.0
        self._changed: set[str] = set()  # container ids an event named since the last tick
        self._events: Any = None

    def extra_statuses(self) -> list[ServiceStatus]:
        if self.external_model_url is None:
            return []
        return [
            ServiceStatus(
                name="model", state="external", pid=None, restarts=None, url=self.external_model_url
            )
        ]

    async def discover(self) -> None:
        """(Re)find the lab's containers: compose may create them after the agent, and a container that
        was replaced keeps its name but not its id."""
        self._discovered_at = time.monotonic()
        try:
            containers = await asyncio.to_thread(
                self.client.containers.list, all=True, filters={"label": f"{LABEL_LAB}={self.lab_id}"}
            )
        except Exception as exc:  # the engine went away: keep the last view, try again
            logger.warning("cannot list the lab's containers: %s", exc)
            return
        for container in sorted(containers, key=_start_order):
            name = container.labels.get(LABEL_SERVICE)
            if name == "exporter":  # this agent
                self.own_restarts = int(container.attrs.get("RestartCount") or 0)
                self.own_container = container.short_id
            if name not in MANAGED_SERVICES:
                continue
            known = self.services.get(name)
            if isinstance(known, ContainerService) and known.container.id == container.id:
                if not known._lock.locked():  # listed with a full inspection: fold it in
                    known.container = container
                    known._apply(container.attrs)
                continue
            if known is None or known.container.id != container.id:  # type: ignore[attr-defined]
                logger.info("managing %s (container %s)", name, container.short_id)
                self.services[name] = ContainerService(container, self.write_state)
                self.services = dict(
                    sorted(self.services.items(), key=lambda kv: MANAGED_SERVICES.index(kv[0]))
                )
        self.write_state()

    def _follow_events(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread: Docker's event stream for the lab's containers; each state change marks its container.
        When the stream ends (the engine restarted), it subscribes again; polling covers the gap."""
        filters = {"type": "container", "label": f"{LABEL_LAB}={self.lab_id}"}
        while not self.stop_event.is_set():
            try:
                self._events = self.client.events(decode=True, filters=filters)
                for event in self._events:
                    if event.get("status") in _STATE_EVENTS or event.get("Action") in _STATE_EVENTS:
                        loop.call_soon_threadsafe(self._changed.add, str(event.get("id", "")))
            except Exception as exc:  # requests' errors included: the engine went away
                logger.warning("Docker's event stream ended (%s); subscribing again in 2 s", exc)
            time.sleep(2.0)

    async def on_start(self) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._follow_events, args=(loop,), name="docker-events", daemon=True).start()
        await self.discover()
        # A container paused by an agent that died (its TTL unknown) is unpaused by its first refresh.
        await asyncio.gather(
            *(svc.refresh() for svc in self.services.values() if isinstance(svc, ContainerService))
        )

    async def on_tick(self) -> None:
        containers = [svc for svc in self.services.values() if isinstance(svc, ContainerService)]
        changed, self._changed = self._changed, set()
        if time.monotonic() - self._discovered_at >= DISCOVER_EVERY_S:
            await self.discover()  # inspects every container
            return
        await asyncio.gather(*(svc.refresh() for svc in containers if svc.container.id in changed))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m labkit.lab.manager.docker_agent",
        description="The Docker lab's exporter and control API (run as the lab's `exporter` container).",
    )
    parser.add_argument("--lab-id", required=True, help="the value of the io.labkit.lab label to manage")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9188, help="port of /metrics and the control API")
    parser.add_argument("--token-file", type=Path, required=True, help="the lab's token (control API)")
    parser.add_argument(
        "--external-model-url", help="a model server the lab does not run (shown in the status as external)"
    )
    parser.add_argument(
        "--lab-dir", type=Path, help="where to write state.json and stress-ng's log (default: a temp dir)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # JSON lines on stderr: the container's json-file log driver keeps them, rotated with the lab's bound.
    configure_service_logging("agent")
    try:
        token = args.token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        sys.stderr.write(f"cannot read the lab's token file {args.token_file}: {exc.strerror}\n")
        return 2
    if not token:
        sys.stderr.write(f"the token file {args.token_file} is empty; write the lab's token into it\n")
        return 2
    lab = LabDir(args.lab_dir or Path(tempfile.mkdtemp(prefix="labkit-agent-")))
    lab.logs.mkdir(parents=True, exist_ok=True)
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        sys.stderr.write(f"no Docker engine answers the agent ({exc}); mount the Docker socket into it\n")
        return 2
    agent = DockerAgent(
        client=client,
        lab_id=args.lab_id,
        token=token,
        host=args.host,
        port=args.port,
        lab=lab,
        external_model_url=args.external_model_url,
    )
    with contextlib.closing(client):
        asyncio.run(agent.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
