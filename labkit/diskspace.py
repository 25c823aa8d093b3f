"""Disk space for runs: how much a run needs, the check before one starts, and what a full disk in the middle
of one becomes (`DiskFullError`, naming the path and the space needed, never a traceback).

A run keeps a small reserve file next to its run directory while it writes (`SpaceReserve`: the hidden
`.<run_id>.space-reserve` in the runs folder, so the run directory holds only the run's files): when the disk
fills up, the runner deletes it, which leaves room to record in run.json that the run failed and why, and to
list it in the index. Every file written before stays readable: whole files are written atomically (the old
one stays when the new one cannot be written) and JSON Lines readers skip a torn last line (labkit.rundir).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Any

from labkit.rundir import RunDirectory, RunDirectoryError

__all__ = [
    "RESERVE_BYTES",
    "RUN_FREE_SPACE_BYTES",
    "DiskFullError",
    "SpaceReserve",
    "check_free_space",
    "disk_full_message",
    "free_bytes",
    "human_bytes",
    "is_disk_full",
    "raise_if_disk_full",
    "record_disk_full",
]

# What a run needs free where its run directory goes: a quick chaos run with its report writes 2.5-3 MB
# (notebook, report with inline figures, Prometheus series, requests), a 10-minute run at 4 requests/s about
# 6 MB; 32 MiB leaves room for longer runs and the index.
RUN_FREE_SPACE_BYTES = 32 * 1024 * 1024
# Kept in the run directory while the run writes, released when the disk is full: room for run.json's last
# record and the index line that say what happened.
RESERVE_BYTES = 256 * 1024

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(RunDirectoryError):
    """The disk holding a run (or the folder asked for one) has no room for what the run writes."""


def human_bytes(count: float) -> str:
    """`count` bytes in binary units, e.g. 512 KiB, 31.5 MiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (a folder a run would make)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes free to this user on the filesystem that holds (or would hold) `path`."""
    return shutil.disk_usage(_existing(path)).free


def check_free_space(path: Path, *, needed: int = RUN_FREE_SPACE_BYTES, what: str = "a run") -> None:
    """DiskFullError, before anything starts, when the filesystem of `path` has less than `needed` free."""
    free = free_bytes(path)
    if free < needed:
        raise DiskFullError(
            f"{what} needs about {human_bytes(needed)} free in {path}; its filesystem has "
            f"{human_bytes(free)}: free some space there, or pass --out DIR on a larger disk"
        )


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from or during, is 'no space left' (or a full quota)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_message(run_path: Path, *, needed: int = RUN_FREE_SPACE_BYTES) -> str:
    """What a run that filled its disk says: where, what is left, what it needs, and what to do."""
    free = free_bytes(run_path)
    return (
        f"the disk holding {run_path} filled up during the run ({human_bytes(free)} free now; a run needs "
        f"about {human_bytes(needed)}). The run stopped; every file it wrote before stays readable, and "
        f"`labkit report {run_path}` renders what exists once there is room. Free some space there, or pass "
        "--out DIR on a larger disk"
    )


def raise_if_disk_full(failure: object, path: Path) -> None:
    """OSError(ENOSPC) when `failure` (a notebook's error, a report's problems) says the disk was full: the
    kernel's exceptions reach the runner as text only."""
    if failure and "No space left on device" in str(failure):
        raise OSError(errno.ENOSPC, str(failure), str(path))


def record_disk_full(run_dir: RunDirectory, record: dict[str, Any], reserve: SpaceReserve) -> DiskFullError:
    """A run whose disk filled up: its reserve released for room, run.json says it failed and why (when even
    that cannot be written, the previous run.json stays), and the error to raise."""
    reserve.release()
    message = disk_full_message(run_dir.path)
    record = {**record, "status": "failed", "error": {"ename": "DiskFullError", "evalue": message}}
    with contextlib.suppress(OSError):
        run_dir.write_run_record(record)
    return DiskFullError(message)


class SpaceReserve:
    """A file of RESERVE_BYTES beside `run_path` (same filesystem), claimed when a run starts and released
    when it ends or when the disk fills up (its room then holds the run's last records). Claiming never fails
    a run: on a disk too full for the reserve, there is no reserve."""

    def __init__(self, run_path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = Path(run_path).parent / f".{Path(run_path).name}.space-reserve"
        self.size = size
        self.held = False

    def claim(self) -> SpaceReserve:
        try:
            with open(self.path, "wb") as fh:
                os.posix_fallocate(fh.fileno(), 0, self.size)
            self.held = True
        except OSError:
            self.path.unlink(missing_ok=True)
        return self

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        self.held = False
