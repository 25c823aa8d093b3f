"""The local backend's supervisor: runs each service as a child in its own process group,
restarts it when it dies (counting every restart once), hosts the exporter and a control API.

Run as `python -m labkit.lab.manager.supervisor LAB_DIR`; `labkit up` starts it, `labkit down` stops it.
It also runs the chaos `cpu_stress` fault (stress-ng), so that the fault's TTL lives here, not in the
experiment's process. The exporter, control API and stress-ng live in `labkit.lab.manager.control`,
shared with the Docker backend's agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from labkit.config import LabConfig
from labkit.lab.contract import ServiceState, ServiceStatus
from labkit.lab.labdir import LabDir
from labkit.lab.manager.control import ControlServer, spawn_lab_child
from labkit.lab.manager.log_files import ManagerLogHandler, RotatingLog
from labkit.lab.manager.readiness import ProbedState
from labkit.lab.processes import LAB_ID_ENV
from labkit.lab.specs import ServiceSpec, service_specs
from labkit.service_logs import configure_service_logging

__all__ = ["Supervisor", "main"]

logger = logging.getLogger(__name__)

STOP_GRACE_S = 8.0
# Give up on a service that exits this many times in a row before it was ever ready.
MAX_START_FAILURES = 3
MAX_BACKOFF_S = 5.0
# A process that ran at least this long before dying restarts at once; a crash loop backs off.
STABLE_RUN_S = 10.0


class SupervisedService(ProbedState):
    """One child service, its process and its restart policy."""

    def __init__(self, spec: ServiceSpec, lab: LabDir, lab_id: str, on_change: Any, log: RotatingLog) -> None:
        self.spec = spec
        self.lab = lab
        self.log = log  # one file across restarts, rotated with the lab's bound
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
                self.spec.argv, env=env, log=self.log, header=f"starting {self.spec.name}"
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

    def status(self) -> ServiceStatus:
        return ServiceStatus(
            name=self.spec.name, state=self.state, pid=self.pid, restarts=self.restarts, url=self.spec.url
        )


class Supervisor(ControlServer):
    """Owns every service of one local lab until it is told to stop."""

    def __init__(self, lab: LabDir) -> None:
        saved = json.loads(lab.config_file.read_text(encoding="utf-8"))
        self.config = LabConfig(**saved["config"])
        super().__init__(
            lab_id=saved["lab_id"],
            token=lab.read_token(),
            host=self.config.host,
            port=self.config.exporter_port,
            lab=lab,
            log_max_bytes=self.config.log_max_bytes,
            log_files=self.config.log_files,
        )
        self.services = {
            spec.name: SupervisedService(spec, lab, self.lab_id, self.write_state, self._log_of(spec.name))
            for spec in service_specs(self.config, lab)
        }

    def _log_of(self, name: str) -> RotatingLog:
        return RotatingLog(
            self.lab.log_file(name), max_bytes=self.config.log_max_bytes, files=self.config.log_files
        )

    def extra_statuses(self) -> list[ServiceStatus]:
        if self.config.supervised_model:
            return []
        return [
            ServiceStatus(name="model", state="external", pid=None, restarts=None, url=self.config.model_url)
        ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m labkit.lab.manager.supervisor LAB_DIR\n")
        return 2
    supervisor = Supervisor(LabDir(Path(args[0])))
    config = supervisor.config
    # JSON lines in logs/supervisor.log, rotated with the services' bound (other libraries' from WARNING:
    # httpx's line per readiness probe, 4 a second, would drown the supervisor's own).
    configure_service_logging(
        "supervisor",
        handler=ManagerLogHandler(
            supervisor.lab.log_file("supervisor"), max_bytes=config.log_max_bytes, files=config.log_files
        ),
    )
    asyncio.run(supervisor.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
