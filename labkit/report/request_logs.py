"""The report's table of failed requests and their log lines: for a bounded sample of the run's failed rows,
the request id the load generator sent (X-Request-ID), what the client saw, and the wrapper's and model
server's lines with that id, copied into the run when it ended (`labkit.measure.request_logs`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from labkit.measure.request_logs import LOGGED_SERVICES, failed_request_ids, read_request_logs
from labkit.report.data import RunData
from labkit.report.tables import ReportTable
from labkit.rundir import RunDirectory, RunFile

__all__ = ["FAILED_REQUEST_COLUMNS", "failed_requests_note", "failed_requests_table"]

logger = logging.getLogger(__name__)

FAILED_REQUEST_COLUMNS = ("request id", "t (s)", "client saw", *(f"{s} log" for s in LOGGED_SERVICES))
_CLIENT_TEXT = 200  # characters of the client's error text shown
_NO_LINE = "no line with this id"


def _line_time(line: dict[str, Any], run: RunData) -> str:
    try:
        wall = datetime.fromisoformat(str(line.get("time"))).timestamp()
    except ValueError:
        return "t ?"
    return f"t {run.t_s(wall):.2f} s"


def _describe(line: dict[str, Any], run: RunData) -> str:
    """One log line as a person reads it: when (on the run's clock), level, message, what failed."""
    parts = [_line_time(line, run), str(line.get("level", "?")), str(line.get("message", ""))]
    if line.get("error"):
        parts.append(str(line["error"]))
    return " · ".join(parts)


def _client_saw(row: Mapping[Any, Any]) -> str:
    text = f"{row['error_kind']}: {row['error']}" if row.get("error") else str(row.get("error_kind"))
    return text if len(text) <= _CLIENT_TEXT else text[: _CLIENT_TEXT - 1] + "\u2026"


def failed_requests_table(run: RunData) -> ReportTable:
    """One row per failed request of the sample the run kept lines of (`failed_request_ids`: a few of each
    error kind): its X-Request-ID, its intended send time on the run's clock, what the client saw, and each
    service's lines with that id (one per line of the cell). Empty when no request failed, or when the run
    kept no lines (a run made before labkit 0.2, a lab whose logs could not be read)."""
    if not run.path.joinpath(RunFile.REQUEST_LOGS).exists():
        return ReportTable(columns=list(FAILED_REQUEST_COLUMNS))
    problems: list[str] = []
    lines = read_request_logs(RunDirectory(run.path), problems)
    for problem in problems:
        logger.warning("%s: %s", run.path, problem)
    by_id: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in lines:
        by_id.setdefault((str(line.get("log")), str(line.get("request_id"))), []).append(line)
    chosen = failed_request_ids(run.samples)
    picked = run.samples[run.samples["x_request_id"].isin(chosen)] if chosen else run.samples.iloc[:0]
    samples = {str(r["x_request_id"]): r for r in picked.to_dict("records")}
    rows = []
    for request_id in chosen:
        sample = samples[request_id]
        row: dict[str, Any] = {
            "request id": request_id,
            "t (s)": run.t_s(float(sample["intended_send"])),
            "client saw": _client_saw(sample),
        }
        for service in LOGGED_SERVICES:
            found = by_id.get((service, request_id), [])
            row[f"{service} log"] = "\n".join(_describe(line, run) for line in found) or _NO_LINE
        rows.append(row)
    return ReportTable(rows, columns=list(FAILED_REQUEST_COLUMNS))


def failed_requests_note(run: RunData, table: ReportTable) -> str:
    """What the table shows, in a sentence generated from it (how many failed, how many shown, from where)."""
    failed = int((~run.samples["ok"].astype(bool)).sum()) if not run.samples.empty else 0
    if failed == 0:
        return "No request failed."
    if table.empty:
        return (
            f"{failed} requests failed; the run kept none of their log lines (a run made before labkit 0.2, "
            "or a lab whose logs could not be read when it ended)."
        )
    with_lines = sum(1 for _, row in table.iterrows() if any(row[c] != _NO_LINE for c in table.columns[3:]))
    return (
        f"{len(table)} of the {failed} failed requests (a few of each error kind), with the log lines that "
        f"carry their request id ({with_lines} have some): grep the id in the lab's logs "
        "(`labkit logs wrapper`) for more."
    )
