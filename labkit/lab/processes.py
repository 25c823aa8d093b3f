"""Finding and stopping the processes that belong to one lab, and nothing else.

Every process the lab starts carries `LABKIT_LAB_ID=<id>` in its environment (inherited by its
children), so the lab can be swept even after its supervisor was SIGKILLed and PIDs were reused.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time

import psutil

__all__ = [
    "LAB_ID_ENV",
    "find_lab_processes",
    "set_parent_death_signal",
    "stop_processes",
    "wait_until_gone",
]

logger = logging.getLogger(__name__)

LAB_ID_ENV = "LABKIT_LAB_ID"
_PR_SET_PDEATHSIG = 1


def find_lab_processes(lab_id: str, *, exclude_pid: int | None = None) -> list[psutil.Process]:
    """Every live process whose environment marks it as part of lab `lab_id`."""
    marker = lab_id
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid in (os.getpid(), exclude_pid):
            continue
        try:
            if proc.environ().get(LAB_ID_ENV) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_processes(procs: list[psutil.Process], *, grace_s: float = 5.0) -> int:
    """SIGTERM (and SIGCONT, in case one is paused), then SIGKILL whatever is left after `grace_s`."""
    if not procs:
        return 0
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        logger.warning("process %s did not stop on SIGTERM within %.1fs; killing it", proc.pid, grace_s)
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=grace_s)
    return len(procs)


def set_parent_death_signal(expected_parent: int, sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (used between fork and exec).

    A service without its supervisor would run unsupervised with uncounted restarts; it ends instead.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    # The parent may have died between fork and prctl; then nobody will ever signal us.
    if os.getppid() != expected_parent:
        os.kill(os.getpid(), sig)


def wait_until_gone(pids: list[int], timeout_s: float) -> bool:
    """True once none of `pids` is alive (zombies count as gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and not _is_zombie(p)]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
