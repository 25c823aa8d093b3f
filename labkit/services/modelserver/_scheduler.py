"""Generation slots (NUM_PARALLEL) and the bounded queue in front of them (MAX_QUEUE), as Ollama has.

A request that finds every slot busy and max_queue requests already waiting is refused with 503.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from labkit.services.modelserver._api_errors import QueueFullError
from labkit.services.modelserver._metrics import ModelServerMetrics

__all__ = ["SlotScheduler"]

logger = logging.getLogger(__name__)


class SlotScheduler:
    """A FIFO semaphore of `num_parallel` slots with at most `max_queue` waiters.

    Lives on the event loop; only coroutines of that loop may call it. The queue-depth and
    running gauges always equal the waiters and the slots held.
    """

    def __init__(self, *, num_parallel: int, max_queue: int, metrics: ModelServerMetrics) -> None:
        self._capacity = num_parallel
        self._free = num_parallel
        self._max_queue = max_queue
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._metrics = metrics

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def running(self) -> int:
        return self._capacity - self._free

    async def acquire(self) -> None:
        """Take a slot, waiting in line for one; QueueFullError when the line is full."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            self._publish()
            return
        if len(self._waiters) >= self._max_queue:
            self._metrics.rejected_requests.labels(reason="queue_full").inc()
            raise QueueFullError()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._publish()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as the waiter gave up: pass it on
            else:
                if waiter in self._waiters:  # release() may have skipped it already
                    self._waiters.remove(waiter)
                self._publish()
            raise

    def release(self) -> None:
        """Give a slot back: to the longest waiter if there is one, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; free stays as it is
                self._publish()
                return
        self._free = min(self._capacity, self._free + 1)
        self._publish()

    def _publish(self) -> None:
        self._metrics.queue_depth.set(len(self._waiters))
        self._metrics.requests_running.set(self.running)
