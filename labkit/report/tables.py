"""Tables of one run for its SLO report (pandas DataFrames, ready to display) and its headline numbers.

Percentages are in percent (0-100) and say so in the column name; times are seconds. A table the run
has no data for is empty with its columns; `RunData.missing` says why.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from labkit.errors import LabkitError
from labkit.measure.slo import (
    SloReport,
    evaluate_client_slos,
    exact_quantile,
    load_slo_spec,
    valid_requests,
)
from labkit.report.data import RunData

__all__ = [
    "CLIENT_SERVER_COLUMNS",
    "HEADLINE_KEYS",
    "RECOVERY_TABLE_COLUMNS",
    "SLO_TABLE_COLUMNS",
    "client_server_table",
    "headline",
    "overview_table",
    "recovery_table",
    "slo_report",
    "slo_table",
]

logger = logging.getLogger(__name__)

SLO_TABLE_COLUMNS = (
    "SLO",
    "objective",
    "SLI (%)",
    "target (%)",
    "verdict",
    "budget consumed (%)",
    "SLO window (d)",
    "good",
    "valid",
)
CLIENT_SERVER_COLUMNS = (
    "SLO",
    "objective",
    "client SLI (%)",
    "server SLI (%)",
    "difference (points)",
    "client p95 (s)",
    "server p95 (s)",
    "server bucket (s)",
    "explanation",
)
RECOVERY_TABLE_COLUMNS = (
    "fault",
    "kind",
    "target",
    "start (s)",
    "end (s)",
    "time to detect (s)",
    "time to recover (s)",
    "requests lost",
    "requests slow",
    "outcome",
)
HEADLINE_KEYS = ("availability", "e2e_p95_s", "ttft_p95_s", "requests", "verdict")


def _percent(value: Any, digits: int = 3) -> float:
    """A ratio as a percentage rounded to `digits` decimals; NaN for no value."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return math.nan
    return round(float(value) * 100, digits)


def slo_report(run: RunData) -> SloReport | None:
    """The run's SLO report: slo.json when present and valid, else judged now from its samples against
    the default spec (`evaluate_client_slos`); None when the run has neither."""
    if run.slo is not None:
        try:
            return SloReport.model_validate(run.slo)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            logger.warning(
                "%s/slo.json is not an SLO report (%s); judging the samples instead", run.path, exc
            )
    if run.samples.empty:
        return None
    try:
        return evaluate_client_slos(run.samples, load_slo_spec())
    except LabkitError as exc:
        logger.warning("cannot judge the samples of %s: %s", run.path, exc)
        return None


def slo_table(run: RunData) -> pd.DataFrame:
    """One row per SLO objective: SLO, objective, SLI and target (%), verdict (met / violated / no data),
    the share of the SLO window's error budget the run's bad events consumed (%), that window (days; 30
    in the lab's spec), and the good and valid event counts."""
    report = slo_report(run)
    if report is None:
        return pd.DataFrame(columns=list(SLO_TABLE_COLUMNS))
    rows = [
        {
            "SLO": r.slo_display_name,
            "objective": r.objective,
            "SLI (%)": _percent(r.sli),
            "target (%)": _percent(r.target),
            "verdict": "no data" if r.met is None else "met" if r.met else "violated",
            "budget consumed (%)": _percent(r.budget_consumed, 4),
            "SLO window (d)": r.slo_window_s / 86400,
            "good": r.good,
            "valid": r.valid,
        }
        for r in report.results
    ]
    return pd.DataFrame(rows, columns=list(SLO_TABLE_COLUMNS))


def _bucket(lower: Any, upper: Any) -> str:
    if not isinstance(lower, int | float) or math.isnan(lower):
        return ""
    return f"({lower:g}, {upper:g}]" if math.isfinite(upper) else f"above {lower:g}"


