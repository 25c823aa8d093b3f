"""The capacity search of one run in its report: every point in a table (offered, achieved, goodput,
latency percentiles, which SLOs broke, saturation), a paragraph with the knee and what its interval means,
and the figure: latency against offered rate, throughput and goodput against offered rate, the knee and its
interval drawn. A run without capacity.json gets an empty table, a sentence, and a figure saying so.
"""

from __future__ import annotations

import html
import logging
import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes

from labkit.errors import LabkitError
from labkit.measure.capacity import CapacityResult, PointResult, describe_knee
from labkit.measure.slo import load_slo_spec
from labkit.report.capacity_data import capacity_result
from labkit.report.data import RunData
from labkit.report.marks import CLIENT_COLOUR, SERVER_COLOUR, ReportFigure, note_missing
from labkit.report.tables import MISSING, ReportTable

__all__ = [
    "CAPACITY_TABLE_COLUMNS",
    "CapacitySection",
    "capacity_figure",
    "capacity_note",
    "capacity_section",
    "capacity_table",
]

logger = logging.getLogger(__name__)

CAPACITY_TABLE_COLUMNS = (
    "#",
    "repeat",
    "phase",
    "offered (req/s)",
    "sent (req/s)",
    "throughput (req/s)",
    "goodput (req/s)",
    "p50 (ms)",
    "p95 (ms)",
    "p99 (ms)",
    "TTFT p95 (ms)",
    "ITL p95 (ms)",
    "requests",
    "load sent (s)",
    "result",
    "why",
)
_KNEE_COLOUR = "#2ca02c"
_FAIL_COLOUR = "#d62728"
_GOODPUT_COLOUR = "#e6550d"  # dark orange: no fault kind's colour, apart from the knee's green
_LATENCY_SERIES = (
    ("e2e_p50_s", "end-to-end p50", CLIENT_COLOUR, "o", ":"),
    ("e2e_p95_s", "end-to-end p95", CLIENT_COLOUR, "s", "-"),
    ("e2e_p99_s", "end-to-end p99", CLIENT_COLOUR, "^", "--"),
    ("ttft_p95_s", "time to first token p95", SERVER_COLOUR, "D", "-"),
    ("itl_p95_s", "inter-token p95", "#9467bd", "v", "-"),
)


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def _why(point: PointResult) -> str:
    parts = []
    if point.failed_slos:
        parts.append("SLOs broken: " + ", ".join(point.failed_slos))
    if point.saturation:
        parts.append(("stopped early: " if point.stopped_early else "saturated: ") + point.saturation)
    if not point.slos and not point.saturation:
        parts.append("no request finished: nothing to judge")
    return "; ".join(parts) or MISSING


def capacity_table(run: RunData) -> ReportTable:
    """One row per point in the order measured: offered and achieved rates, goodput (answers meeting every
    SLO per second of load), end-to-end percentiles, TTFT and ITL p95 (streamed answers), requests, how
    long load was sent, pass or fail and why."""
    result = capacity_result(run)
    if result is None or not result.points:
        return ReportTable(columns=list(CAPACITY_TABLE_COLUMNS))
    rows = [
        (
            p.index,
            p.repeat,
            p.phase,
            p.rate,
            p.sent_rate,
            p.throughput_rps,
            p.goodput_rps,
            _ms(p.latency.get("e2e_p50_s")),
            _ms(p.latency.get("e2e_p95_s")),
            _ms(p.latency.get("e2e_p99_s")),
            _ms(p.latency.get("ttft_p95_s")),
            _ms(p.latency.get("itl_p95_s")),
            p.requests,
            p.duration_s,
            "pass" if p.passed else "fail",
            _why(p),
        )
        for p in result.points
    ]
    return ReportTable(pd.DataFrame(rows, columns=list(CAPACITY_TABLE_COLUMNS)))


def capacity_note(run: RunData) -> str:
    """The knee, its interval and what the interval means, the SLO that broke first, and the search's
    size; or that the run made no capacity search."""
    result = capacity_result(run)
    if result is None:
        return "This run made no capacity search (no capacity.json)."
    spec = result.spec
    saturated = sum(1 for p in result.points if p.stopped_early)
    parts = [
        describe_knee(result) + ".",
        f"{len(result.points)} points of {spec.get('point_s', '?')} s each ({saturated} stopped early as "
        f"over-saturated) in {result.elapsed_s:.0f} s, {result.spec.get('repeats', 1)} repeat(s), "
        f"bisection to {float(spec.get('precision', 0)):.0%}.",
        "A point passes when every SLO objective with events is met and its backlog and latency do not keep "
        "growing (docs/capacity.md); `saturation` as the limiting SLO means the service fell behind the "
        "offered rate before any SLO broke within the point.",
    ]
    return "\n".join(textwrap.fill(part, width=100) for part in parts)


def _latency_thresholds(result: CapacityResult) -> list[tuple[str, float]]:
    """(label, seconds) of the spec's end-to-end and TTFT thresholds, drawn on the latency panel."""
    path = result.spec.get("slo_spec")
    try:
        slos = load_slo_spec(Path(path) if path else None)
    except LabkitError as exc:
        logger.info("no thresholds drawn: %s", exc)
        return []
    lines = []
    for slo in slos:
        if slo.metric in ("llm_request_duration_seconds", "llm_time_to_first_token_seconds"):
            for objective in slo.objectives:
                if objective.value is not None:
                    lines.append((f"{slo.name} {objective.display_name}", float(objective.value)))
    return lines


