"""What a load run returns: the per-request DataFrame, the run directory, and a few defined aggregates."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labkit.measure.load._spec import LoadSpec
from labkit.rundir import RunDirectory

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LoadMonitor", "LoadProgress", "LoadResult", "achieved_rate"]


@dataclass(frozen=True)
class LoadProgress:
    """A running load's state, as a monitor sees it (`run_load(..., monitor=...)`) a few times a second.

    - `elapsed_s`: seconds since the schedule's start (its offset 0), `started_at` that start in unix time
      (the clock of the rows' `intended_send`).
    - `scheduled`: requests whose intended send time has come (sent, waiting for a slot, or done).
    - `completed`: requests recorded (answered, failed or timed out); `in_flight` = scheduled - completed.
    - `duration_s`: the spec's duration: past it, no new request is scheduled and the run drains.
    - `rows`: the recorded rows so far, in completion order (`REQUEST_COLUMNS`); read them, never change.
    """

    elapsed_s: float
    started_at: float
    scheduled: int
    completed: int
    duration_s: float
    rows: Sequence[Mapping[str, Any]]

    @property
    def in_flight(self) -> int:
        return self.scheduled - self.completed


# Called with the run's progress; a reason (in words) stops the run early: nothing more is sent and what is
# in flight is cancelled (recorded as `cancelled`, the reason in its `error`). None lets it go on.
LoadMonitor = Callable[[LoadProgress], str | None]


def achieved_rate(frame: pd.DataFrame) -> float | None:
    """Requests per second that actually left the client: (sent - 1) / (last actual_send - first
    actual_send), over the requests that were sent (actual_send not null). For a constant schedule that the
    client kept up with this is exactly the target rate; a client that fell behind stretches the span and
    shows a lower rate. None with fewer than two requests sent (a rate needs an interval)."""
    sent = frame["actual_send"].dropna()
    if len(sent) < 2:
        return None
    span = float(sent.max() - sent.min())
    return (len(sent) - 1) / span if span > 0 else None


def _quantiles(values: pd.Series, qs: tuple[float, ...]) -> dict[str, float | None]:
    clean = values.dropna()
    return {f"p{round(q * 100)}": (float(clean.quantile(q)) if len(clean) else None) for q in qs}


@dataclass(frozen=True)
class LoadResult:
    """A finished load run.

    - `frame`: one row per request, `REQUEST_COLUMNS`, sorted by request_id (also in `requests.jsonl`).
    - `scheduled`: requests in the open loop's schedule (equal to the rows after a complete run), or the
      requests a closed loop started.
    - `achieved_rate`: see `achieved_rate()`: sends per second as the client managed them.
    - `elapsed_s`: from the first intended send until the last request was recorded.
    - `model`: the model the requests asked for (the spec's, or the one the OpenAI endpoint listed); None
      when `generate` left it to the wrapper.
    - `stopped`: why a monitor stopped the run early, in words; None when it ran its course. A stopped open
      loop has rows only for the requests scheduled before the stop (fewer than `scheduled`).
    """

    spec: LoadSpec
    run_dir: RunDirectory
    frame: pd.DataFrame
    scheduled: int
    achieved_rate: float | None
    elapsed_s: float
    model: str | None = None
    stopped: str | None = None

    @property
    def sent(self) -> int:
        """Requests that left the client (got a connection slot)."""
        return int(self.frame["actual_send"].notna().sum())

    @property
    def availability(self) -> float | None:
        """ok / rows: every scheduled request counts, including those that never reached the server."""
        return float(self.frame["ok"].mean()) if len(self.frame) else None

    def summary(self) -> dict[str, Any]:
        """Headline numbers: counts, rates, error kinds, and p50/p95/p99 of TTFT, ITL, E2E and queue delay.

        Latency quantiles are over the ok requests (pandas' linear interpolation between samples); TTFT and
        ITL only exist for streamed requests, ITL pooling every gap of every ok request. Queue delay is over
        every sent request.
        """
        frame = self.frame
        ok = frame[frame["ok"]]
        qs = (0.5, 0.95, 0.99)
        kinds = frame["error_kind"].dropna().value_counts()
        return {
            "requests": len(frame),
            "scheduled": self.scheduled,
            "sent": self.sent,
            "ok": len(ok),
            "availability": self.availability,
            "target_rate": self.spec.offered_rate,
            "achieved_rate": self.achieved_rate,
            "elapsed_s": self.elapsed_s,
            "ttft_s": _quantiles(ok["ttft_s"], qs),
            "itl_s": _quantiles(ok["itl_s"].explode().astype("float64"), qs),
            "e2e_s": _quantiles(ok["e2e_s"], qs),
            "queue_delay_s": _quantiles(frame["queue_delay_s"], qs),
            "error_kinds": {str(k): int(v) for k, v in kinds.items()},
            "stopped": self.stopped,
        }

    def __repr__(self) -> str:
        rate = (
            "-"
            if self.achieved_rate is None or math.isnan(self.achieved_rate)
            else f"{self.achieved_rate:.3g}"
        )
        ok = int(self.frame["ok"].sum())
        return f"LoadResult({len(self.frame)} requests, {ok} ok, {rate} req/s, run_dir={self.run_dir.path})"
