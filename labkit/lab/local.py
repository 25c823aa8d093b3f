"""The local backend: the lab's services as child processes of a supervisor daemon on this machine.

`up` checks everything it can before starting anything, and tears down whatever it started when a
service does not become ready; `down` leaves no process behind, even after the supervisor was killed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import psutil

from labkit.errors import ConfigError
from labkit.lab.backend import Backend
from labkit.lab.contract import ServiceName
from labkit.lab.processes import LAB_ID_ENV, find_lab_processes, stop_processes, wait_until_gone

__all__ = ["LocalBackend"]

logger = logging.getLogger(__name__)

SUPERVISOR_STOP_TIMEOUT_S = 30.0
# What `python -m llama_cpp.server` imports beyond llama-cpp-python itself: its `server` extra.
_LLAMACPP_SERVER_MODULES = ("llama_cpp", "sse_starlette", "starlette_context", "pydantic_settings", "uvicorn")


class LocalBackend(Backend):
    """Runs the lab on this machine: a supervisor daemon and its child processes. All state lives in
    `config.lab_dir`."""

    name = "local"
    manager_name = "supervisor"

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

    def log_lines(self, service: ServiceName) -> Iterator[str]:
        return self.lab.read_log_lines("supervisor" if service == "exporter" else service)

    def _preflight(self) -> None:
        cfg = self.config
        cfg.prometheus_binary()
        cfg.alertmanager_binary()
        if cfg.engine in ("llama", "llamacpp-server"):
            cfg.resolved_model_path()
        if cfg.engine == "ollama" and cfg.supervised_model:
            cfg.ollama_binary()
        if cfg.engine == "llama" and importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError("engine 'llama' needs llama-cpp-python; run `make setup` or use --engine sim")
        if cfg.engine == "llamacpp-server":
            missing = [m for m in _LLAMACPP_SERVER_MODULES if importlib.util.find_spec(m) is None]
            if missing:
                raise ConfigError(
                    f"engine 'llamacpp-server' needs llama-cpp-python's server extra ({', '.join(missing)} "
                    "missing); run `make setup` (or `pip install 'llama-cpp-python[server]==0.3.36'`), or "
                    "use --engine llama"
                )

    def _start(self, lab_id: str, say: Callable[[str], None]) -> Callable[[], str | None]:
        with open(self.lab.log_file("supervisor"), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "labkit.lab.manager.supervisor", str(self.lab.root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, LAB_ID_ENV: lab_id},
                start_new_session=True,  # outlives this command; `labkit down` stops it
            )  # fmt: skip
        return lambda: self._supervisor_gone(proc)

    def _supervisor_gone(self, proc: subprocess.Popen[bytes]) -> str | None:
        if proc.poll() is None:
            return None
        return (
            f"the lab supervisor exited with code {proc.returncode} during start-up.\n"
            f"{self.lab.tail_log('supervisor')}"
        )

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
        if leftovers and supervisor is None:
            logger.warning("stopping %d processes left by a lab whose supervisor died", len(leftovers))
        stop_processes(leftovers)
        stopped += len({p.pid for p in leftovers} - tree)
        return stopped