def _draw_knee(fig: ReportFigure, axes: list[Axes], result: CapacityResult) -> None:
    value = result.max_rate_meeting_slos
    low, high = result.max_rate_meeting_slos_low, result.max_rate_meeting_slos_high
    if value is None:
        return
    for ax in axes:
        ax.axvline(value, color=_KNEE_COLOUR, linewidth=2, gid="knee")
        if low is not None and high is not None and high > low:
            ax.axvspan(low, high, color=_KNEE_COLOUR, alpha=0.15, gid="knee-interval")
    fig.describe("marks", f"green line: the knee, {value:.3g} requests/s")
    if low is not None and high is not None and high > low:
        fig.describe(
            "shaded", f"green: its interval {low:.3g} to {high:.3g} requests/s ({result.interval_meaning})"
        )


def capacity_figure(run: RunData) -> ReportFigure:
    """Two panels against the offered rate: the ok requests' latency percentiles (end-to-end p50, p95,
    p99; TTFT and ITL p95 when streamed) with the SLO thresholds, and the throughput (ok answers/s) and
    goodput (answers meeting every SLO/s) beside the offered rate itself; failing points hollow, points
    stopped early as saturated crossed; the knee and its interval in green."""
    fig = ReportFigure(figsize=(10.0, 6.4), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True).tolist()
    fig.suptitle("Capacity: latency and throughput against the offered rate")
    axes[0].set_ylabel("latency (ms)")
    axes[1].set_ylabel("requests/s")
    axes[1].set_xlabel("offered rate (requests/s)")
    fig.x_text = "offered rate (requests/s)"
    for ax in axes:
        ax.grid(True, alpha=0.3)
    result = capacity_result(run)
    if result is None or not result.points:
        note_missing(fig, axes[0], "no capacity search in this run (no capacity.json)")
        return fig
    points = sorted(result.points, key=lambda p: (p.rate, p.index))
    rates = [p.rate for p in points]
    for key, label, colour, marker, style in _LATENCY_SERIES:
        values = [_ms(p.latency.get(key)) for p in points]
        if all(v is None for v in values):
            continue
        xs = [r for r, v in zip(rates, values, strict=True) if v is not None]
        ys = [v for v in values if v is not None]
        axes[0].plot(xs, ys, color=colour, linestyle=style, marker=marker, label=label, gid=f"latency:{key}")
        fig.describe("series", f"{label} of ok requests ({len(ys)} points)")
    for label, seconds in _latency_thresholds(result):
        axes[0].axhline(seconds * 1000, color="0.5", linestyle="--", linewidth=0.8, gid="threshold")
        fig.describe("marks", f"dashed grey: threshold {label} ({seconds * 1000:.0f} ms)")
    axes[1].plot(rates, rates, color="0.6", linestyle=":", label="offered", gid="offered")
    # Thick and pale under goodput: where every answer met the SLOs the two lines coincide.
    axes[1].plot(rates, [p.throughput_rps for p in points], color=CLIENT_COLOUR, marker="o", linewidth=4,
                 markersize=9, alpha=0.45, label="throughput (ok answers)", gid="throughput")  # fmt: skip
    goodput = [(p.rate, p.goodput_rps) for p in points if p.goodput_rps is not None]
    if goodput:
        axes[1].plot([r for r, _ in goodput], [g for _, g in goodput], color=_GOODPUT_COLOUR, marker="s",
                     label="goodput (meeting every SLO)", gid="goodput")  # fmt: skip
    fig.describe(
        "series",
        f"offered rate (dotted), throughput (thick grey) and goodput (orange) of {len(points)} points",
    )
    failed = [p for p in points if not p.passed]
    stopped = [p for p in failed if p.stopped_early]
    if failed:
        axes[1].plot([p.rate for p in failed], [p.throughput_rps for p in failed], linestyle="none",
                     marker="o", markersize=11, markerfacecolor="none", color=_FAIL_COLOUR,
                     label="failed point", gid="failed")  # fmt: skip
        fig.describe("marks", f"red circles: {len(failed)} failing point(s)")
    if stopped:
        axes[1].plot([p.rate for p in stopped], [p.throughput_rps for p in stopped], linestyle="none",
                     marker="x", markersize=9, color=_FAIL_COLOUR, label="stopped early (saturated)",
                     gid="stopped")  # fmt: skip
        fig.describe("marks", f"red crosses: {len(stopped)} point(s) stopped early as over-saturated")
    _draw_knee(fig, axes, result)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return fig


class CapacitySection:
    """The capacity search's section of the report as one block of HTML: heading, what the search does, the
    knee in words, every point, the figure. A capacity run's report shows it right after its first screen."""

    def __init__(self, run: RunData) -> None:
        self.run = run

    def _repr_html_(self) -> str:
        return "\n".join(
            [
                "<h2>Capacity</h2>",
                '<p style="max-width:60em">A capacity search measures open-loop points at rising offered '
                "rates, each in its own run directory under <code>points/</code> and judged against every "
                "SLO; over-saturated points are stopped early. This run sends no requests of its own: the "
                "sections below it that need the run's own requests say so.</p>",
                f"<pre>{html.escape(capacity_note(self.run))}</pre>",
                capacity_table(self.run).to_html_for_people(),
                capacity_figure(self.run)._repr_html_(),
            ]
        )


def capacity_section(run: RunData) -> CapacitySection | None:
    """The capacity section of the report, or None (nothing shown) for a run that made no capacity search."""
    return None if capacity_result(run) is None else CapacitySection(run)
