"""Exact SLIs from the load generator's client samples (one row per request): which events each SLO
objective counts, which are good, and which requests meet every SLO (goodput).

Mapping (client side; latencies are measured from each request's intended send time):
- availability (ratio SLO on llm_requests_total): valid = every request except 4xx other than 429 (the
  client's fault); good = valid and `ok`. 429, 5xx and status 0 (no response) are bad.
- llm_time_to_first_token_seconds: one event per ok request with a first token, good if ttft_s <= T.
- llm_request_duration_seconds: one event per ok request, good if e2e_s <= T (the server's histogram
  observes successful requests only; failures count against availability).
- llm_inter_token_latency_seconds: one event per gap in itl_s of ok requests, good if gap <= T.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labkit.errors import LabkitError
from labkit.measure.promql import metric_name
from labkit.measure.slo.rules import counter_selectors
from labkit.measure.slo.spec import Objective, SloDefinition, SloSpecError

__all__ = [
    "CLIENT_SLI_COLUMNS",
    "SamplesError",
    "completion_times",
    "count_events",
    "error_ratios_by_window",
    "objective_events",
    "read_samples",
    "requests_meeting_every_slo",
    "run_span",
    "samples_frame",
    "time_slice_events",
    "valid_requests",
]

logger = logging.getLogger(__name__)

# The server metric an SLO is about -> the client sample column that measures the same thing.
CLIENT_SLI_COLUMNS: dict[str, str] = {
    "llm_requests_total": "ok",
    "llm_time_to_first_token_seconds": "ttft_s",
    "llm_request_duration_seconds": "e2e_s",
    "llm_inter_token_latency_seconds": "itl_s",
}
_ALWAYS_REQUIRED = ("intended_send", "status", "ok")


class SamplesError(LabkitError):
    """The client samples (requests.jsonl) are missing or malformed."""


def read_samples(path: Path) -> pd.DataFrame:
    """Rows of a JSON Lines file of client samples; a torn last line (a crash mid-write) is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SamplesError(f"no client samples at {path}; run the load generator with --out first") from exc
    except OSError as exc:
        raise SamplesError(f"cannot read client samples {path}: {exc}") from exc
    lines = text.split("\n")
    if lines and lines[-1]:
        logger.warning("%s: skipping a torn last line (%d characters)", path, len(lines[-1]))
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SamplesError(f"{path}:{number}: not a JSON object: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise SamplesError(f"{path}:{number}: each line must be a JSON object, got {type(row).__name__}")
        rows.append(row)
    if not rows:
        raise SamplesError(f"{path} holds no complete rows; nothing to judge")
    return samples_frame(rows)


def _gaps(value: Any) -> list[float]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if not isinstance(value, list | tuple | np.ndarray):
        raise SamplesError(f"itl_s must be a list of seconds, got {value!r}")
    return [float(v) for v in value]


def samples_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """A copy of the samples with the types the SLO engine relies on: float times (NaN for missing),
    int status, bool ok, and itl_s as a list of floats (empty when missing)."""
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in _ALWAYS_REQUIRED if c not in frame.columns]
    if missing:
        raise SamplesError(f"client samples lack column(s) {', '.join(missing)}")
    try:
        for column in ("intended_send", "actual_send", "ttft_s", "e2e_s", "queue_delay_s"):
            if column in frame.columns:
                frame[column] = pd.to_numeric(frame[column], errors="raise").astype(float)
        frame["status"] = pd.to_numeric(frame["status"].fillna(0), errors="raise").astype(int)
    except (ValueError, TypeError) as exc:
        raise SamplesError(f"client samples have a non-numeric time or status: {exc}") from exc
    if frame["intended_send"].isna().any():
        raise SamplesError("every client sample needs an intended_send time")
    frame["ok"] = frame["ok"].map(lambda v: v is True or v == 1).astype(bool)
    if "itl_s" in frame.columns:
        frame["itl_s"] = frame["itl_s"].map(_gaps)
    return frame


def _require(frame: pd.DataFrame, column: str, slo: SloDefinition) -> None:
    if column not in frame.columns:
        raise SamplesError(f"client samples lack column {column!r}, which SLO {slo.name!r} needs")


def _sample_column(slo: SloDefinition) -> str:
    metric = slo.metric if slo.indicator == "threshold" else metric_name(counter_selectors(slo)[0])
    if metric not in CLIENT_SLI_COLUMNS:
        raise SloSpecError(
            f"SLO {slo.name!r} (spec line {slo.line}) is about {metric!r}, which client samples do not "
            f"measure; they measure {', '.join(CLIENT_SLI_COLUMNS)}"
        )
    return CLIENT_SLI_COLUMNS[metric]


def valid_requests(frame: pd.DataFrame) -> pd.Series:
    """Requests that count for availability: all but 4xx other than 429 (those are the client's fault)."""
    status = frame["status"]
    return ~((status >= 400) & (status < 500) & (status != 429))


