"""Two figures that are not timelines of a series: the distribution of the client's end-to-end latency per
phase (an empirical CDF, exact: every successful request), and the journal as an event timeline (one row
per kind of event, on the report's one clock)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from labkit.measure.slo import valid_requests
from labkit.report.data import PHASE_NAMES, RunData
from labkit.report.marks import (
    FAULT_STYLES,
    REMEDIATION_STYLES,
    ReportFigure,
    finish,
    new_figure,
    note_missing,
)
from labkit.rundir import EventKind

__all__ = [
    "EVENT_ROWS",
    "cdf_figure",
    "draw_cdf",
    "events_figure",
    "latency_distribution_figure",
    "phase_samples",
]

# The journal's events by row of the timeline, top to bottom (an event kind not listed goes to "other").
EVENT_ROWS: dict[str, tuple[str, ...]] = {
    "experiment": (
        EventKind.EXPERIMENT_STARTED, EventKind.SCHEDULE, EventKind.METHOD_STARTED, EventKind.METHOD_FINISHED,
        EventKind.METHOD_SLO, EventKind.SETTLED, EventKind.ABORTED, EventKind.EXPERIMENT_FINISHED,
    ),
    "steady state": (EventKind.STEADY_STATE_STARTED, EventKind.STEADY_STATE),
    "load": (EventKind.LOAD_STARTED, EventKind.LOAD_FINISHED),
    "faults": (
        EventKind.FAULT_START, EventKind.FAULT_END, EventKind.FAULT_WINDOW_END, EventKind.FAULT_FAILED,
        EventKind.RECOVERY,
    ),
    "remediation": (
        EventKind.REMEDIATION_STARTED, EventKind.REMEDIATION_DECISION, EventKind.REMEDIATION_ACTION,
        EventKind.REMEDIATION_ERROR, EventKind.REMEDIATION_STOPPED,
    ),
    "capacity": (EventKind.CAPACITY_STARTED, EventKind.CAPACITY_POINT, EventKind.CAPACITY_FINISHED),
}  # fmt: skip
_STYLE_WORDS = {":": "dotted", "-": "solid", "--": "dashed"}
_PHASE_STYLES = {"before": ("#2ca02c", ":"), "method": ("#d62728", "-"), "after": ("#1f77b4", "--")}


def phase_samples(run: RunData) -> dict[str, pd.DataFrame]:
    """The client's samples by phase (before, method, after): the steady-state checks' own requests and
    the method's; a run without an experiment has its samples under "method"."""
    phases = {
        "before": run.check_samples.get("before"),
        "method": run.samples,
        "after": run.check_samples.get("after"),
    }
    return {k: v for k, v in phases.items() if v is not None and not v.empty}


def cdf_figure(title: str, xlabel: str) -> tuple[ReportFigure, Axes]:
    """An empty figure for empirical CDFs (`draw_cdf`): x the latency, y the share at or below it."""
    fig = ReportFigure(figsize=(10.0, 3.6), layout="constrained")
    ax = fig.subplots()
    fig.suptitle(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of requests at or below (%)")
    ax.grid(True, alpha=0.3)
    fig.x_text = xlabel
    return fig, ax


def draw_cdf(fig: ReportFigure, ax: Axes, values: np.ndarray, label: str, **style: Any) -> None:
    """The empirical CDF of `values` as a step line, recorded in the caption."""
    ordered = np.sort(values)
    ax.step(ordered, np.arange(1, ordered.size + 1) / ordered.size * 100, where="post", label=label, **style)
    words = _STYLE_WORDS.get(style.get("linestyle", "-"), "solid")
    fig.describe("series", f"{label} ({words} line)")


def latency_distribution_figure(run: RunData) -> ReportFigure:
    """The empirical CDF of the client's end-to-end latency of successful valid requests, one line per phase,
    with each phase's request count and p95 in the legend."""
    fig, ax = cdf_figure("End-to-end latency distribution (client)", "end-to-end latency (s)")
    drawn = 0
    for key, samples in phase_samples(run).items():
        ok = samples[samples["ok"] & valid_requests(samples)]["e2e_s"].dropna().to_numpy(float)
        if ok.size == 0:
            continue
        colour, style = _PHASE_STYLES[key]
        p95 = float(np.quantile(ok, 0.95, method="inverted_cdf"))
        name = PHASE_NAMES[key] if run.has_method else "the run"
        label = f"{name}: {ok.size} requests, p95 {p95 * 1000:.0f} ms"
        draw_cdf(fig, ax, ok, label, color=colour, linestyle=style)
        drawn += 1
    if drawn == 0:
        note_missing(fig, ax, "no successful client requests to draw")
    else:
        ax.set_ylim(0, 101)
        ax.set_xlim(left=0)
        ax.legend(loc="lower right", fontsize="small")
    return fig


def _row_of(kind: str) -> str:
    return next((row for row, kinds in EVENT_ROWS.items() if kind in kinds), "other")


def events_figure(run: RunData) -> ReportFigure:
    """The journal (events.jsonl) on the report's clock: one row per part of the lab that wrote it, one
    marker per event, faults and remediation in their own colours and markers, each labelled."""
    fig, (ax,) = new_figure(run, "Journal of the run (events.jsonl)", ["part"])
    events = [e for e in run.events if isinstance(e.get("wall_time"), int | float)]
    if not events:
        note_missing(fig, ax, "no journal (events.jsonl) in this run")
        return finish(fig, run)
    rows = list(EVENT_ROWS) + (
        ["other"] if any(_row_of(str(e.get("kind"))) == "other" for e in events) else []
    )
    y_of = {row: len(rows) - i for i, row in enumerate(rows)}
    for event in events:
        kind = str(event.get("kind"))
        row, at = _row_of(kind), run.t_s(float(event["wall_time"]))
        colour, marker = "0.3", "|"
        if row == "faults":
            colour, marker = FAULT_STYLES.get(str(event.get("fault_kind")), ("0.3", "o"))
        elif kind == EventKind.REMEDIATION_ACTION:
            colour, marker = REMEDIATION_STYLES.get(str(event.get("action", "restart")), ("black", "o"))
        ax.plot(
            [at], [y_of[row]], marker=marker, color=colour, markersize=8, linestyle="none", label="_nolegend_"
        )
        ax.annotate(
            _event_text(event), (at, y_of[row]), textcoords="offset points", xytext=(2, 5), fontsize=7,
            rotation=30, color=colour,
        )  # fmt: skip
    ax.set_yticks(list(y_of.values()), list(y_of))
    ax.set_ylim(0.3, len(rows) + 0.9)
    ax.set_ylabel("")
    counts = pd.Series([_row_of(str(e.get("kind"))) for e in events]).value_counts()
    fig.describe("series", ", ".join(f"{n} {row} events" for row, n in counts.items()) + " (one marker each)")
    return finish(fig, run)


def _event_text(event: dict[str, object]) -> str:
    kind = str(event.get("kind"))
    if kind == EventKind.STEADY_STATE:
        return f"{event.get('phase')}: {event.get('verdict')}"
    if kind in (EventKind.FAULT_START, EventKind.FAULT_END):
        return f"{kind.split('_')[1]} {event.get('fault_kind')} {event.get('target')}"
    if kind == EventKind.REMEDIATION_ACTION:
        return f"{event.get('action', 'restart')} {event.get('target')}"
    if kind == EventKind.EXPERIMENT_FINISHED:
        return f"finished: {event.get('verdict')}"
    return kind.replace("_", " ")
