"""Tables of one run for its SLO report and its headline numbers. Each table is a `ReportTable`: a pandas
DataFrame of numbers whose notebook display is for people (no index column, units in the headers, numbers
rounded by unit, a dash for missing, long text whole).

Percentages are in percent (0-100), latencies and durations under a run's length in milliseconds, times
on the run's clock in seconds; each column name says which. A table the run has no data for is empty with its
columns; `RunData.missing` says why.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from labkit.measure.slo import (
    SloReport,
    exact_quantile,
    valid_requests,
)
from labkit.report.ab_data import AB_HEADLINE_KEYS, ab_headline
from labkit.report.alert_data import alerting_headline
from labkit.report.capacity_data import CAPACITY_HEADLINE_KEYS, capacity_headline
from labkit.report.data import RunData

__all__ = [
    "CLIENT_SERVER_COLUMNS",
    "HEADLINE_KEYS",
    "RECOVERY_TABLE_COLUMNS",
    "SLO_TABLE_COLUMNS",
    "ReportTable",
    "client_server_table",
    "format_ms",
    "headline",
    "overview_table",
    "recovery_table",
    "slo_report",
    "slo_table",
]

logger = logging.getLogger(__name__)

MISSING = "\u2013"  # an en dash: a value that is not known
TIMES = "\u00d7"  # a multiplication sign: a burn rate
SLO_TABLE_COLUMNS = (
    "SLO",
    "objective",
    "SLI (%)",
    "target (%)",
    "verdict",
    f"burn rate ({TIMES})",
    "budget consumed (% of 30 d)",
    "good",
    "valid",
)
CLIENT_SERVER_COLUMNS = (
    "SLO",
    "objective",
    "client SLI (%)",
    "server SLI (%)",
    "difference (points)",
    "client p95 (ms)",
    "server p95 (ms)",
    "server bucket (ms)",
    "explanation",
)
RECOVERY_TABLE_COLUMNS = (
    "fault",
    "kind",
    "target",
    "start (s)",
    "end (s)",
    "time to detect (ms)",
    "time to recover (ms)",
    "requests lost",
    "requests slow",
    "outcome",
)


def format_ms(seconds: Any) -> str:
    """A duration in seconds as a person reads it: milliseconds under 10 s, seconds above; a dash for none."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return MISSING
    return f"{seconds * 1000:.0f} ms" if abs(seconds) < 10 else f"{seconds:.1f} s"


def _format_for(column: str, values: pd.Series) -> Any:
    """How a column's numbers are written, from the unit in its header."""
    if column.endswith("(% of 30 d)"):
        return "{:.2g}"
    if column.endswith(("(%)", "(points)")):
        return "{:.2f}"
    if column.endswith(f"({TIMES})"):
        return "{:.2f}" + TIMES
    if column.endswith("(ms)"):
        return "{:.0f}"
    if column.endswith("(req/s)"):
        return "{:.3g}"
    if column.endswith("(s)"):
        return "{:.2f}"
    if pd.api.types.is_float_dtype(values) and values.dropna().apply(float.is_integer).all():
        return "{:.0f}"
    return None


class ReportTable(pd.DataFrame):
    """A DataFrame of numbers that displays for people: no index column, each number rounded by the unit in
    its header, a dash for missing, text whole (pandas would cut it at 50 characters)."""

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame  # a frame derived from a table is a plain frame

    def to_html_for_people(self) -> str:
        frame = pd.DataFrame(self)
        styler = frame.style.hide(axis="index").format(na_rep=MISSING, escape="html")
        for column in frame.columns:
            fmt = _format_for(str(column), frame[column])
            if fmt is not None and pd.api.types.is_numeric_dtype(frame[column]):
                styler = styler.format(fmt, subset=[column], na_rep=MISSING, escape="html")
        styler = styler.set_table_attributes('class="labkit-table"').set_table_styles(
            [
                # pre-line: a cell of several lines (a request's log lines) shows them one under another.
                {
                    "selector": "td",
                    "props": "text-align: left; vertical-align: top; max-width: 40em; white-space: pre-line;",
                },
                {"selector": "th", "props": "text-align: left;"},
            ]
        )
        return styler.to_html()

    def _repr_html_(self) -> str:  # type: ignore[override]
        return self.to_html_for_people()


HEADLINE_KEYS = (
    "availability",
    "e2e_p95_s",
    "ttft_p95_s",
    "requests",
    "verdict",
    "steady_state",
    "slos",
    "time_to_page_s",
    "false_pages",
    *AB_HEADLINE_KEYS,
    *CAPACITY_HEADLINE_KEYS,
)


