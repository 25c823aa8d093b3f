"""The progress of `labkit run` while papermill runs a scenario's notebook: the run directory's journal
followed from a background thread and said as one updating line on stderr (phase, seconds into it, elapsed of
the planned total, faults applied, requests answered), where papermill's bar would stand still on one cell.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from labkit.report.live_data import RunFollower

__all__ = ["PROGRESS_INTERVAL_S", "progress_text", "run_progress"]

PROGRESS_INTERVAL_S = 0.5

_WAITING = "starting the notebook: its kernel, the lab, the warm-up"


def progress_text(follower: RunFollower, now: float) -> str:
    """The line for the run `follower` reads, at `now` (unix s), after one `poll()`."""
    follower.poll()
    if not follower.events and not any(follower.rows.values()):
        return _WAITING
    return follower.progress(now).line()


@contextmanager
def run_progress(
    run_dir: Path,
    *,
    enabled: bool = True,
    interval_s: float = PROGRESS_INTERVAL_S,
    file: TextIO | None = None,
    clock: Callable[[], float] = time.time,
) -> Iterator[None]:
    """One line on `file` (stderr) that says how the run in `run_dir` stands, redrawn every `interval_s`
    while the block runs and left on the screen with its last state when it ends; nothing unless `enabled`."""
    if not enabled:
        yield
        return
    follower = RunFollower(Path(run_dir))
    line = tqdm(total=None, bar_format="{desc}", file=file or sys.stderr, dynamic_ncols=True, leave=True)
    line.set_description_str(_WAITING)
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(interval_s):
            line.set_description_str(progress_text(follower, clock()))

    thread = threading.Thread(target=follow, name="labkit-run-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        line.set_description_str(progress_text(follower, clock()))
        line.close()
