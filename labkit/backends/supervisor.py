"""The local backend's supervisor: runs each service as a child in its own process group,
restarts it when it dies (counting every restart once), hosts the exporter and a control API.

Run as `python -m labkit.backends.supervisor LAB_DIR`; `labkit up` starts it, `labkit down` stops it.
It also runs the chaos `cpu_stress` fault (stress-ng), so that the fault's TTL lives here, not in the
experiment's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from labkit.backends.base import ServiceState, ServiceStatus
from labkit.backends.labdir import LabDir
from labkit.backends.processes import LAB_ID_ENV, set_parent_death_signal
from labkit.backends.services import ServiceSpec, service_specs
from labkit.config import LabConfig
from labkit.exporter import LabCollector, ServiceSample
from labkit.gpu import GpuReader

__all__ = ["Supervisor", "main"]

logger = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 0.25
STOP_GRACE_S = 8.0
# Give up on a service that exits this many times in a row before it was ever ready.
MAX_START_FAILURES = 3
MAX_BACKOFF_S = 5.0
# A process that ran at least this long before dying restarts at once; a crash loop backs off.
STABLE_RUN_S = 10.0
MAX_PAUSE_S = 3600.0
PROBE_TIMEOUT_S = 3.0
# A stress-ng run ends by its own --timeout; this long after that the supervisor SIGKILLs what is left.
STRESS_GRACE_S = 5.0
STRESS_STOP_WAIT_S = 3.0


async def spawn_lab_child(
    argv: list[str], *, env: dict[str, str], log_path: Path, header: str
) -> asyncio.subprocess.Process:
    """Start a child of the lab: its own process group (signals reach its children too), output appended
    to `log_path` after a header line, killed by Linux if the supervisor dies (PR_SET_PDEATHSIG)."""
    parent = os.getpid()
    with open(log_path, "ab") as log:
        log.write(f"--- labkit: {header} at {time.ctime()}\n".encode())
        log.flush()
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, **env},
            start_new_session=True,
            preexec_fn=lambda: set_parent_death_signal(parent, signal.SIGKILL),
        )


class SupervisedService:
    """One child service, its process and its restart policy."""

    def __init__(self, spec: ServiceSpec, lab: LabDir, lab_id: str, on_change: Any) -> None:
        self.spec = spec
        self.lab = lab
        self.lab_id = lab_id
        self.on_change = on_change
        self.proc: asyncio.subprocess.Process | None = None
        self.state: ServiceState = "stopped"
        self.restarts = 0
        self.started_at: float | None = None
        self.ever_ready = False
        self.start_failures = 0
        self.stopping = False
        self.detail = ""
        self.last_exit: int | None = None
        self._backoff_s = 0.0
        self._pause_timer: asyncio.TimerHandle | None = None
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def _set_state(self, state: ServiceState, detail: str = "") -> None:
        if state != self.state or detail != self.detail:
            self.state, self.detail = state, detail
            self.on_change()

    async def start(self) -> None:
        env = {**self.spec.env, LAB_ID_ENV: self.lab_id, "PYTHONUNBUFFERED": "1"}
        try:
            self.proc = await spawn_lab_child(
                self.spec.argv,
                env=env,
                log_path=self.lab.log_file(self.spec.name),
                header=f"starting {self.spec.name}",
            )
        except OSError as exc:
            self._set_state("failed", f"cannot start {self.spec.argv[0]}: {exc}")
            return
        self.started_at = time.time()
        self._set_state("starting")
        self._watch_task = asyncio.create_task(self._watch(self.proc))

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Wait for the process to end; apply the restart policy unless the lab is stopping."""
        code = await proc.wait()
        self.last_exit = code
        ran_for = time.time() - (self.started_at or time.time())
        self._cancel_pause_timer()
        # Leftover children of the dead process (same group) go with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self.stopping:
            self._set_state("stopped")
            return
        logger.warning("service %s exited with %s after %.1fs", self.spec.name, code, ran_for)
        if not self.ever_ready:
            self.start_failures += 1
            if self.start_failures >= MAX_START_FAILURES:
                self._set_state(
                    "failed",
                    f"exited with code {code} {self.start_failures} times before "
                    f"becoming ready; see {self.lab.log_file(self.spec.name)}",
                )
                return
        if ran_for >= STABLE_RUN_S:
            self._backoff_s = 0.0
        else:
            self._backoff_s = min(MAX_BACKOFF_S, max(0.2, self._backoff_s * 2))
        self._set_state("restarting", f"exited with code {code}")
        if self._backoff_s:
            await asyncio.sleep(self._backoff_s)
        if self.stopping:
            self._set_state("stopped")
            return
        self.restarts += 1
        await self.start()

    def signal_group(self, sig: int) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the main process, as a crash would; the restart policy brings it back."""
        pid = self.pid
        if pid is None:
            raise ValueError(f"{self.spec.name} has no running process")
        os.kill(pid, signal.SIGKILL)
        # A paused group would keep its other members stopped.
        self.signal_group(signal.SIGCONT)

    def restart(self) -> None:
        """Graceful restart: SIGTERM; the watcher counts it and starts the service again."""
        if not self.signal_group(signal.SIGCONT) or not self.signal_group(signal.SIGTERM):
            raise ValueError(f"{self.spec.name} has no running process")

    def pause(self, duration_s: float) -> None:
        """SIGSTOP the service's group; the supervisor itself resumes it after `duration_s` (the TTL)."""
        if not self.signal_group(signal.SIGSTOP):
            raise ValueError(f"{self.spec.name} has no running process")
        self._cancel_pause_timer()
        self._pause_timer = asyncio.get_running_loop().call_later(duration_s, self.unpause)
        self._set_state("paused", f"paused for {duration_s:g}s")

    def unpause(self) -> None:
        self._cancel_pause_timer()
        self.signal_group(signal.SIGCONT)
        if self.state == "paused":
            self._set_state("ready" if self.ever_ready else "starting")

    def _cancel_pause_timer(self) -> None:
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None

    async def stop(self) -> None:
        self.stopping = True
        self._cancel_pause_timer()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            self._set_state("stopped")
            return
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            logger.warning("%s ignored SIGTERM for %.0fs; killing it", self.spec.name, STOP_GRACE_S)
            self.signal_group(signal.SIGKILL)
            await proc.wait()
        if self._watch_task is not None:
            await self._watch_task
        self._set_state("stopped")

    async def probe(self, client: httpx.AsyncClient) -> None:
        """One readiness check; updates the state."""
        if self.state not in ("starting", "ready", "unready") or self.pid is None:
            return
        ok, why = await _check_ready(client, self.spec)
        if ok:
            self.ever_ready = True
            self.start_failures = 0
            self._set_state("ready")
        elif self.state == "ready":
            self._set_state("unready", why)
        elif self.state == "starting" and why != self.detail:
            self._set_state("starting", why)

    def status(self) -> ServiceStatus:
        return ServiceStatus(
            name=self.spec.name, state=self.state, pid=self.pid, restarts=self.restarts, url=self.spec.url
        )