def completion_times(frame: pd.DataFrame) -> pd.Series:
    """When each request ended (intended send + end-to-end latency), or its intended send time when it has
    no end-to-end latency (no response at all)."""
    if "e2e_s" not in frame.columns:
        return frame["intended_send"].astype(float)
    return (frame["intended_send"] + frame["e2e_s"]).fillna(frame["intended_send"]).astype(float)


def run_span(frame: pd.DataFrame) -> tuple[float, float]:
    """(first intended send, last completion) of the run, unix seconds."""
    return float(frame["intended_send"].min()), float(completion_times(frame).max())


def objective_events(frame: pd.DataFrame, slo: SloDefinition, objective: Objective) -> pd.DataFrame:
    """One row per event the objective counts: `time` (unix s, when the event happened) and `good` (bool)."""
    column = _sample_column(slo)
    if column == "ok":
        valid = valid_requests(frame)
        return pd.DataFrame(
            {
                "time": completion_times(frame)[valid].to_numpy(float),
                "good": frame["ok"][valid].to_numpy(bool),
            }
        )
    _require(frame, column, slo)
    threshold = float(objective.value or 0.0)
    ok = frame[frame["ok"] & valid_requests(frame)]
    if column == "itl_s":
        starts = ok["intended_send"] + (ok["ttft_s"].fillna(0.0) if "ttft_s" in ok.columns else 0.0)
        times: list[float] = []
        gaps: list[float] = []
        for start, request_gaps in zip(starts.to_numpy(float), ok["itl_s"], strict=True):
            # The end of each gap: the first token, then each gap after it.
            times.extend((start + np.cumsum(request_gaps)).tolist())
            gaps.extend(request_gaps)
        values = np.asarray(gaps, dtype=float)
        return pd.DataFrame({"time": np.asarray(times, dtype=float), "good": values <= threshold})
    measured = ok[ok[column].notna()]
    values = measured[column].to_numpy(float)
    return pd.DataFrame(
        {"time": (measured["intended_send"].to_numpy(float) + values), "good": values <= threshold}
    )


def time_slice_events(
    events: pd.DataFrame, *, start: float, slice_s: float, slice_target: float
) -> pd.DataFrame:
    """OpenSLO Timeslices: the `objective_events` frame turned into one event per slice of `slice_s` seconds
    from `start` that holds events, timed at the slice's end, good when the slice's ratio of good events
    reaches `slice_target`. A slice without events is left out: no traffic is no data, not good or bad."""
    if events.empty:
        return events
    index = np.floor((events["time"].to_numpy(float) - start) / slice_s).astype(int)
    ratios = events["good"].astype(float).groupby(index).mean()
    return pd.DataFrame(
        {
            "time": start + (ratios.index.to_numpy(float) + 1.0) * slice_s,
            "good": ratios.to_numpy(float) >= slice_target,
        }
    )


def count_events(events: pd.DataFrame) -> tuple[int, int]:
    """(good, valid) of an `objective_events` frame."""
    return int(events["good"].sum()), len(events)


def error_ratios_by_window(
    events: pd.DataFrame, windows_s: Mapping[str, float], end: float
) -> dict[str, float]:
    """Error ratio of the events in each trailing window (end - w, end]; 0.0 for a window with no events
    (no traffic, no burn)."""
    ratios = {}
    times = events["time"].to_numpy(float)
    good = events["good"].to_numpy(bool)
    for name, seconds in windows_s.items():
        inside = (times > end - seconds) & (times <= end)
        valid = int(inside.sum())
        ratios[name] = 0.0 if valid == 0 else (valid - int(good[inside].sum())) / valid
    return ratios


def requests_meeting_every_slo(frame: pd.DataFrame, slos: Sequence[SloDefinition]) -> pd.Series:
    """Per request, whether it met every objective of every SLO (the numerator of goodput):
    valid and ok; each TTFT / end-to-end threshold met; and for inter-token latency, the request's share
    of gaps within the threshold at least that objective's target. (Every gap within the threshold would
    fail a request for one stutter of a 64-token stream, which the SLO itself tolerates.) A request is
    judged like its SLIs count it: a latency it has no measurement of (no first token, no gaps: e.g. a
    request that did not stream) is not held against it."""
    meets = frame["ok"] & valid_requests(frame)
    for slo in slos:
        column = _sample_column(slo)
        if column == "ok":
            continue
        _require(frame, column, slo)
        for objective in slo.objectives:
            threshold = float(objective.value or 0.0)
            if column == "itl_s":
                shares = frame["itl_s"].map(
                    lambda gaps, t=threshold: 1.0 if not gaps else float(np.mean(np.asarray(gaps) <= t))
                )
                meets &= shares >= objective.target
            else:
                meets &= frame[column].isna() | frame[column].le(threshold)
    return meets.astype(bool)
