"""The remediation A/B in a run's report: per fault kind and arm each measure's median, interquartile range
and count (`ab_table`), the differences on - off with their intervals and the verdict (`ab_difference_table`),
each arm's runs as points with the medians marked (`ab_figure`), and all of it with the test in words as one
section (`ab_section`) that a run without remediation_ab.json does not show.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from labkit.measure.remediation_ab import AB_MEASURES, AB_TEST_MEASURE
from labkit.report.ab_data import ab_record
from labkit.report.data import RunData
from labkit.report.marks import FAULT_STYLES, ReportFigure, colour_name
from labkit.report.tables import MISSING, TIMES, ReportTable
from labkit.verdicts import AB_VERDICT_TEXT

__all__ = [
    "AB_DIFFERENCE_COLUMNS",
    "AB_TABLE_COLUMNS",
    "AbSection",
    "ab_difference_table",
    "ab_figure",
    "ab_section",
    "ab_table",
]

# Each measure as the report shows it: its name, its unit in headers, and the factor from its own unit.
_SHOWN: dict[str, tuple[str, str, float]] = {
    "time_to_detect_s": ("time to detect", "ms", 1000.0),
    AB_TEST_MEASURE: ("time to recover from the fault's start", "ms", 1000.0),
    "requests_lost": ("requests lost", "requests", 1.0),
    # 1x: the fault alone spent all the error budget of the arm's requests (SLO.md, "Recovery measures")
    "budget_burned": ("error budget burned", TIMES, 1.0),
}
assert set(_SHOWN) == set(AB_MEASURES)

AB_TABLE_COLUMNS = (
    "fault kind",
    "remediation",
    "runs",
    "restarts",
    "not noticed",
    "not recovered by the end",
    *(f"{name} {part} ({unit})" for name, unit, _ in _SHOWN.values() for part in ("median", "IQR")),
    *(f"{name} n" for name, _, _ in _SHOWN.values()),
)
AB_DIFFERENCE_COLUMNS = (
    "fault kind",
    *(
        f"{name}: {part} ({unit})"
        for name, unit, _ in _SHOWN.values()
        for part in ("on \u2212 off", "interval")
    ),
    "verdict",
    "why",
)


def _number(value: Any, factor: float) -> float:
    return value * factor if isinstance(value, int | float) and math.isfinite(value) else math.nan


def _text_range(low: Any, high: Any, factor: float, unit: str) -> str:
    a, b = _number(low, factor), _number(high, factor)
    if math.isnan(a) or math.isnan(b):
        return MISSING
    digits = 0 if unit in ("ms", "requests") else 2
    return f"{a:.{digits}f} to {b:.{digits}f}"


def ab_table(run: RunData) -> ReportTable:
    """One row per fault kind and arm (off: the loop in dry run; on: it restarts): runs, restarts made,
    faults no request noticed, faults not recovered by the end (lower bounds), and per measure its median,
    interquartile range and count. Empty (with its columns) for a run that is not an A/B."""
    record = ab_record(run)
    if record is None:
        return ReportTable(columns=list(AB_TABLE_COLUMNS))
    rows = []
    for kind, result in record["kinds"].items():
        for side in ("off", "on"):
            arm = result["arms"][side]
            row: dict[str, Any] = {
                "fault kind": kind,
                "remediation": side,
                "runs": arm["runs"],
                "restarts": arm["remediation_actions"],
                "not noticed": arm["unnoticed"],
                "not recovered by the end": arm["censored"],
            }
            for measure, (name, unit, factor) in _SHOWN.items():
                s = arm["measures"][measure]
                row[f"{name} median ({unit})"] = _number(s["median"], factor)
                row[f"{name} IQR ({unit})"] = _text_range(s["low"], s["high"], factor, unit)
                row[f"{name} n"] = s["n"]
            rows.append(row)
    return ReportTable(rows, columns=list(AB_TABLE_COLUMNS))


def ab_difference_table(run: RunData) -> ReportTable:
    """One row per fault kind: per measure the difference of means on - off and its bootstrap interval,
    then the test's verdict (on the time to recover) and why. Empty for a run that is not an A/B."""
    record = ab_record(run)
    if record is None:
        return ReportTable(columns=list(AB_DIFFERENCE_COLUMNS))
    rows = []
    for kind, result in record["kinds"].items():
        row: dict[str, Any] = {"fault kind": kind}
        for measure, (name, unit, factor) in _SHOWN.items():
            d = result["differences"][measure]
            row[f"{name}: on \u2212 off ({unit})"] = _number(d["difference"], factor)
            row[f"{name}: interval ({unit})"] = _text_range(d["low"], d["high"], factor, unit)
        row["verdict"] = AB_VERDICT_TEXT.get(result["verdict"], result["verdict"])
        row["why"] = result["why"]
        rows.append(row)
    return ReportTable(rows, columns=list(AB_DIFFERENCE_COLUMNS))


