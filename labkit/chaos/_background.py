"""The experiment's load in the background: a load run on an event loop of its own in a thread, so that the
fault timeline and signal handling stay in the calling thread; and SIGINT/SIGTERM turned into a stop request.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from labkit.errors import LabkitError
from labkit.measure.load import LoadResult, LoadSpec, run_load_async
from labkit.rundir import RunDirectory

__all__ = ["BackgroundLoad", "ExperimentInterrupted", "signals_stop"]

_LOAD_JOIN_TIMEOUT_S = 15.0


class ExperimentInterrupted(LabkitError):
    """A signal (SIGINT, SIGTERM) asked the experiment to stop; it ends every fault and is `aborted`."""


class BackgroundLoad:
    """A load run on an event loop of its own in a thread, so that the timeline (and signal handling)
    stays in the calling thread; `cancel` ends it with every request recorded."""

    def __init__(self, spec: LoadSpec, run_dir: RunDirectory) -> None:
        self.loop = asyncio.new_event_loop()
        self.task = self.loop.create_task(run_load_async(spec, run_dir, progress=False))
        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="labkit-chaos-load", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.loop.run_until_complete(self.task)
        except BaseException as exc:  # handed to the caller through .error
            self.error = exc
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def start(self) -> BackgroundLoad:
        self.thread.start()
        return self

    def wait(self, stop: threading.Event) -> None:
        """Until the load ends; raises ExperimentInterrupted when `stop` is set first."""
        while self.thread.is_alive():
            if stop.is_set():
                raise ExperimentInterrupted
            self.thread.join(0.1)

    def cancel(self) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed in between: it has ended anyway
                self.loop.call_soon_threadsafe(self.task.cancel)
            self.thread.join(_LOAD_JOIN_TIMEOUT_S)

    def outcome(self) -> LoadResult:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@contextlib.contextmanager
def signals_stop(stop: threading.Event, caught: list[int]) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` instead of unwinding mid-call; only the main thread can install handlers
    (elsewhere, e.g. a notebook's worker thread, the defaults stay)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