async def _check_ready(client: httpx.AsyncClient, spec: ServiceSpec) -> tuple[bool, str]:
    try:
        response = await client.get(spec.url + spec.ready_path)
    except httpx.HTTPError as exc:
        return False, f"not answering yet ({type(exc).__name__})"
    if response.status_code != 200:
        try:
            reason = response.json().get("error")
        except (ValueError, AttributeError):
            reason = None
        return False, f"{spec.ready_path} answered {response.status_code}" + (f": {reason}" if reason else "")
    if spec.model_name is not None:
        try:
            names = {m.get("name") for m in response.json().get("models", [])}
            names |= {m.get("model") for m in response.json().get("models", [])}
        except (ValueError, AttributeError):
            return False, "/api/tags did not return a model list"
        wanted = spec.model_name
        if wanted not in names and f"{wanted}:latest" not in names:
            return False, (
                f"model {wanted!r} is not served there; for a real Ollama run "
                f"`ollama pull {wanted}` or pass --model-name"
            )
    return True, ""


class StressUnavailableError(Exception):
    """stress-ng cannot be started (not installed, or a run is already going)."""


class CpuStress:
    """At most one `stress-ng --cpu N` run, a child in its own process group that carries the lab id
    (so `labkit down` sweeps it even without this supervisor). Its TTL is stress-ng's own --timeout
    (whole seconds, rounded up); the supervisor SIGKILLs the group STRESS_GRACE_S after that."""

    def __init__(self, lab: LabDir, lab_id: str) -> None:
        self.lab = lab
        self.lab_id = lab_id
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
                "end it first with DELETE /v1/stress (`labkit chaos halt`)"
            )
        # stress-ng takes whole seconds, and --timeout 0 would mean "run forever".
        timeout_s = max(1, math.ceil(duration_s))
        argv = [binary, "--cpu", str(workers), "--timeout", f"{timeout_s}s", "--quiet"]
        self.lab.logs.mkdir(parents=True, exist_ok=True)
        self.proc = await spawn_lab_child(
            argv, env={LAB_ID_ENV: self.lab_id}, log_path=self.lab.log_file("stress"), header=" ".join(argv)
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


class Supervisor:
    """Owns every service of one local lab until it is told to stop."""

    def __init__(self, lab: LabDir) -> None:
        self.lab = lab
        saved = json.loads(lab.config_file.read_text(encoding="utf-8"))
        self.lab_id: str = saved["lab_id"]
        self.config = LabConfig(**saved["config"])
        self.token = lab.read_token()
        self.started_at = time.time()
        self.stop_event = asyncio.Event()
        self.exporter_state: ServiceState = "starting"
        self.services = {
            spec.name: SupervisedService(spec, lab, self.lab_id, self.write_state)
            for spec in service_specs(self.config, lab)
        }
        self.stress = CpuStress(lab, self.lab_id)
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
        return f"http://{self.config.host}:{self.config.exporter_port}/metrics"

    def statuses(self) -> list[ServiceStatus]:
        out = [svc.status() for svc in self.services.values()]
        if not self.config.supervised_model:
            out.insert(
                0,
                ServiceStatus(
                    name="model", state="external", pid=None, restarts=None, url=self.config.model_url
                ),
            )
        out.append(
            ServiceStatus(
                name="exporter",
                state=self.exporter_state,
                pid=os.getpid(),
                restarts=0,
                url=self.exporter_url(),
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
                restarts=0,
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

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def _status(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token (see the lab directory's token file)")
        return JSONResponse([s.model_dump() for s in self.statuses()])

    async def _action(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token (see the lab directory's token file)")
        name = request.path_params["name"]
        action = request.path_params["action"]
        svc = self.services.get(name)
        if svc is None:
            return _error(404, f"no supervised service {name!r}; choose one of {sorted(self.services)}")
        try:
            if action == "kill":
                svc.kill()
            elif action == "restart":
                try:
                    body = json.loads(await request.body() or b"{}")
                except ValueError:
                    return _error(422, 'the body must be JSON like {"remediation_reason": "p95 above 3 s"}')
                reason = body.get("remediation_reason") if isinstance(body, dict) else None
                if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= 64):
                    return _error(422, "remediation_reason must be a short string (1-64 characters)")
                svc.restart()
                if reason is not None:
                    self.remediation_actions.labels(action="restart", target=name, reason=reason).inc()
            elif action == "pause":
                try:
                    body = json.loads(await request.body() or b"{}")
                except ValueError:
                    return _error(422, 'the body must be JSON like {"duration_s": 10}')
                duration = body.get("duration_s") if isinstance(body, dict) else None
                if (
                    isinstance(duration, bool)
                    or not isinstance(duration, int | float)
                    or not 0 < duration <= MAX_PAUSE_S
                ):
                    return _error(422, f"duration_s must be a number in (0, {MAX_PAUSE_S:g}]")
                svc.pause(float(duration))
            elif action == "unpause":
                svc.unpause()
            else:
                return _error(404, f"unknown action {action!r}; use kill, restart, pause or unpause")
        except ValueError as exc:
            return _error(409, str(exc))
        logger.info("control: %s %s", action, name)
        return JSONResponse(svc.status().model_dump())

    async def _stress(self, request: Request) -> Response:
        """GET: the running stress; POST {"workers", "duration_s"}: start one; DELETE: end it (idempotent)."""
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token (see the lab directory's token file)")
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
            or not 0 < duration <= MAX_PAUSE_S
        ):
            return _error(422, f"duration_s must be a number in (0, {MAX_PAUSE_S:g}]")
        try:
            started = await self.stress.start(workers, float(duration))
        except StressUnavailableError as exc:
            return _error(409, str(exc))
        except OSError as exc:
            return _error(500, f"cannot start stress-ng: {exc}")
        return JSONResponse(started)

    async def _shutdown(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token (see the lab directory's token file)")
        self.stop_event.set()
        return JSONResponse({"status": "stopping"})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/metrics", self._metrics),
            Route("/v1/status", self._status),
            Route("/v1/services/{name}/{action}", self._action, methods=["POST"]),
            Route("/v1/stress", self._stress, methods=["GET", "POST", "DELETE"]),
            Route("/v1/shutdown", self._shutdown, methods=["POST"]),
        ])  # fmt: skip

    # ---- main loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop_event.set)
        server = _QuietServer(
            uvicorn.Config(
                self.app(),
                host=self.config.host,
                port=self.config.exporter_port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        server_task = asyncio.create_task(server.serve())
        for svc in self.services.values():
            await svc.start()
        self.write_state()
        # Longer than the wrapper's own /ready timeout (2 s), so that a stalled model shows up as the
        # wrapper's 503 with its reason rather than as the wrapper not answering.
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
            while not self.stop_event.is_set():
                if server.started and self.exporter_state != "ready":
                    self.exporter_state = "ready"
                    self.write_state()
                if server_task.done():
                    logger.error("the exporter/control server stopped; shutting the lab down")
                    break
                await asyncio.gather(*(svc.probe(client) for svc in self.services.values()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), HEALTH_INTERVAL_S)
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m labkit.backends.supervisor LAB_DIR\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One INFO line per readiness probe (4 a second) would drown the supervisor's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    supervisor = Supervisor(LabDir(Path(args[0])))
    asyncio.run(supervisor.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