def _points(record: dict[str, Any], kind: str, side: str, measure: str) -> list[float]:
    return [
        float(row[measure])
        for arm in record["arms"]
        if arm["kind"] == kind and (arm["remediation"] == (side == "on"))
        for row in arm["rows"]
        if isinstance(row.get(measure), int | float) and math.isfinite(row[measure])
    ]


def ab_figure(run: RunData) -> ReportFigure:
    """One panel per measure: each run of each arm as a point (the fault kind's colour and marker, hollow
    without remediation, filled with it), the arm's median as a bar, the count under each group."""
    record = ab_record(run)
    fig = ReportFigure(figsize=(12.0, 3.8), layout="constrained")
    fig.suptitle("Remediation A/B: every run of each arm, medians marked")
    axes = fig.subplots(1, len(_SHOWN), squeeze=False)[0]
    if record is None:
        fig.describe("note", "no data: the run has no remediation_ab.json (it is not an A/B)")
        for ax in axes:
            ax.set_axis_off()
        return fig
    groups = [(kind, side) for kind in record["kinds"] for side in ("off", "on")]
    for ax, (measure, (name, unit, factor)) in zip(axes, _SHOWN.items(), strict=True):
        ax.set_ylabel(f"{name} ({unit})", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        for x, (kind, side) in enumerate(groups):
            colour, marker = FAULT_STYLES.get(kind, ("0.5", "o"))
            values = np.asarray(_points(record, kind, side, measure)) * factor
            # a small fixed spread sideways, so that equal values stay visible as separate points
            offsets = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.plot(x + offsets, values, linestyle="none", marker=marker, markersize=7, color=colour,
                    markerfacecolor=colour if side == "on" else "white", gid=f"ab:{kind}:{side}")  # fmt: skip
            median = float(np.median(values)) if len(values) else math.nan
            if len(values):
                ax.hlines(
                    median, x - 0.3, x + 0.3, color="black", linewidth=2, gid=f"ab-median:{kind}:{side}"
                )
            ax.annotate(f"n={len(values)}", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                        textcoords="offset points", ha="center", fontsize=8, color="0.3")  # fmt: skip
            fig.describe(
                "Points",
                f"{name}, {kind} remediation {side}: {len(values)} run(s) as "
                f"{'filled' if side == 'on' else 'hollow'} {colour_name(colour)} points"
                + ("" if not len(values) else f", median {_format(median, unit)}"),
            )
        ax.set_xticks(range(len(groups)), [f"{kind}\n{side}" for kind, side in groups], fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.margins(y=0.12)
        ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    fig.describe("marks", "black bars: each arm's median")
    fig.describe(
        "note",
        "off: the remediation loop in dry run (restarts nothing); a fault no request noticed counts 0 ms to "
        "recover; one not recovered by the end counts to the end (a lower bound)",
    )
    fig.x_text = "fault kind and arm"
    return fig


def _format(value: float, unit: str) -> str:
    digits = 0 if unit in ("ms", "requests") else 2
    return f"{value:.{digits}f} {unit}"


class AbSection:
    """The A/B's section of the report as one block of HTML: heading, the test in words, the two tables,
    the figure."""

    def __init__(self, run: RunData, record: dict[str, Any]) -> None:
        self.run = run
        self.record = record

    def verdict_lines(self) -> list[str]:
        """`latency: helps (interval ...)`: one line per fault kind."""
        return [
            f"{kind}: {AB_VERDICT_TEXT.get(r['verdict'], r['verdict'])} ({r['why']})"
            for kind, r in self.record["kinds"].items()
        ]

    def _repr_html_(self) -> str:
        parts: list[Callable[[], str]] = [
            lambda: "<h2>Remediation A/B</h2>",
            lambda: _paragraph(
                f"{len(self.record['arms'])} experiments, {self.record['runs_per_arm']} per arm and fault "
                f"kind, run {self.record['order']}; {self.record['off_arm']}."
                + (
                    ""
                    if self.record.get("complete")
                    else " The A/B did not finish: these are its arms so far."
                )
            ),
            lambda: _paragraph(self.record["test"]["description"]),
            lambda: (
                "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in self.verdict_lines()) + "</ul>"
            ),
            lambda: ab_difference_table(self.run).to_html_for_people(),
            lambda: ab_table(self.run).to_html_for_people(),
            lambda: ab_figure(self.run)._repr_html_(),
        ]
        return "\n".join(part() for part in parts)


def _paragraph(text: str) -> str:
    return f'<p style="max-width:60em">{html.escape(text)}</p>'


def ab_section(run: RunData) -> AbSection | None:
    """The A/B section of the report, or None (nothing shown) for a run that is not an A/B."""
    record = ab_record(run)
    return None if record is None else AbSection(run, record)
