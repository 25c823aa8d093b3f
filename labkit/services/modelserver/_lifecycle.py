"""When the model is in memory: load on demand, unload when keep_alive runs out after the last request.

Mirrors Ollama: each request's keep_alive (or the default) applies once no request is using the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from labkit.services.modelserver._engine import Engine
from labkit.services.modelserver._metrics import ModelServerMetrics

__all__ = ["FOREVER", "ModelLifecycle"]

logger = logging.getLogger(__name__)

# What /api/ps shows for keep_alive -1, like Ollama (now + the largest Go duration, ~292 years).
FOREVER = timedelta(microseconds=(2**63 - 1) // 1000)


class ModelLifecycle:
    """Loads and unloads one engine on the event loop; engine calls run in worker threads.

    `acquire` before a generation with that request's keep_alive (loads if needed, returns the
    load time in ns) and `release` after it. As in Ollama, the keep_alive of the latest request
    to start (or of an unload request) applies once no request uses the model any more.
    """

    def __init__(
        self, *, engine: Engine, metrics: ModelServerMetrics, default_keep_alive: float | None
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._default_keep_alive = default_keep_alive
        self._keep_alive = default_keep_alive
        self._lock = asyncio.Lock()
        self._active = 0
        self._epoch = 0
        self._timer: asyncio.Task[None] | None = None
        self._expires_at: datetime | None = None
        # What /api/ps reports. It changes on the event loop together with the gauge and the unload
        # counter, never from the worker thread, so a client that sees the model gone also sees why.
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def active(self) -> int:
        return self._active

    def expires_at(self) -> datetime:
        """When the model will be unloaded if nothing uses it again (far future for 'forever')."""
        if self._active == 0 and self._expires_at is not None:
            return self._expires_at
        return _deadline(self._keep_alive)

    @property
    def default_keep_alive(self) -> float | None:
        """The server's keep_alive in seconds (None: forever), for requests that set none."""
        return self._default_keep_alive

    async def acquire(self, keep_alive: float | None) -> int:
        """Mark the model in use, loading it first if needed; returns the load time in nanoseconds."""
        async with self._lock:
            self._stop_timer()
            self._keep_alive = keep_alive
            load_ns = 0
            if not self._engine.loaded:
                load_ns = await self._load()
            self._active += 1
            return load_ns

    async def release(self) -> None:
        """A request stopped using the model; the last one out starts the keep_alive countdown."""
        self._active = max(0, self._active - 1)
        if self._active == 0:
            await self._schedule_unload()

    async def load_only(self, keep_alive: float | None) -> int:
        """An empty-prompt request with keep_alive: load, then let keep_alive run from now."""
        load_ns = await self.acquire(keep_alive)
        await self.release()
        return load_ns

    async def unload_when_idle(self) -> None:
        """An empty-prompt request with keep_alive 0: unload now, or when the running requests end."""
        self._keep_alive = 0.0
        if self._active == 0:
            await self._schedule_unload()

    async def close(self) -> None:
        """Server shutdown: stop the timer and unload."""
        self._stop_timer()
        async with self._lock:
            if self._engine.loaded:
                await self._unload("shutdown")

    async def _schedule_unload(self) -> None:
        self._stop_timer()
        keep_alive = self._keep_alive
        if keep_alive is not None and keep_alive <= 0:
            async with self._lock:
                if self._active == 0 and self._engine.loaded:
                    await self._unload("keep_alive_zero")
            return
        self._expires_at = _deadline(keep_alive)
        if keep_alive is not None and self._engine.loaded:
            self._timer = asyncio.create_task(self._unload_after(keep_alive, self._epoch))

    async def _unload_after(self, seconds: float, epoch: int) -> None:
        await asyncio.sleep(seconds)
        async with self._lock:
            if epoch == self._epoch and self._active == 0 and self._engine.loaded:
                await self._unload("expired")

    def _stop_timer(self) -> None:
        self._epoch += 1
        self._expires_at = None
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
        self._timer = None

    async def _load(self) -> int:
        started = time.perf_counter_ns()
        await asyncio.to_thread(self._engine.load)
        elapsed = time.perf_counter_ns() - started
        self._metrics.load_duration.observe(elapsed / 1e9)
        self._metrics.loaded_models.set(1)
        self._loaded = True
        logger.info("model loaded in %.3f s", elapsed / 1e9)
        return max(1, elapsed)

    async def _unload(self, reason: str) -> None:
        # Shielded: once started, an unload finishes even if the task that asked is cancelled,
        # so that the engine is never half-unloaded when the next request loads it.
        await asyncio.shield(asyncio.to_thread(self._engine.unload))
        self._metrics.loaded_models.set(0)
        self._metrics.unloads.labels(reason=reason).inc()
        self._loaded = False
        logger.info("model unloaded (%s)", reason)


def _deadline(keep_alive: float | None) -> datetime:
    now = datetime.now(UTC)
    # Longer than FOREVER is forever: timedelta (or the date) would overflow, failing the request.
    if keep_alive is None or keep_alive >= FOREVER.total_seconds():
        return now + FOREVER
    return now + timedelta(seconds=keep_alive)
