"""What every backend's lab manager shares: the exporter and control API on the exporter port, the
CPU-stress fault and the pause timers (the readiness probe: `labkit.lab.manager.readiness`).

The local backend's supervisor (`labkit.lab.manager.supervisor`) runs it over child processes, the Docker
backend's agent (`labkit.lab.manager.docker_agent`) over containers. Either way the experiment's process
only asks; the faults' TTLs are held here, so a killed experiment never leaves one behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from labkit.errors import BackendError
from labkit.faults import MAX_FAULT_DURATION_S
from labkit.lab.contract import (
    SHUTDOWN_ROUTE,
    STATUS_ROUTE,
    STRESS_ROUTE,
    ServiceState,
    ServiceStatus,
    service_action_route,
)
from labkit.lab.gpu import GpuReader
from labkit.lab.labdir import LabDir
from labkit.lab.manager.alert_receiver import AlertJournal, alert_routes
from labkit.lab.manager.exporter import LabCollector, ServiceSample
from labkit.lab.manager.log_files import DEFAULT_LOG_FILES, DEFAULT_LOG_MAX_BYTES, RotatingLog
from labkit.lab.manager.readiness import PROBE_TIMEOUT_S
from labkit.lab.processes import LAB_ID_ENV, set_parent_death_signal
from labkit.lab.specs import ServiceSpec

__all__ = [
    "ControlServer",
    "CpuStress",
    "ManagedService",
    "StressUnavailableError",
    "spawn_lab_child",
]

logger = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 0.25

# A stress-ng run ends by its own --timeout; this long after that the supervisor SIGKILLs what is left.
STRESS_GRACE_S = 5.0
STRESS_STOP_WAIT_S = 3.0
_USE_THE_HEADER = "send it as the header Authorization: Bearer <token> (the lab directory's token file)"
# The actions that read a JSON object from the body, with an example body for the error message.
_BODY_EXAMPLES = {"restart": '{"remediation_reason": "p95 above 3 s"}', "pause": '{"duration_s": 10}'}


class ManagedService(Protocol):
    """One service as the control server sees it; actions may be plain calls or coroutines."""

    spec: ServiceSpec
    state: ServiceState
    detail: str
    restarts: int
    started_at: float | None

    @property
    def pid(self) -> int | None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def probe(self, client: httpx.AsyncClient) -> None: ...
    def kill(self) -> Any: ...
    def restart(self) -> Any: ...
    def pause(self, duration_s: float) -> Any: ...
    def unpause(self) -> Any: ...
    def status(self) -> ServiceStatus: ...


async def _maybe_await(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


async def spawn_lab_child(
    argv: list[str], *, env: dict[str, str], log: RotatingLog, header: str
) -> asyncio.subprocess.Process:
    """Start a child of the lab: its own process group (signals reach its children too), its output (stdout
    and stderr) copied line by line into `log` (rotated with its bound) after a note of `header`, killed by
    Linux if the supervisor dies (PR_SET_PDEATHSIG)."""
    parent = os.getpid()
    log.note(header)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env},
        start_new_session=True,
        preexec_fn=lambda: set_parent_death_signal(parent, signal.SIGKILL),
    )
    log.follow(proc.stdout)
    return proc


class StressUnavailableError(BackendError):
    """stress-ng cannot be started (not installed, or a run is already going)."""


class CpuStress:
    """At most one `stress-ng --cpu N` run, a child in its own process group that carries the lab id
    (so `labkit down` sweeps it even without this supervisor). Its TTL is stress-ng's own --timeout
    (whole seconds, rounded up); the supervisor SIGKILLs the group STRESS_GRACE_S after that."""

    def __init__(self, lab: LabDir, lab_id: str, *, log_max_bytes: int, log_files: int) -> None:
        self.lab = lab
        self.lab_id = lab_id
        self._log_max_bytes, self._log_files = log_max_bytes, log_files
        self._log: RotatingLog | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.workers = 0
        self.duration_s = 0.0
        self.timeout_s = 0
        self.started_at = 0.0
        self._kill_timer: asyncio.TimerHandle | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one start or stop at a time

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def status(self) -> dict[str, Any]:
        if not self.running or self.proc is None:
            return {"running": False}
        return {
            "running": True,
            "pid": self.proc.pid,
            "workers": self.workers,
            "duration_s": self.duration_s,
            "timeout_s": self.timeout_s,
            "started_at": self.started_at,
            "ends_by": self.started_at + self.timeout_s,
        }

    async def start(self, workers: int, duration_s: float) -> dict[str, Any]:
        async with self._lock:
            return await self._start(workers, duration_s)

    async def _start(self, workers: int, duration_s: float) -> dict[str, Any]:
        binary = shutil.which("stress-ng")
        if binary is None:
            raise StressUnavailableError(
                "stress-ng is not installed on the lab's machine; install it with "
                "`apt-get install stress-ng` (Debian/Ubuntu) and try again"
            )
        if self.running:
            raise StressUnavailableError(
                f"a CPU stress is already running (pid {self.proc.pid if self.proc else '?'}); "
                f"end it first with DELETE {STRESS_ROUTE} (`labkit chaos halt`)"
            )
        # stress-ng takes whole seconds, and --timeout 0 would mean "run forever".
        timeout_s = max(1, math.ceil(duration_s))
        argv = [binary, "--cpu", str(workers), "--timeout", f"{timeout_s}s", "--quiet"]
        self.lab.logs.mkdir(parents=True, exist_ok=True)
        if self._log is None:
            self._log = RotatingLog(
                self.lab.log_file("stress"), max_bytes=self._log_max_bytes, files=self._log_files
            )
        self.proc = await spawn_lab_child(
            argv, env={LAB_ID_ENV: self.lab_id}, log=self._log, header=" ".join(argv)
        )
        self.workers, self.duration_s, self.timeout_s = workers, duration_s, timeout_s
        self.started_at = time.time()
        self._kill_timer = asyncio.get_running_loop().call_later(
            timeout_s + STRESS_GRACE_S, self._signal, signal.SIGKILL
        )
        self._watch_task = asyncio.create_task(self._watch(self.proc))
        logger.info("cpu stress: %d workers for %gs (pid %d)", workers, duration_s, self.proc.pid)
        return self.status()

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        logger.info("cpu stress (pid %d) ended with %s", proc.pid, code)
        # Workers left behind by a killed stress-ng go with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self.proc is proc:
            self._cancel_timer()

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def _cancel_timer(self) -> None:
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None

    async def stop(self) -> bool:
        """End the running stress now (SIGTERM, then SIGKILL); False when none was running."""
        async with self._lock:
            return await self._stop()

    async def _stop(self) -> bool:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return False
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STRESS_STOP_WAIT_S)
        except TimeoutError:
            self._signal(signal.SIGKILL)
            await proc.wait()
        self._cancel_timer()
        return True


@dataclass(kw_only=True, eq=False, repr=False)
class ControlServer:
    """The exporter and control API of a lab, over services that each backend manages its own way
    (child processes for the local supervisor, containers for the Docker agent).

    Subclasses fill `self.services` (name -> ManagedService) and may override `on_tick` (called every
    health interval) and `extra_statuses` (services shown but not managed, like an external Ollama)."""

    lab_id: str
    token: str
    host: str
    port: int
    lab: LabDir
    # The bound of the log files this server writes (stress-ng's; the supervisor's services' too).
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    log_files: int = DEFAULT_LOG_FILES

    def __post_init__(self) -> None:
        self.started_at = time.time()
        self.stop_event = asyncio.Event()
        self.exporter_state: ServiceState = "starting"
        self.services: dict[str, ManagedService] = {}
        # How often this server itself was restarted (the Docker agent's container RestartCount; the local
        # supervisor is never restarted: it is the lab).
        self.own_restarts = 0
        self.own_container: str | None = None
        self.stress = CpuStress(
            self.lab, self.lab_id, log_max_bytes=self.log_max_bytes, log_files=self.log_files
        )
        self.alerts = AlertJournal(
            self.lab
        )  # Alertmanager's notifications (labkit.lab.manager.alert_receiver)
        self.gpus = GpuReader()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(LabCollector(self.samples, self.gpus))
        # The faults this supervisor holds (and ends at their TTL), under the wrapper's metric name so that
        # `sum by (kind) (llm_faults_active)` is the whole lab's view: paused services and stress-ng runs.
        # kill, restart and unload happen at once and are never active.
        self.faults_active = Gauge(
            "llm_faults_active",
            "Faults the supervisor holds now, by kind (pause: services paused; cpu_stress: 0 or 1); "
            "each ends at its TTL.",
            ["kind"],
            registry=self.registry,
        )
        self.faults_active.labels("pause").set_function(
            lambda: float(sum(s.state == "paused" for s in self.services.values()))
        )
        self.faults_active.labels("cpu_stress").set_function(lambda: 1.0 if self.stress.running else 0.0)
        # Counted where the action happens: a remediation loop asks for a restart with a reason.
        self.remediation_actions = Counter(
            "lab_remediation_actions",
            "Actions automated remediation took through the supervisor.",
            ["action", "target", "reason"],
            registry=self.registry,
        )

    # ---- views -------------------------------------------------------------------------------
    def exporter_url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def extra_statuses(self) -> list[ServiceStatus]:
        """Services shown first in the status but not managed here."""
        return []

    def statuses(self) -> list[ServiceStatus]:
        out = [*self.extra_statuses(), *(svc.status() for svc in self.services.values())]
        out.append(
            ServiceStatus(
                name="exporter",
                state=self.exporter_state,
                pid=os.getpid(),
                restarts=self.own_restarts,
                url=self.exporter_url(),
                container=self.own_container,
            )
        )
        return out

    def samples(self) -> list[ServiceSample]:
        out = [
            ServiceSample(
                name=s.spec.name,
                up=s.state == "ready",
                restarts=s.restarts,
                pid=s.pid,
                started_at=s.started_at if s.pid else None,
            )
            for s in self.services.values()
        ]
        out.append(
            ServiceSample(
                name="exporter",
                up=True,
                restarts=self.own_restarts,
                pid=os.getpid(),
                started_at=self.started_at,
                include_children=False,
            )
        )
        return out

    def write_state(self) -> None:
        services = [s.model_dump() for s in self.statuses()]
        details = {name: svc.detail for name, svc in self.services.items() if svc.detail}
        self.lab.write_state({
            "lab_id": self.lab_id,
            "supervisor_pid": os.getpid(),
            "running": not self.stop_event.is_set(),
            "updated_at": time.time(),
            "services": services,
            "details": details,
        })  # fmt: skip

    # ---- control API -------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), self.token.encode())

    def _refused(self, request: Request) -> Response | None:
        """The answer to a request that may not go on (None: it may). No protected route takes query
        parameters, so any query is refused before the token is checked: a token in a URL ends up in
        shell history, proxy and access logs, and the API never reads one from there."""
        if request.url.query:
            logger.warning(
                "control request refused: %s %s had a query string", request.method, request.url.path
            )
            return _error(
                400,
                "the control API takes no query parameters; never put the lab's token in a URL (logs keep "
                f"URLs); {_USE_THE_HEADER}",
            )
        if not self._authorized(request):
            return _error(401, f"missing or wrong bearer token; {_USE_THE_HEADER}")
        return None

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def _status(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        return JSONResponse([s.model_dump() for s in self.statuses()])

    async def _action(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        name = request.path_params["name"]
        action = request.path_params["action"]
        svc = self.services.get(name)
        if svc is None:
            external = next((s for s in self.extra_statuses() if s.name == name), None)
            if external is not None:  # a model service somebody else runs (--ollama-url, --openai-url)
                return _error(
                    409,
                    f"the {name} service at {external.url} is not run by the lab, so the lab cannot {action} "
                    "it; act on the services it runs: " + ", ".join(sorted(self.services)),
                )
            return _error(404, f"no managed service {name!r}; choose one of {sorted(self.services)}")
        body: dict[str, Any] = {}
        if action in _BODY_EXAMPLES:
            try:
                parsed = json.loads(await request.body() or b"{}")
            except ValueError:
                return _error(422, f"the body must be JSON like {_BODY_EXAMPLES[action]}")
            body = parsed if isinstance(parsed, dict) else {}
        try:
            if action == "kill":
                await _maybe_await(svc.kill())
            elif action == "restart":
                reason = body.get("remediation_reason")
                if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= 64):
                    return _error(422, "remediation_reason must be a short string (1-64 characters)")
                await _maybe_await(svc.restart())
                if reason is not None:
                    self.remediation_actions.labels(action="restart", target=name, reason=reason).inc()
            elif action == "pause":
                duration = body.get("duration_s")
                if (
                    isinstance(duration, bool)
                    or not isinstance(duration, int | float)
                    or not 0 < duration <= MAX_FAULT_DURATION_S
                ):
                    return _error(422, f"duration_s must be a number in (0, {MAX_FAULT_DURATION_S:g}]")
                await _maybe_await(svc.pause(float(duration)))
            elif action == "unpause":
                await _maybe_await(svc.unpause())
            else:
                return _error(404, f"unknown action {action!r}; use kill, restart, pause or unpause")
        except ValueError as exc:
            return _error(409, str(exc))
        logger.info("control: %s %s", action, name)
        return JSONResponse(svc.status().model_dump())

    async def _stress(self, request: Request) -> Response:
        """GET: the running stress; POST {"workers", "duration_s"}: start one; DELETE: end it (idempotent)."""
        if (refused := self._refused(request)) is not None:
            return refused
        if request.method == "GET":
            return JSONResponse(self.stress.status())
        if request.method == "DELETE":
            pid = self.stress.proc.pid if self.stress.running and self.stress.proc else None
            stopped = await self.stress.stop()
            if stopped:
                logger.info("control: stress stopped")
            return JSONResponse({"stopped": stopped, "pid": pid})
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(422, 'the body must be JSON like {"workers": 2, "duration_s": 10}')
        body = body if isinstance(body, dict) else {}
        cpus = os.cpu_count() or 1
        workers, duration = body.get("workers"), body.get("duration_s")
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= cpus:
            return _error(422, f"workers must be an integer in [1, {cpus}] (the CPUs of this machine)")
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not 0 < duration <= MAX_FAULT_DURATION_S
        ):
            return _error(422, f"duration_s must be a number in (0, {MAX_FAULT_DURATION_S:g}]")
        try:
            started = await self.stress.start(workers, float(duration))
        except StressUnavailableError as exc:
            return _error(409, str(exc))
        except OSError as exc:
            return _error(500, f"cannot start stress-ng: {exc}")
        return JSONResponse(started)

    async def _shutdown(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        self.stop_event.set()
        return JSONResponse({"status": "stopping"})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/metrics", self._metrics),
            Route(STATUS_ROUTE, self._status),
            Route(service_action_route(), self._action, methods=["POST"]),
            Route(STRESS_ROUTE, self._stress, methods=["GET", "POST", "DELETE"]),
            Route(SHUTDOWN_ROUTE, self._shutdown, methods=["POST"]),
            *alert_routes(self.alerts, self._authorized),
        ])  # fmt: skip

    # ---- main loop ---------------------------------------------------------------------------
    async def on_start(self) -> None:
        """Called once the control server is listening, before the services start."""

    async def on_tick(self) -> None:
        """Called every health interval, before the readiness probes."""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop_event.set)
        server = _QuietServer(
            uvicorn.Config(
                self.app(),
                host=self.host,
                port=self.port,
                log_level="warning",
                log_config=None,  # its lines go through the manager's own logging (JSON)
                access_log=False,
                lifespan="off",
            )
        )
        server_task = asyncio.create_task(server.serve())
        await self.on_start()
        for svc in self.services.values():
            await svc.start()
        self.write_state()
        # Longer than the wrapper's own /ready timeout (2 s), so that a stalled model shows up as the
        # wrapper's 503 with its reason rather than as the wrapper not answering.
        try:
            # trust_env=False: a proxy from the environment must never sit between the lab and itself.
            async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, trust_env=False) as client:
                while not self.stop_event.is_set():
                    if server.started and self.exporter_state != "ready":
                        self.exporter_state = "ready"
                        self.write_state()
                    if server_task.done():
                        logger.error("the exporter/control server stopped; shutting the lab down")
                        break
                    await self.on_tick()
                    await asyncio.gather(*(svc.probe(client) for svc in self.services.values()))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop_event.wait(), HEALTH_INTERVAL_S)
        finally:
            # Whatever ended the loop, no fault this server holds outlives it.
            self.stop_event.set()
            await self.stress.stop()
            for svc in reversed(list(self.services.values())):
                await svc.stop()
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await server_task
            self.exporter_state = "stopped"
            self.write_state()
            self.gpus.close()


class _QuietServer(uvicorn.Server):
    """uvicorn that leaves SIGTERM/SIGINT to the supervisor's loop, which stops the services first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
