"""HTTP faults the wrapper injects into its /generate requests (latency, error, stream_cut), each with a TTL.
What a fault may be is the lab's fault contract (labkit.faults); this is how the wrapper holds and applies it.

The TTL is held here, in the process that applies the fault, so a fault ends even when whoever injected it
is gone; faults live only in memory, so a restarted wrapper has none.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import LabkitError
from labkit.faults import ErrorFault, LatencyFault, StreamCutFault
from labkit.services.wrapper._metrics import WrapperMetrics

__all__ = ["ActiveFault", "AnyFault", "FaultTable", "InjectedFaultError"]

# A fault the wrapper holds: the body of POST /admin/faults (labkit.faults.WrapperFaultRequest), validated.
AnyFault = LatencyFault | ErrorFault | StreamCutFault

logger = logging.getLogger(__name__)


class InjectedFaultError(LabkitError):
    """A fault decided this request's outcome: answer `status_code` and `message`, not the backend's."""

    def __init__(self, message: str, *, status_code: int, kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.kind = kind


@dataclass
class ActiveFault:
    """One injected fault: its spec, its wall-clock and monotonic start, its TTL timer and its RNG."""

    id: str
    spec: AnyFault
    started_at: float
    started_mono: float
    rng: random.Random
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def expires_mono(self) -> float:
        return self.started_mono + self.spec.duration_s

    def describe(self, now_mono: float) -> dict[str, Any]:
        """The fault as the admin API shows it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "params": self.spec.params.model_dump(),
            "duration_s": self.spec.duration_s,
            "started_at": self.started_at,
            "expires_at": self.started_at + self.spec.duration_s,
            "remaining_s": round(max(0.0, self.expires_mono - now_mono), 3),
        }


class FaultTable:
    """The wrapper's active faults, at most one per kind (a new one replaces the old), each ended by its TTL.

    The TTL is enforced twice: an asyncio timer ends the fault at its expiry, so `llm_faults_active` is
    right at scrape time with no traffic, and every use checks the expiry, so an expired fault never
    applies even if the timer is late. Call the mutating methods from the app's event loop.
    """

    def __init__(self, metrics: WrapperMetrics) -> None:
        self._metrics = metrics
        self._by_kind: dict[str, ActiveFault] = {}

    # ---- admin side --------------------------------------------------------------------------------
    def inject(self, spec: AnyFault) -> tuple[ActiveFault, ActiveFault | None]:
        """Start a fault; return it and the fault of the same kind it replaced, if any."""
        loop = asyncio.get_running_loop()
        replaced = self._by_kind.get(spec.kind)
        if replaced is not None:
            self._end(replaced, "replaced")
        seed = spec.params.seed if isinstance(spec, ErrorFault) else None
        fault = ActiveFault(
            id=uuid.uuid4().hex[:12],
            spec=spec,
            started_at=time.time(),
            started_mono=time.monotonic(),
            rng=random.Random(seed),
        )
        fault.timer = loop.call_later(spec.duration_s, self._on_timer, fault.id)
        self._by_kind[spec.kind] = fault
        self._set_gauge(spec.kind)
        logger.info(
            "fault %s injected: kind=%s params=%s duration_s=%g%s",
            fault.id,
            fault.kind,
            spec.params.model_dump(),
            spec.duration_s,
            f" (replaces fault {replaced.id})" if replaced else "",
        )
        return fault, replaced

    def end(self, fault_id: str, reason: str) -> ActiveFault | None:
        """End the active fault with this id; None when no active fault has it."""
        self.expire_due()
        for fault in self._by_kind.values():
            if fault.id == fault_id:
                self._end(fault, reason)
                return fault
        return None

    def end_all(self, reason: str) -> list[ActiveFault]:
        """End every active fault at once (idempotent); return those that were active."""
        self.expire_due()
        ended = sorted(self._by_kind.values(), key=lambda f: f.started_mono)
        for fault in ended:
            self._end(fault, reason)
        return ended

    def active(self) -> list[ActiveFault]:
        """The faults in force now, oldest first."""
        self.expire_due()
        return sorted(self._by_kind.values(), key=lambda f: f.started_mono)

    def expire_due(self) -> None:
        """End every fault whose TTL has passed (the timer normally has already)."""
        now = time.monotonic()
        for fault in list(self._by_kind.values()):
            if now >= fault.expires_mono:
                self._end(fault, "expired")

    # ---- request side: each returns what applies now and counts it in llm_faults_injected_total ------
    def latency_delay_s(self) -> float:
        """Seconds to wait before this request's backend call (0 without a latency fault)."""
        fault = self._current("latency")
        if fault is None or not isinstance(fault.spec, LatencyFault):
            return 0.0
        params = fault.spec.params
        self._metrics.faults_injected.labels("latency").inc()
        return params.delay_s + (fault.rng.uniform(0, params.jitter_s) if params.jitter_s else 0.0)

    def injected_error(self) -> InjectedFaultError | None:
        """The error this request gets instead of a backend call, or None (one draw per request)."""
        fault = self._current("error")
        if fault is None or not isinstance(fault.spec, ErrorFault):
            return None
        params = fault.spec.params
        if fault.rng.random() >= params.probability:
            return None
        self._metrics.faults_injected.labels("error").inc()
        return InjectedFaultError(
            f"injected fault: error (fault {fault.id}, probability {params.probability:g}); "
            f"answered {params.status} without calling the model backend",
            status_code=params.status,
            kind="error",
        )

    def stream_cut(self, token_chunks: int) -> InjectedFaultError | None:
        """The cut of a response that has passed `token_chunks` token chunks, or None to read on."""
        fault = self._current("stream_cut")
        if fault is None or not isinstance(fault.spec, StreamCutFault):
            return None
        after = fault.spec.params.after_tokens
        if token_chunks < after:
            return None
        self._metrics.faults_injected.labels("stream_cut").inc()
        return InjectedFaultError(
            f"injected fault: stream_cut (fault {fault.id}); the model backend's stream was cut "
            f"after {token_chunks} token chunks",
            status_code=502,
            kind="stream_cut",
        )

    # ---- internals ---------------------------------------------------------------------------------
    def _current(self, kind: str) -> ActiveFault | None:
        fault = self._by_kind.get(kind)
        if fault is not None and time.monotonic() >= fault.expires_mono:
            self._end(fault, "expired")
            return None
        return fault

    def _on_timer(self, fault_id: str) -> None:
        for fault in list(self._by_kind.values()):
            if fault.id == fault_id:
                self._end(fault, "expired")

    def _end(self, fault: ActiveFault, reason: str) -> None:
        if self._by_kind.get(fault.kind) is not fault:
            return
        del self._by_kind[fault.kind]
        if fault.timer is not None:
            fault.timer.cancel()
        self._set_gauge(fault.kind)
        logger.info(
            "fault %s ended (%s): kind=%s params=%s duration_s=%g, active for %.3f s",
            fault.id,
            reason,
            fault.kind,
            fault.spec.params.model_dump(),
            fault.spec.duration_s,
            time.monotonic() - fault.started_mono,
        )

    def _set_gauge(self, kind: str) -> None:
        self._metrics.faults_active.labels(kind).set(1 if kind in self._by_kind else 0)
