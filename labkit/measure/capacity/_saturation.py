"""Whether a load point over-saturates the service: the backlog (requests in flight) or the latency of
successive requests keeps growing, so the offered rate cannot be sustained however long the point lasts.

A point is watched while it runs (`PointWatch`, a `run_load` monitor) and stopped at the first sign; a point
that ran its course is checked once more on all its rows (`PointWatch.final`). docs/capacity.md explains it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labkit.measure.load import LoadProgress

__all__ = ["PointWatch", "SaturationCheck", "saturation_reason"]

# Fewer samples than this in the observed window: no trend is fitted (in-flight readings; answered requests).
_MIN_SAMPLES = 5
_MIN_ANSWERS = 8


@dataclass(frozen=True, kw_only=True)
class SaturationCheck:
    """When a point counts as over-saturated. The observed window is the second part of the point: from the
    end of its warm-up (twice the fastest answer so far, at least `min_warmup_s`: the backlog's fill to its
    steady level) to now, and it must span `min_observed_s` before anything is judged.

    - backlog: in flight grows faster than `growth_tolerance` x the offered rate (a service that completes
      fewer requests than arrive, by that share) and by at least `min_backlog` requests over the window;
    - latency: the end-to-end latency of successive ok requests (by intended send time) grows faster than
      `growth_tolerance` seconds per second, and by at least `min_rise_share` of their median;
    - Little's law: more than rate x `latency_bound_s` + `min_backlog` in flight means the newest request
      waits behind more work than the latency threshold allows (skipped when `latency_bound_s` is None).
    """

    growth_tolerance: float = 0.05
    min_backlog: int = 3
    min_rise_share: float = 0.25
    min_warmup_s: float = 0.5
    min_observed_s: float = 1.5
    latency_bound_s: float | None = None


def _slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y over x."""
    return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0])


def _warmup_s(rows: Sequence[Mapping[str, Any]], check: SaturationCheck) -> float:
    fastest = min(
        (float(r["e2e_s"]) for r in rows if r.get("ok") and r.get("e2e_s") is not None), default=0.0
    )
    return max(check.min_warmup_s, 2.0 * fastest)


def _backlog_reason(
    history: Sequence[tuple[float, int]], start: float, rate: float, check: SaturationCheck
) -> str | None:
    window = [(t, n) for t, n in history if t >= start]
    if len(window) < _MIN_SAMPLES:
        return None
    span = window[-1][0] - window[0][0]
    slope = _slope([t for t, _ in window], [n for _, n in window])
    if slope > check.growth_tolerance * rate and slope * span >= check.min_backlog:
        return (
            f"backlog growing: requests in flight rose {slope:.2f}/s over the last {span:.1f} s "
            f"({slope / rate:.0%} of the offered {rate:.3g}/s), from {window[0][1]} to {window[-1][1]}"
        )
    return None


def _latency_reason(
    rows: Sequence[Mapping[str, Any]], started_at: float, start: float, check: SaturationCheck
) -> str | None:
    points = sorted(
        (float(r["intended_send"]) - started_at, float(r["e2e_s"]))
        for r in rows
        if r.get("ok") and r.get("e2e_s") is not None and float(r["intended_send"]) - started_at >= start
    )
    if len(points) < _MIN_ANSWERS:
        return None
    sends = [t for t, _ in points]
    latencies = [e for _, e in points]
    span = sends[-1] - sends[0]
    slope = _slope(sends, latencies)
    median = float(np.median(latencies))
    if slope > check.growth_tolerance and slope * span >= check.min_rise_share * median:
        return (
            f"latency growing: end-to-end latency rose {slope * 1000:.0f} ms per second of the point over "
            f"{len(points)} requests sent in {span:.1f} s (median {median * 1000:.0f} ms)"
        )
    return None


def saturation_reason(
    history: Sequence[tuple[float, int]],
    rows: Sequence[Mapping[str, Any]],
    *,
    rate: float,
    now_s: float,
    started_at: float,
    check: SaturationCheck,
) -> str | None:
    """Why the point is over-saturated, in words, or None. `history`: (seconds into the point, requests in
    flight) while requests were being scheduled; `rows`: the requests recorded so far (`REQUEST_COLUMNS`);
    `now_s`: seconds into the point; `started_at`: the point's start, unix seconds."""
    if history and check.latency_bound_s is not None:
        in_flight = history[-1][1]
        bound = rate * check.latency_bound_s + check.min_backlog
        if in_flight > bound:
            return (
                f"backlog over Little's bound: {in_flight} requests in flight at {rate:.3g}/s is a mean "
                f"time in the system over {in_flight / rate:.1f} s, beyond the "
                f"{check.latency_bound_s:g} s threshold"
            )
    start = _warmup_s(rows, check)
    if now_s - start < check.min_observed_s:
        return None
    return _backlog_reason(history, start, rate, check) or _latency_reason(rows, started_at, start, check)


@dataclass(eq=False)
class PointWatch:
    """A `run_load` monitor for one point at `rate`: keeps the in-flight history while requests are
    scheduled and returns the first saturation reason (which stops the point)."""

    rate: float
    check: SaturationCheck
    history: list[tuple[float, int]] = field(default_factory=list)
    started_at: float | None = None

    def __call__(self, progress: LoadProgress) -> str | None:
        self.started_at = progress.started_at
        if progress.elapsed_s > progress.duration_s:
            return None  # the schedule has ended: the backlog now drains, which says nothing of saturation
        self.history.append((progress.elapsed_s, progress.in_flight))
        return saturation_reason(
            self.history,
            progress.rows,
            rate=self.rate,
            now_s=progress.elapsed_s,
            started_at=progress.started_at,
            check=self.check,
        )

    def final(self, rows: Sequence[Mapping[str, Any]], *, duration_s: float) -> str | None:
        """The same judgement on a point that ran its course, over all its rows (requests sent near the end
        show a growing latency best, now that they have answered)."""
        if self.started_at is None:
            return None
        return saturation_reason(
            self.history, rows, rate=self.rate, now_s=duration_s, started_at=self.started_at, check=self.check
        )
