"""The local backend: the lab's services as child processes of a supervisor daemon on this machine.

`up` checks everything it can before starting anything, and tears down whatever it started when a
service does not become ready; `down` leaves no process behind, even after the supervisor was killed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from labkit.backends.base import ServiceName, ServiceStatus
from labkit.backends.lab import LabBackend, check_port_free
from labkit.backends.processes import LAB_ID_ENV, find_lab_processes, stop_processes, wait_until_gone
from labkit.config import LabConfig
from labkit.errors import (
    ConfigError,
)

__all__ = ["LocalBackend", "check_port_free"]

logger = logging.getLogger(__name__)

SUPERVISOR_STOP_TIMEOUT_S = 30.0


class LocalBackend(LabBackend):
    """Runs the lab on this machine. All state lives in `config.lab_dir`."""

    name = "local"
    manager_name = "supervisor"

    @classmethod
    def attach(cls, lab_dir: Path) -> LocalBackend:
        """The lab in `lab_dir`, for status/down/logs: needs no valid settings beyond the directory
        (a bad LABKIT_MODEL_PORT must not keep `labkit down` from stopping a running lab)."""
        return cls(LabConfig.model_construct(lab_dir=lab_dir))

    def _supervisor(self) -> psutil.Process | None:
        """The live supervisor of this lab directory, verified by its lab id (PIDs get reused)."""
        saved = self._saved()
        state = self.lab.read_state()
        if saved is None or state is None or not state.get("supervisor_pid"):
            return None
        try:
            proc = psutil.Process(int(state["supervisor_pid"]))
            if proc.environ().get(LAB_ID_ENV) == saved["lab_id"] and proc.status() != psutil.STATUS_ZOMBIE:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        return None

    def is_running(self) -> bool:
        return self._supervisor() is not None

    def log_source(self, service: str) -> str:
        return str(self.lab.log_file("supervisor" if service == "exporter" else service))

    def logs(self, service: ServiceName, lines: int = 100) -> str:
        name = "supervisor" if service == "exporter" else service
        return self.lab.tail_log(name, lines)

    def preflight(self) -> None:
        """Everything that can be checked before a single process starts."""
        cfg = self.config
        self._refuse_if_running()
        if shutil.which(cfg.prometheus_bin) is None:
            raise ConfigError(
                f"the Prometheus binary {cfg.prometheus_bin!r} was not found; install it with "
                "`make setup` (Debian: `apt-get install prometheus`) or pass --prometheus-bin PATH"
            )
        if cfg.engine == "llama":
            cfg.resolved_model_path()
        if cfg.engine == "ollama" and cfg.supervised_model:
            cfg.ollama_binary()
        cfg.wrapper_auth_headers()  # an unreadable or empty API key file fails here, before any process
        self._check_ports_free()
        if cfg.engine == "llama":
            import importlib.util

            if importlib.util.find_spec("llama_cpp") is None:
                raise ConfigError(
                    "engine 'llama' needs llama-cpp-python; run `make setup` or use --engine sim"
                )

    def up(
        self, *, progress: Callable[[str], None] | None = None, wait_scraped: bool = True
    ) -> list[ServiceStatus]:
        """Start every service and return once all are ready — with `wait_scraped` (the default) also once
        Prometheus has scraped each of them (see `wait_scraped`); on failure nothing is left running."""
        say = progress or (lambda _msg: None)
        with self._exclusive("up"):
            return self._up(say, wait_scraped)

    def _up(self, say: Callable[[str], None], wait_scraped: bool) -> list[ServiceStatus]:
        cfg = self.config
        self._refuse_if_running()
        self._sweep_stale()
        self.preflight()
        lab_id = self._prepare_lab_dir()
        say(f"starting the lab in {self.lab.root} (engine {cfg.engine})")
        with open(self.lab.log_file("supervisor"), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "labkit.backends.supervisor", str(self.lab.root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, LAB_ID_ENV: lab_id},
                start_new_session=True,  # outlives this command; `labkit down` stops it
            )  # fmt: skip
        try:
            return self._wait_ready(say, lambda: self._supervisor_gone(proc), wait_scraped=wait_scraped)
        except BaseException:
            self._teardown(lab_id)
            raise

    def _supervisor_gone(self, proc: subprocess.Popen[bytes]) -> str | None:
        if proc.poll() is None:
            return None
        return (
            f"the lab supervisor exited with code {proc.returncode} during start-up.\n"
            f"{self.lab.tail_log('supervisor')}"
        )

    def down(self) -> int:
        """Stop the lab; returns how many processes were stopped (0: nothing was running)."""
        saved = self._saved()
        if saved is None:
            return 0
        with self._exclusive("down"):
            return self._teardown(saved["lab_id"])

    def _teardown(self, lab_id: str) -> int:
        stopped = 0
        tree: set[int] = set()
        supervisor = self._supervisor()
        if supervisor is not None:
            # The supervisor stops its services gracefully, then exits.
            tree = {supervisor.pid, *(c.pid for c in supervisor.children(recursive=True))}
            supervisor.resume()  # a SIGSTOPped supervisor would sit on SIGTERM until the timeout
            supervisor.terminate()
            if not wait_until_gone([supervisor.pid], SUPERVISOR_STOP_TIMEOUT_S):
                logger.warning(
                    "the supervisor did not stop within %.0fs; killing the lab's processes",
                    SUPERVISOR_STOP_TIMEOUT_S,
                )
            stopped += len(tree)
        # Whatever is left (a killed supervisor's services, their children) is found by its lab id.
        leftovers = find_lab_processes(lab_id)
        stop_processes(leftovers)
        stopped += len({p.pid for p in leftovers} - tree)
        self._mark_stopped()
        return stopped

    def _sweep_stale(self) -> None:
        """A previous lab in this directory whose supervisor died: stop its leftovers first."""
        saved = self._saved()
        if saved is None or self.is_running():
            return
        leftovers = find_lab_processes(saved["lab_id"])
        if leftovers:
            logger.warning("stopping %d processes left by a lab whose supervisor died", len(leftovers))
            stop_processes(leftovers)