def client_server_table(run: RunData) -> pd.DataFrame:
    """Client-side and server-side SLI of each objective side by side (from client_vs_server.csv), their
    difference in percentage points (client - server), each side's p95 where the SLO is a latency one
    with the server bucket it was interpolated in, and the explanation of the difference."""
    frame = run.client_vs_server
    if frame is None or frame.empty:
        return pd.DataFrame(columns=list(CLIENT_SERVER_COLUMNS))
    table = pd.DataFrame(
        {
            "SLO": frame["slo"],
            "objective": frame["objective"],
            "client SLI (%)": frame["client_sli"].map(_percent),
            "server SLI (%)": frame["server_sli"].map(_percent),
            "difference (points)": frame["difference"].map(_percent),
            "client p95 (s)": frame["client_quantile_s"],
            "server p95 (s)": frame["server_quantile_s"],
            "server bucket (s)": [
                _bucket(lo, up)
                for lo, up in zip(frame["server_bucket_lower_s"], frame["server_bucket_upper_s"], strict=True)
            ],
            "explanation": frame["explanation"],
        }
    )
    return table[list(CLIENT_SERVER_COLUMNS)]


def _outcome(row: pd.Series) -> str:
    if pd.isna(row["time_to_detect_s"]):
        return "not noticed"
    if pd.isna(row["time_to_recover_s"]):
        return "not recovered by the end of the run"
    return "recovered"


def recovery_table(run: RunData) -> pd.DataFrame:
    """Per fault (labkit.measure.recovery definitions): kind, target, start and end (s since the run's start),
    time to detect and to recover (s), requests lost and slow, and the outcome: `not noticed` (no bad
    request, so no detection or recovery time), `recovered`, or `not recovered by the end of the run`."""
    measures = run.recovery
    if measures.empty:
        return pd.DataFrame(columns=list(RECOVERY_TABLE_COLUMNS))
    numbers = measures.astype({c: float for c in ("start", "end", "time_to_detect_s", "time_to_recover_s")})
    table = pd.DataFrame(
        {
            "fault": numbers["fault_id"].astype(str),
            "kind": numbers["kind"],
            "target": numbers["target"],
            "start (s)": (numbers["start"] - (run.start or 0.0)).round(2),
            "end (s)": (numbers["end"] - (run.start or 0.0)).round(2),
            "time to detect (s)": numbers["time_to_detect_s"].round(2),
            "time to recover (s)": numbers["time_to_recover_s"].round(2),
            "requests lost": numbers["requests_lost"].astype(int),
            "requests slow": numbers["requests_slow"].astype(int),
            "outcome": numbers.apply(_outcome, axis=1),
        }
    )
    return table[list(RECOVERY_TABLE_COLUMNS)]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def headline(run: RunData) -> dict[str, Any]:
    """The run in five numbers (`HEADLINE_KEYS`), for run.json and the index:
    `availability` (0-1: ok / valid requests, client side), `e2e_p95_s` and `ttft_p95_s` (exact nearest-rank
    p95 of successful valid requests, seconds), `requests` (client samples) and `verdict` (`RunData.verdict`).
    Without samples, availability and requests come from slo.json when it has them; None where unknown."""
    samples = run.samples
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
            "verdict": run.verdict,
        }
    report = slo_report(run)
    ratio = next((r for r in report.results if r.indicator == "ratio"), None) if report else None
    return {
        "availability": ratio.sli if ratio else None,
        "e2e_p95_s": None,
        "ttft_p95_s": None,
        "requests": report.requests if report else None,
        "verdict": run.verdict,
    }


def overview_table(run: RunData) -> pd.DataFrame:
    """The run at a glance, one row per fact (what ran, when, with which parameters, and the headline),
    formatted for people: percentages, milliseconds, "-" where unknown."""
    numbers = headline(run)

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f} ms"

    parameters = run.info.get("parameters") or {}
    started = run.info.get("started_at") or (
        None if run.start is None else datetime.fromtimestamp(run.start, UTC).isoformat(timespec="seconds")
    )
    rows = [
        ("run", run.run_id),
        ("scenario", run.scenario or "-"),
        ("started (UTC)", started or "-"),
        ("status", run.status or "-"),
        ("verdict", run.verdict or "-"),
        ("requests", "-" if numbers["requests"] is None else str(numbers["requests"])),
        ("availability", "-" if numbers["availability"] is None else f"{numbers['availability']:.2%}"),
        ("p95 end-to-end", ms(numbers["e2e_p95_s"])),
        ("p95 time to first token", ms(numbers["ttft_p95_s"])),
        ("parameters", ", ".join(f"{k}={v}" for k, v in sorted(parameters.items())) or "-"),
    ]
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")
