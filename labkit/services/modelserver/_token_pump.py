"""Runs a blocking engine token stream in a worker thread and hands its pieces to the event loop.

The loop never blocks on the engine; setting `cancel` makes the engine stop before its next token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from labkit.services.modelserver._engine import GenerationResult, TokenStream

__all__ = ["Failed", "Finished", "Piece", "PumpEvent", "TokenPump"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Piece:
    """A piece of generated text; `at_ns` is `time.perf_counter_ns()` when the engine produced it."""

    text: str
    at_ns: int


@dataclass(frozen=True)
class Finished:
    result: GenerationResult
    at_ns: int


@dataclass(frozen=True)
class Failed:
    error: BaseException
    at_ns: int


PumpEvent = Piece | Finished | Failed


class TokenPump:
    """One generation: `start()` it on the loop, iterate `events()`, and `await wait()` for the thread.

    `make_stream` is called in the worker thread (engines may do blocking work to set up).
    The last event is always a `Finished` or a `Failed`.
    """

    def __init__(self, make_stream: Callable[[threading.Event], TokenStream], executor: Executor) -> None:
        self.cancel = threading.Event()
        self._make_stream = make_stream
        self._executor = executor
        self._queue: asyncio.Queue[PumpEvent] = asyncio.Queue()
        self._future: asyncio.Future[None] | None = None
        self.result: GenerationResult | None = None  # set by the worker thread when the engine returns

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._future = loop.run_in_executor(self._executor, self._run, loop)

    async def events(self) -> AsyncIterator[PumpEvent]:
        while True:
            event = await self._queue.get()
            yield event
            if not isinstance(event, Piece):
                return

    async def wait(self) -> None:
        """Until the worker thread has returned (it returns soon after `cancel` is set)."""
        if self._future is not None:
            await asyncio.shield(self._future)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        def put(event: PumpEvent) -> bool:
            try:
                loop.call_soon_threadsafe(self._queue.put_nowait, event)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                self.cancel.set()
                return False
            return True

        try:
            stream = self._make_stream(self.cancel)
            try:
                while True:
                    try:
                        text = next(stream)
                    except StopIteration as stop:
                        self.result = stop.value
                        put(Finished(stop.value, time.perf_counter_ns()))
                        return
                    # Engines see `cancel` themselves and end with done_reason "cancelled"
                    # and their real counts; only a closed loop ends the thread from here.
                    if not put(Piece(text, time.perf_counter_ns())):
                        return
            finally:
                stream.close()
        except Exception as exc:  # reported to the client as {"error": ...}, logged here
            logger.exception("generation failed")
            put(Failed(exc, time.perf_counter_ns()))