def _percent(value: Any, digits: int = 3) -> float:
    """A ratio as a percentage rounded to `digits` decimals; NaN for no value."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return math.nan
    return round(float(value) * 100, digits)


def slo_report(run: RunData) -> SloReport | None:
    """The run's SLO report (`RunData.judged_slos`): slo.json when present and valid, else judged from its
    samples against the default spec; None when the run has neither."""
    return run.judged_slos


def slo_table(run: RunData) -> ReportTable:
    """One row per SLO objective: SLO, objective, SLI and target (%), verdict (met / violated / no data),
    the burn rate (error ratio / error budget: 1 spends the budget exactly in the SLO window), the share
    of the 30-day window's error budget the run's bad events consumed (%), and the good and valid counts."""
    report = slo_report(run)
    if report is None:
        return ReportTable(columns=list(SLO_TABLE_COLUMNS))
    rows = [
        {
            "SLO": r.slo_display_name,
            "objective": r.objective,
            "SLI (%)": _percent(r.sli),
            "target (%)": _percent(r.target),
            "verdict": "no data" if r.met is None else "met" if r.met else "violated",
            f"burn rate ({TIMES})": r.burn_rate if r.met is not None else math.nan,
            "budget consumed (% of 30 d)": _percent(r.budget_consumed, 6),
            "good": r.good,
            "valid": r.valid,
        }
        for r in report.results
    ]
    return ReportTable(rows, columns=list(SLO_TABLE_COLUMNS))


def _bucket(lower: Any, upper: Any) -> str:
    if not isinstance(lower, int | float) or math.isnan(lower):
        return MISSING
    return f"({lower * 1000:g}, {upper * 1000:g}]" if math.isfinite(upper) else f"above {lower * 1000:g}"


def client_server_table(run: RunData) -> ReportTable:
    """Client-side and server-side SLI of each objective side by side (from client_vs_server.csv), their
    difference in percentage points (client - server), each side's p95 where the SLO is a latency one
    with the server bucket it was interpolated in, and the explanation of the difference."""
    frame = run.client_vs_server
    if frame is None or frame.empty:
        return ReportTable(columns=list(CLIENT_SERVER_COLUMNS))
    table = ReportTable(
        {
            "SLO": frame["slo"],
            "objective": frame["objective"],
            "client SLI (%)": frame["client_sli"].map(_percent),
            "server SLI (%)": frame["server_sli"].map(_percent),
            "difference (points)": frame["difference"].map(_percent),
            "client p95 (ms)": frame["client_quantile_s"] * 1000,
            "server p95 (ms)": frame["server_quantile_s"] * 1000,
            "server bucket (ms)": [
                _bucket(lo, up)
                for lo, up in zip(frame["server_bucket_lower_s"], frame["server_bucket_upper_s"], strict=True)
            ],
            "explanation": frame["explanation"],
        }
    )
    return ReportTable(table[list(CLIENT_SERVER_COLUMNS)])


def _outcome(row: pd.Series) -> str:
    if pd.isna(row["time_to_detect_s"]):
        return "not noticed"
    if pd.isna(row["time_to_recover_s"]):
        return "not recovered by the end of the run"
    return "recovered"


def recovery_table(run: RunData) -> ReportTable:
    """Per fault (labkit.measure.recovery definitions): kind, target, start and end (s since the run's start),
    time to detect and to recover (s), requests lost and slow, and the outcome: `not noticed` (no bad
    request, so no detection or recovery time), `recovered`, or `not recovered by the end of the run`."""
    measures = run.recovery
    if measures.empty:
        return ReportTable(columns=list(RECOVERY_TABLE_COLUMNS))
    numbers = measures.astype({c: float for c in ("start", "end", "time_to_detect_s", "time_to_recover_s")})
    table = pd.DataFrame(
        {
            "fault": numbers["fault_id"].astype(str),
            "kind": numbers["kind"],
            "target": numbers["target"],
            "start (s)": numbers["start"].map(run.t_s).round(2),
            "end (s)": numbers["end"].map(run.t_s).round(2),
            "time to detect (ms)": (numbers["time_to_detect_s"] * 1000).round(0),
            "time to recover (ms)": (numbers["time_to_recover_s"] * 1000).round(0),
            "requests lost": numbers["requests_lost"].astype(int),
            "requests slow": numbers["requests_slow"].astype(int),
            "outcome": numbers.apply(_outcome, axis=1),
        }
    )
    return ReportTable(table[list(RECOVERY_TABLE_COLUMNS)])


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def headline(run: RunData) -> dict[str, Any]:
    """The run in a few numbers and words (`HEADLINE_KEYS`), for run.json and the index:
    `availability` (0-1: ok / valid requests, client side), `e2e_p95_s` and `ttft_p95_s` (exact nearest-rank
    p95 of successful valid requests, seconds), `requests` (client samples), `verdict` (`RunData.verdict`),
    `steady_state` (the experiment's verdict) and `slos` (the SLOs' verdict; judged from the samples when
    slo.json is missing), `time_to_page_s` and `false_pages` (labkit.report.alert_data: from the first fault
    that should page to its first page, seconds; pages without a fault), the capacity search's
    `max_rate_meeting_slos` with `_low`, `_high` and `limiting_slo` (labkit.report.capacity_data; requests/s),
    and for a remediation A/B `ab_verdicts` and `mttr_difference_s` with `_low_s`, `_high_s`, per fault kind
    (labkit.report.ab_data). Without samples, availability and requests come from slo.json; None: unknown (no
    alerts.jsonl: no alert numbers; no capacity.json: no capacity)."""
    samples = run.samples
    report = slo_report(run)
    words = {
        "verdict": run.verdict,
        "steady_state": run.experiment_verdict,
        "slos": run.slo_verdict or (report.verdict if report else None),
        **alerting_headline(run),
        **capacity_headline(run),
        **ab_headline(run),
    }
    if not samples.empty:
        valid = valid_requests(samples)
        good = samples[samples["ok"] & valid]
        availability = float(good.shape[0] / valid.sum()) if valid.any() else None
        quantiles = {
            column: _finite_or_none(exact_quantile(good[column].dropna(), 0.95)) if column in good else None
            for column in ("e2e_s", "ttft_s")
        }
        return {
            "availability": availability,
            "e2e_p95_s": quantiles["e2e_s"],
            "ttft_p95_s": quantiles["ttft_s"],
            "requests": len(samples),
            **words,
        }
    ratio = next((r for r in report.results if r.indicator == "ratio"), None) if report else None
    return {
        "availability": ratio.sli if ratio else None,
        "e2e_p95_s": None,
        "ttft_p95_s": None,
        "requests": report.requests if report else None,
        **words,
    }


def _capacity_text(numbers: dict[str, Any]) -> str:
    value = numbers.get("max_rate_meeting_slos")
    if not isinstance(value, int | float):
        return MISSING
    ends = [
        MISSING if not isinstance(v, int | float) else f"{v:.3g}"
        for v in (numbers.get("max_rate_meeting_slos_low"), numbers.get("max_rate_meeting_slos_high"))
    ]
    limiting = numbers.get("limiting_slo") or MISSING
    return f"{value:.3g} requests/s [{ends[0]} to {ends[1]}], limiting: {limiting}"


def overview_table(run: RunData) -> ReportTable:
    """The run at a glance, one row per fact (what ran, when, with which parameters, and the headline),
    formatted for people: percentages, milliseconds, a dash where unknown, every parameter."""
    numbers = headline(run)
    parameters = run.info.get("parameters") or {}
    started = run.info.get("started_at") or (
        None if run.start is None else datetime.fromtimestamp(run.start, UTC).isoformat(timespec="seconds")
    )
    rows = [
        ("run", run.run_id),
        ("scenario", run.scenario or MISSING),
        ("started (UTC)", started or MISSING),
        ("status", run.status or MISSING),
        ("steady state", run.experiment_verdict or MISSING),
        ("SLOs", run.slo_verdict or MISSING),
        ("requests", MISSING if numbers["requests"] is None else str(numbers["requests"])),
        ("availability", MISSING if numbers["availability"] is None else f"{numbers['availability']:.2%}"),
        ("p95 end-to-end", format_ms(numbers["e2e_p95_s"])),
        ("p95 time to first token", format_ms(numbers["ttft_p95_s"])),
        ("time to page", format_ms(numbers["time_to_page_s"])),
        ("pages without a fault", MISSING if numbers["false_pages"] is None else str(numbers["false_pages"])),
        ("max rate meeting the SLOs", _capacity_text(numbers)),
        ("parameters", ", ".join(f"{k}={v}" for k, v in sorted(parameters.items())) or MISSING),
    ]
    return ReportTable(rows, columns=["fact", "value"])
