"""Recovery measures per fault — time to detect, time to recover, requests lost — computed from a run's
fault windows (its journal) and its per-request samples (the load generator's rows).

Definitions (all times unix seconds; a request's completion is `intended_send + e2e_s`):
- a request is *bad* when it failed (`ok` false) or was slow (`e2e_s` above `slow_threshold_s`);
- the requests a fault is answerable for are those completing after its start and before the next fault
  starts (the last fault: sent before the run ends): a request in flight when the next fault strikes, and
  failed by it, is that fault's, not a sign that the previous one never recovered;
- *detected* at the completion of the first bad one: `time_to_detect_s = detected - start`;
- *recovered* at the completion of the first good request sent after both the fault's end and the
  last bad request: `time_to_recover_s = recovered - end` (after an instantaneous fault such as a kill,
  end = start, so this is the outage as users saw it);
- *requests lost*: failed requests (not merely slow) sent from the fault's start until recovery;
- *error budget burned*: the fault's bad requests (lost and slow) as a share of the run's error budget, the
  requests of the run times the spec's tightest error budget (1 - the highest objective target):
  `budget_burned = (requests_lost + requests_slow) / (error_budget * requests)`; 1.0 means the fault alone
  spent everything the objectives allow over the run (SLO.md, "Recovery measures").
A fault with no bad request has no detection and recovery time (None): users did not notice it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from labkit.faults import INSTANT_KINDS
from labkit.rundir import EventKind

__all__ = [
    "FALLBACK_SLOW_S",
    "RECOVERY_COLUMNS",
    "FaultWindow",
    "default_error_budget",
    "default_slow_threshold_s",
    "fault_windows_from_journal",
    "recovery_measures",
]

# A request slower than this is bad when nothing else says where "slow" starts (no remediation threshold
# and no end-to-end latency objective in the SLO spec).
FALLBACK_SLOW_S = 3.0

RECOVERY_COLUMNS = [
    "fault_id",
    "kind",
    "target",
    "start",
    "end",
    "detected",
    "recovered",
    "time_to_detect_s",
    "time_to_recover_s",
    "requests_lost",
    "requests_slow",
    "requests_in_window",
    "budget_burned",
]


def default_slow_threshold_s(slos: Iterable[Any]) -> float:
    """The tightest end-to-end latency threshold of an SLO spec (labkit.measure.slo.load_slo_spec), seconds: a
    request above it is slow; FALLBACK_SLOW_S when the spec has no such objective."""
    values = [
        o.value
        for slo in slos
        if slo.indicator == "threshold" and slo.metric == "llm_request_duration_seconds"
        for o in slo.objectives
        if o.value is not None
    ]
    return min(values) if values else FALLBACK_SLOW_S


def default_error_budget(slos: Iterable[Any]) -> float | None:
    """The tightest error budget of an SLO spec (labkit.measure.slo.load_slo_spec): 1 - the highest objective
    target, the ratio of bad requests the strictest objective allows; None for a spec without objectives."""
    budgets = [o.error_budget for slo in slos for o in slo.objectives]
    return min(budgets) if budgets else None


@dataclass(frozen=True)
class FaultWindow:
    fault_id: str
    kind: str
    target: str
    start: float
    end: float  # == start for instantaneous faults (kill, restart, unload)

    @property
    def instantaneous(self) -> bool:
        """A window with no length: an instantaneous fault, or one journaled with no end and no duration."""
        return self.end <= self.start


def fault_windows_from_journal(events: Iterable[Mapping[str, Any]]) -> list[FaultWindow]:
    """Pair `fault_start` / `fault_end` events (matched by `fault_id`) into windows, in start order.

    A fault whose end was never journaled (the experiment process died) ends at its planned
    `start + duration_s` if the start event says so, else at its start."""
    starts: dict[str, Mapping[str, Any]] = {}
    ends: dict[str, float] = {}
    for event in events:
        fault_id = event.get("fault_id")
        if fault_id is None:
            continue
        if event.get("kind") == EventKind.FAULT_START:
            starts[str(fault_id)] = event
        elif event.get("kind") == EventKind.FAULT_END:
            ends[str(fault_id)] = float(event["wall_time"])
    windows = []
    for fault_id, event in starts.items():
        start = float(event["wall_time"])
        planned = start + float(event.get("duration_s") or 0.0)
        kind = str(event.get("fault_kind", event.get("fault", "")))
        # An instantaneous fault's end event says when the call that made it returned (a kill: 0.4 ms
        # later), not when users felt it end: its window is its start, and what follows is its recovery.
        end = start if kind in INSTANT_KINDS else max(start, ends.get(fault_id, planned))
        windows.append(
            FaultWindow(
                fault_id=fault_id,
                kind=kind,
                target=str(event.get("target", "")),
                start=start,
                end=end,
            )
        )
    return sorted(windows, key=lambda w: w.start)


def recovery_measures(
    windows: Sequence[FaultWindow],
    samples: pd.DataFrame,
    *,
    slow_threshold_s: float = 3.0,
    run_end: float | None = None,
    error_budget: float | None = None,
) -> pd.DataFrame:
    """One row per fault with the measures defined in the module docstring (columns RECOVERY_COLUMNS).
    `error_budget` (default_error_budget of the SLO spec) gives `budget_burned`; without it, None."""
    if samples.empty or not windows:
        return pd.DataFrame(
            [_row(w, None, None, 0, 0, 0, None) for w in windows], columns=RECOVERY_COLUMNS
        ).astype({"requests_lost": int, "requests_slow": int, "requests_in_window": int})
    allowed = None if error_budget is None else error_budget * len(samples)
    sent = samples["intended_send"].astype(float)
    done = sent + samples["e2e_s"].astype(float)
    ok = samples["ok"].astype(bool)
    slow = samples["e2e_s"].astype(float) > slow_threshold_s
    bad = ~ok | slow
    # The last fault answers for every request sent before the run's end (all of them without run_end).
    last_horizon = math.inf if run_end is None else run_end
    rows = []
    for index, window in enumerate(windows):
        if index + 1 < len(windows):
            mine = (done >= window.start) & (done < windows[index + 1].start)
        else:
            mine = (done >= window.start) & (sent < last_horizon)
        bad_mine = mine & bad
        if not bad_mine.any():
            rows.append(_row(window, None, None, 0, 0, int(mine.sum()), 0.0 if allowed else None))
            continue
        detected = float(done[bad_mine].min())
        last_bad_sent = float(sent[bad_mine].max())
        after = mine & ~bad & (sent >= max(window.end, last_bad_sent))
        recovered = float(done[after].min()) if after.any() else None
        until = recovered if recovered is not None else float("inf")
        lost = int((mine & ~ok & (sent < until)).sum())
        slow_count = int((mine & ok & slow & (sent < until)).sum())
        burned = (lost + slow_count) / allowed if allowed else None
        rows.append(_row(window, detected, recovered, lost, slow_count, int(mine.sum()), burned))
    return pd.DataFrame(rows, columns=RECOVERY_COLUMNS)


def _row(
    window: FaultWindow,
    detected: float | None,
    recovered: float | None,
    lost: int,
    slow: int,
    in_window: int,
    budget_burned: float | None,
) -> dict[str, Any]:
    return {
        "fault_id": window.fault_id,
        "kind": window.kind,
        "target": window.target,
        "start": window.start,
        "end": window.end,
        "detected": detected,
        "recovered": recovered,
        "time_to_detect_s": None if detected is None else detected - window.start,
        "time_to_recover_s": None if recovered is None else max(0.0, recovered - window.end),
        "requests_lost": lost,
        "requests_slow": slow,
        "requests_in_window": in_window,
        "budget_burned": budget_burned,
    }
