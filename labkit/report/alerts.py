"""The alerts of one run in its report: the table "fault -> page after N s (expected M s)" of the alert
measures (`labkit.report.alert_data`), a paragraph with the profile and window factor in force, and the alert
states and notifications on the run's clock. A run without alerts.jsonl (older runs, a lab without
Alertmanager) gets an empty table, and a figure that says what is missing.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pandas as pd

from labkit.measure.slo.rules import LONG_WINDOW_INTERVAL_S
from labkit.measure.slo.spec import parse_duration_s
from labkit.report.alert_data import alert_delays, alert_measures, alert_notifications, alert_profile_of
from labkit.report.data import RunData
from labkit.report.marks import (
    ALERT_COLOURS,
    ReportFigure,
    finish,
    new_figure,
    note_missing,
    seconds,
    state_spans,
)
from labkit.report.tables import TIMES, ReportTable
from labkit.rundir import RunFile

__all__ = ["ALERT_TABLE_COLUMNS", "alert_table", "alerting_note", "alerts_figure"]

ALERT_TABLE_COLUMNS = (
    "fault",
    "start (s)",
    "alert",
    "objective",
    "error ratio during fault (%)",
    "bad of events",
    "events/s",
    "expected page after (s)",
    "page after (s)",
    f"measured / expected ({TIMES})",
    "resolved after fault end (s)",
    "outcome",
    "why",
)


def _alert_text(row: pd.Series) -> str:
    return f"{row['severity']} {row['factor']:g}{TIMES} over {row['long_window']} & {row['short_window']}"


def alert_table(run: RunData, *, every: bool = False) -> ReportTable:
    """Per fault and alert pair: the error ratio the fault caused (with its counts), the expected time to
    page by the rules' arithmetic, the measured one (the first firing notification), their ratio, the
    resolved notification after the fault's end, the outcome (fired, missed, fired not expected, silent as
    expected) and why the arithmetic says so. Rows where the alert was silent as expected and the objective
    saw no bad event are left out unless `every`."""
    measures = alert_measures(run)
    if measures is None or not measures.measures:
        return ReportTable(columns=list(ALERT_TABLE_COLUMNS))
    frame = measures.frame()
    if not every:
        frame = frame[(frame["outcome"] != "silent, as expected") | (frame["bad_events"] > 0)]
    fired, expected = frame["fired_s"].astype(float), frame["expected_s"].astype(float)
    table = pd.DataFrame(
        {
            "fault": frame["kind"] + " " + frame["target"],
            "start (s)": frame["fault_start"].map(run.t_s).round(1),
            "alert": frame.apply(_alert_text, axis=1),
            "objective": frame["slo"] + ": " + frame["objective"],
            "error ratio during fault (%)": (frame["error_ratio"].astype(float) * 100).round(1),
            "bad of events": [
                f"{b} of {n}" for b, n in zip(frame["bad_events"], frame["events"], strict=True)
            ],
            "events/s": [f"{r:.1f}" for r in frame["rate_per_s"].astype(float)],
            "expected page after (s)": expected,
            "page after (s)": fired,
            f"measured / expected ({TIMES})": fired / expected,
            "resolved after fault end (s)": frame["resolved_after_end_s"].astype(float),
            "outcome": frame["outcome"],
            "why": frame["why"],
        }
    )
    return ReportTable(table[list(ALERT_TABLE_COLUMNS)].reset_index(drop=True))


def alerting_note(run: RunData) -> str:
    """A few lines (for print): the profile and window factor in force, the delays the expected times
    include, the pages without a fault, and how many rows the table leaves out."""
    notes = alert_notifications(run)
    profile = alert_profile_of(run, notes)
    said = (
        f"Alert profile {profile.name}: every window of the SRE Workbook's alerts divided by "
        f"{profile.window_divisor} (window factor 1/{profile.window_divisor})."
        if profile is not None
        else "Alert profile: not recorded by this run."
    )
    if notes is None:
        return f"{said} No alert notifications: the run has no {RunFile.ALERTS}."
    delays = alert_delays(run)
    measures = alert_measures(run)
    parts = [
        said,
        f"{len(notes)} notification(s) received.",
        f"Expected times add a scrape ({delays.scrape_interval_s:g} s), a rule evaluation "
        f"({delays.evaluation_interval_s:g} s) and Alertmanager's group_wait ({delays.group_wait_s:g} s).",
    ]
    if delays.long_windows:
        slow = sorted(delays.long_windows, key=parse_duration_s)
        parts.append(
            f"A ticket reading the {' or '.join(slow)} window adds {LONG_WINDOW_INTERVAL_S} s: the rules "
            f"recompute those windows every {LONG_WINDOW_INTERVAL_S} s."
        )
    if measures is not None:
        pages = measures.false_pages
        parts.append(
            f"{len(pages)} page(s) without a fault"
            + (": " + ", ".join(f"at {seconds(run.t_s(p.at))} s" for p in pages) if pages else "")
            + "."
        )
        quiet = sum(1 for m in measures.measures if m.outcome == "silent, as expected" and m.bad_events == 0)
        if quiet:
            parts.append(f"{quiet} alert pair(s) silent as expected with no bad event are not listed.")
    return "\n".join(textwrap.fill(part, width=100) for part in parts)


def alerts_figure(run: RunData) -> ReportFigure:
    """One row per alert that was pending or firing: Prometheus' states as bars (prometheus/alerts.csv:
    pending light, firing solid), and the notifications the lab received as markers (firing up, resolved
    down), with the faults and phases on the run's clock."""
    fig, (ax,) = new_figure(run, "Alerts: Prometheus' states and Alertmanager's notifications", ["alert"])
    frame = run.series.get("alerts")
    notes = alert_notifications(run) or []
    keys: list[tuple[str, str]] = []
    if frame is not None and not frame.empty and "alertstate" in frame.columns:
        frame = frame[frame["value"] > 0]
        keys += [(str(r["severity"]), _row_name(r)) for r in frame.to_dict("records")]
    keys += [(n.labels.get("severity", ""), _row_name(n.labels)) for n in notes]
    rows = sorted(dict.fromkeys(keys), key=lambda k: (k[0] != "page", k[1]))
    if not rows:
        note_missing(fig, ax, _why_no_alerts(run))
        return finish(fig, run)
    step = float((run.window or {}).get("step_s") or 1.0)
    for y, (severity, name) in enumerate(rows):
        colour = ALERT_COLOURS.get(severity, "0.4")
        if frame is not None and not frame.empty and "alertstate" in frame.columns:
            mine = frame[frame.apply(_row_name, axis=1) == name]
            for state, alpha in (("pending", 0.35), ("firing", 0.9)):
                times = mine.loc[mine["alertstate"] == state, "t_s"].to_numpy(float)
                for start, end in state_spans(times, step):
                    ax.broken_barh([(start, end - start)], (y - 0.3, 0.6), color=colour, alpha=alpha,
                                   gid=f"alert-state:{state}")  # fmt: skip
                    fig.describe("series", f"{name} {state} {seconds(start)} to {seconds(end)} s")
        for note in (n for n in notes if _row_name(n.labels) == name):
            at = run.t_s(note.received_unix)
            firing = note.status == "firing"
            ax.plot([at], [y], marker="^" if firing else "v", color=colour if firing else "black",
                    markersize=8, linestyle="none", gid=f"notification:{note.status}")  # fmt: skip
            fig.describe("marks", f"{name} {note.status} notification at {seconds(at)} s")
    ax.set_yticks(range(len(rows)), [name for _, name in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    fig.describe("note", "bars: Prometheus' ALERTS (pending light, firing solid); triangles: notifications "
                 "received (up: firing, down: resolved)")  # fmt: skip
    return finish(fig, run)


def _row_name(labels: Any) -> str:
    """`page 2m/10s availability: 99% ...` from an alert's labels (a mapping or a row of alerts.csv)."""
    get = labels.get
    return (
        f"{get('severity', '')} {get('long_window', '')}/{get('short_window', '')} "
        f"{get('slo', '')}: {get('objective', '')}"
    )


def _why_no_alerts(run: RunData) -> str:
    has_file = (run.path / RunFile.ALERTS).exists()
    has_series = "alerts" in run.series
    if has_file or has_series:
        return "no alert was pending or firing during the run"
    return (
        f"no {RunFile.ALERTS} and no prometheus/alerts.csv in this run (made before labkit collected alerts)"
    )
