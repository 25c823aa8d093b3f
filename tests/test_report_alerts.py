"""The report's alerts (labkit.report.alert_data, labkit.report.alerts) on a synthetic alerting run: 4
requests/s, a fault-free baseline, an error storm at 50 % for 60 s, a kill; the fast page firing and
resolved in alerts.jsonl and Prometheus' ALERTS in prometheus/alerts.csv. A run without alert data renders
too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labkit.measure.prom import save_series
from labkit.measure.slo.rules import alert_profile_record
from labkit.report import (
    ALERT_TABLE_COLUMNS,
    RunData,
    alert_table,
    alerting_note,
    alerts_figure,
    error_rate_figure,
    headline,
    index_entry,
    overview_table,
    summary,
)
from labkit.rundir import RunDirectory, RunFile
from tests.test_report_data import write_chaos_run

T0 = 1_800_000_000.0
RATE = 4.0
STORM = (120.0, 180.0)  # seconds into the method
KILL_AT = 200.0
END = 240.0
OBJECTIVE = "99% of valid requests succeed"
EXPECTED_PAGE_S = 120 * 0.144 / 0.5 + 3.0  # the baseline filled the 2 min long window with good events
PAGE_AT, RESOLVED_AT = STORM[0] + 38.0, STORM[1] + 14.0


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def _requests() -> list[dict[str, Any]]:
    rows = []
    for i in range(int(END * RATE)):
        t = i / RATE
        failed = (STORM[0] <= t < STORM[1] and i % 2 == 0) or KILL_AT <= t < KILL_AT + 1
        rows.append(
            {
                "intended_send": T0 + t,
                "actual_send": T0 + t,
                "status": 500 if failed else 200,
                "ok": not failed,
                "e2e_s": 0.05,
                "ttft_s": None if failed else 0.01,
                "itl_s": [] if failed else [0.005],
            }
        )
    return rows


def _notification(status: str, received: float, *, starts: float, fingerprint: str = "fast") -> dict:
    labels = {
        "alertname": "SloErrorBudgetBurnPage",
        "severity": "page",
        "slo": "availability",
        "objective": OBJECTIVE,
        "long_window": "2m",
        "short_window": "10s",
        "burn_factor": "14.4",
        "alert_profile": "lab",
        "window_scale": "1/30",
    }
    return {
        "alertname": "SloErrorBudgetBurnPage",
        "status": status,
        "labels": labels,
        "startsAt": _iso(starts),
        "endsAt": _iso(received) if status == "resolved" else "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
        "receiver": "lab",
        "received_at": _iso(received),
        "received_unix": received,
    }


def write_alerting_run(parent: Path, *, false_page: bool = False, firing_until: float | None = None) -> Path:
    run = RunDirectory.create(parent, "alerting", run_id="20270115T080000.00Z-alerting")
    with run.jsonl_writer(RunFile.REQUESTS) as write:
        for row in _requests():
            write(row)

    def event(kind: str, t: float, **fields: Any) -> None:
        run.append_jsonl(RunFile.EVENTS, {"kind": kind, "wall_time": T0 + t, **fields})

    event("method_started", 0.0)
    event("fault_start", STORM[0], fault_id="s", fault_kind="error", target="model", duration_s=60)
    event("fault_end", STORM[1], fault_id="s", fault_kind="error", target="model")
    event("fault_start", KILL_AT, fault_id="k", fault_kind="kill", target="model", duration_s=40)
    event("fault_end", KILL_AT, fault_id="k", fault_kind="kill", target="model", instantaneous=True)
    event("method_finished", END)
    run.write_json(
        RunFile.LAB,
        {
            "engine": "sim",
            "alert_profile": alert_profile_record("lab"),
            "scrape_interval_s": 1.0,
            "alertmanager_group_wait_s": 1.0,
        },
    )
    notes = [
        _notification("firing", T0 + PAGE_AT, starts=T0 + PAGE_AT - 1.2),
        _notification("resolved", T0 + RESOLVED_AT, starts=T0 + PAGE_AT - 1.2),
    ]
    if false_page:
        notes.insert(0, _notification("firing", T0 + 30.0, starts=T0 + 29.0, fingerprint="early"))
    for note in notes:
        run.append_jsonl(RunFile.ALERTS, note)
    until = RESOLVED_AT - 4 if firing_until is None else firing_until
    grid = [t for t in range(int(END)) if PAGE_AT - 1 <= t < until]
    alerts = pd.DataFrame(
        {
            "timestamp": pd.to_datetime([T0 + t for t in grid], unit="s", utc=True),
            "t_s": grid,
            "alertname": "SloErrorBudgetBurnPage",
            "alertstate": "firing",
            "severity": "page",
            "slo": "availability",
            "objective": OBJECTIVE,
            "long_window": "2m",
            "short_window": "10s",
            "value": 1.0,
        }
    )
    save_series(run.path, {"alerts": alerts})
    run.write_json(RunFile.WINDOW, {"start": T0, "end": T0 + END, "step_s": 1.0})
    return run.path


def test_the_table_says_page_after_n_s_expected_m_s(tmp_path: Path) -> None:
    run = RunData.load(write_alerting_run(tmp_path))
    table = alert_table(run)
    assert list(table.columns) == list(ALERT_TABLE_COLUMNS)
    storm = table[(table["fault"] == "error model") & (table["alert"] == "page 14.4\u00d7 over 2m & 10s")]
    row = storm[storm["objective"].str.startswith("availability")].iloc[0]
    assert row["page after (s)"] == pytest.approx(38.0)
    assert row["expected page after (s)"] == pytest.approx(EXPECTED_PAGE_S, rel=0.01)
    assert row["measured / expected (\u00d7)"] == pytest.approx(38.0 / EXPECTED_PAGE_S, rel=0.01)
    assert row["resolved after fault end (s)"] == pytest.approx(14.0)
    assert row["bad of events"] == "120 of 240" and row["error ratio during fault (%)"] == pytest.approx(50.0)
    assert row["outcome"] == "fired"
    html = table.to_html_for_people()
    assert "page after (s)" in html and "120 of 240" in html


def test_the_headline_the_note_and_the_index_carry_the_alert_numbers(tmp_path: Path) -> None:
    path = write_alerting_run(tmp_path / "runs", false_page=True)
    run = RunData.load(path)
    numbers = headline(run)
    assert numbers["time_to_page_s"] == pytest.approx(38.0) and numbers["false_pages"] == 1
    note = alerting_note(run)
    assert "Alert profile lab" in note and "1/30" in note and "1 page(s) without a fault: at 29.0 s" in note
    facts = dict(overview_table(run).itertuples(index=False))
    assert facts["time to page"] == "38.0 s" and facts["pages without a fault"] == "1"
    assert "alert profile <b>lab (windows / 30)</b>" in str(summary(run))
    entry = index_entry(path)
    assert entry.time_to_page.text == "38.0 s" and entry.false_pages.text == "1"
    assert entry.false_pages.tone == "bad"


def test_alert_states_are_drawn_on_the_sli_timelines_and_in_their_own_figure(tmp_path: Path) -> None:
    run = RunData.load(write_alerting_run(tmp_path))
    errors = error_rate_figure(run)
    (ax,) = errors.axes
    assert any(p.get_gid() == "alert:page:firing" for p in ax.patches)
    assert (
        f"page alert firing from {PAGE_AT - 1:.1f} s, resolved at {RESOLVED_AT - 4:.1f} s" in errors.caption
    )
    # ALERTS has samples only while an alert is active: one still active when the series end is not resolved.
    still = error_rate_figure(RunData.load(write_alerting_run(tmp_path / "still", firing_until=END)))
    assert f"page alert firing from {PAGE_AT - 1:.1f} s, still firing when the series end" in still.caption
    assert "resolved at" not in still.caption
    figure = alerts_figure(run)
    (ax,) = figure.axes
    gids = {a.get_gid() for a in [*ax.collections, *ax.lines]}
    assert {"alert-state:firing", "notification:firing", "notification:resolved"} <= gids
    assert f"resolved notification at {RESOLVED_AT:.1f} s" in figure.caption


def test_a_run_without_alert_data_renders_and_says_so(tmp_path: Path) -> None:
    run = RunData.load(write_chaos_run(tmp_path))
    assert alert_table(run).empty and list(alert_table(run).columns) == list(ALERT_TABLE_COLUMNS)
    assert headline(run)["time_to_page_s"] is None and headline(run)["false_pages"] is None
    assert "no alerts.jsonl" in alerting_note(run)
    figure = alerts_figure(run)
    assert "no data: no alerts.jsonl and no prometheus/alerts.csv" in figure.caption
    assert "alert profile <b>not recorded</b>" in str(summary(run))


def test_the_v1_runs_still_render_their_alert_parts() -> None:
    for path in sorted((Path(__file__).parent / "data" / "runs_v1").iterdir()):
        run = RunData.load(path)
        assert alert_table(run).empty and headline(run)["false_pages"] is None
        assert alerts_figure(run).svg().startswith("<?xml")
