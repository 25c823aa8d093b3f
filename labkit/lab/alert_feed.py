"""Copies the lab's Alertmanager notifications into a run directory's alerts.jsonl while the run goes on:
a background thread asks the lab's manager for the notifications it received since the last ask.

Never in the way of the run it follows: a lab without a receiver (a lab started by an older labkit) or a
poll that fails is logged, not raised.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labkit.errors import LabkitError
from labkit.lab.backend import Backend
from labkit.rundir import RunDirectory, RunFile

__all__ = ["POLL_INTERVAL_S", "AlertFeed"]

logger = logging.getLogger(__name__)

# Alertmanager's own group_wait (1 s) dominates the delay; half a second adds little to it.
POLL_INTERVAL_S = 0.5


class AlertFeed:
    """The notifications of the lab `backend` runs, followed from a starting index on."""

    def __init__(self, backend: Backend, *, interval_s: float = POLL_INTERVAL_S) -> None:
        self.backend = backend
        self.interval_s = interval_s
        self.copied = 0  # notifications written into the run directory so far
        self._next: int | None = None
        self._failing = False

    @contextmanager
    def follow_into(self, run_dir: RunDirectory | Path | str) -> Iterator[AlertFeed]:
        """While the block runs, every notification the lab receives is appended to `run_dir`'s
        alerts.jsonl (created empty at the start); once more when the block ends, for the last ones."""
        target = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(Path(run_dir))
        if not self._start():
            yield self
            return
        target.file(RunFile.ALERTS).touch()
        stop = threading.Event()
        thread = threading.Thread(target=self._follow, args=(target, stop), name="alert-feed", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self._poll(target)

    def _start(self) -> bool:
        """Where the run's notifications begin: the lab's next index now. False when the lab cannot say."""
        try:
            _, self._next = self.backend.alert_notifications(since=0)
        except LabkitError as exc:
            logger.warning(
                "the run gets no alerts.jsonl: the lab's notifications cannot be read (%s); a lab started "
                "before labkit had Alertmanager has none (restart it with `labkit down` and `labkit up`)",
                exc,
            )
            return False
        return True

    def _follow(self, target: RunDirectory, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            self._poll(target)

    def _poll(self, target: RunDirectory) -> None:
        """Append what arrived since the last poll; a failure to read is logged once until a poll works
        again, one to write each time (the lines not written are tried again)."""
        assert self._next is not None
        try:
            found, next_index = self.backend.alert_notifications(since=self._next)
        except (LabkitError, OSError) as exc:
            if not self._failing:
                logger.warning("cannot read the lab's alert notifications (%s); trying again", exc)
                self._failing = True
            return
        if self._failing:
            logger.warning("reading the lab's alert notifications again")
            self._failing = False
        try:
            for notification in found:
                target.append_jsonl(RunFile.ALERTS, notification.model_dump())
                self.copied += 1
                self._next += 1
        except OSError as exc:
            logger.warning("cannot write %s (%s); trying again", target.file(RunFile.ALERTS), exc)
            return
        self._next = next_index
