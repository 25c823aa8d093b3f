"""Judge a run against the SLO spec from its client samples: per objective the SLI, burn rate, budget
remaining and consumed (against the SLO window, 30 days), scaled burn-rate alerts, goodput, and a verdict
that is written to the run directory as slo.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

import labkit.measure.slo.budget as budget
from labkit.measure.slo.alerts import AlertState, WindowScaling, evaluate_alerts, scale_alert_windows
from labkit.measure.slo.client import (
    SamplesError,
    count_events,
    error_ratios_by_window,
    objective_events,
    read_samples,
    requests_meeting_every_slo,
    run_span,
    samples_frame,
    time_slice_events,
    valid_requests,
)
from labkit.measure.slo.spec import SloDefinition, load_slo_spec
from labkit.rundir import RunDirectory, RunFile

__all__ = ["ObjectiveResult", "SloReport", "check_run", "evaluate_client_slos", "format_report"]


class ObjectiveResult(BaseModel):
    """One objective of one SLO, judged on a run's events."""

    model_config = ConfigDict(frozen=True)

    slo: str
    slo_display_name: str
    objective: str
    indicator: Literal["ratio", "threshold"]
    threshold_s: float | None  # threshold objectives: good means <= this many seconds
    target: float
    good: int
    valid: int
    bad: int
    sli: float | None  # good / valid; None without valid events
    met: bool | None  # sli >= target; None without valid events ("no data", e.g. TTFT of a non-stream run)
    error_ratio: float  # bad / valid
    burn_rate: float  # error_ratio / (1 - target)
    budget_remaining: float  # 1 - burn_rate: the budget left if the run's events were a whole window
    budget_consumed: float  # share of the SLO window's (30-day) budget the run's bad events spent
    slo_window_s: float
    time_to_exhaustion_s: float | None  # a full budget at this burn rate; None when nothing burns
    alerts: list[AlertState]  # Workbook pairs, over windows scaled to the run (see SloReport.window_scaling)


class SloReport(BaseModel):
    """Every objective's result, goodput, the assumptions made, and the verdict."""

    model_config = ConfigDict(frozen=True)

    verdict: Literal["met", "violated"]
    requests: int
    valid_requests: int
    good_requests: int  # requests that met every objective
    duration_s: float
    duration_source: str
    goodput_rps: float  # good_requests / duration_s
    goodput_ratio: float | None  # good_requests / valid_requests
    window_scaling: dict[str, Any]
    assumptions: list[str]
    results: list[ObjectiveResult]

    @property
    def violated(self) -> list[ObjectiveResult]:
        return [r for r in self.results if r.met is False]

    @property
    def no_data(self) -> list[ObjectiveResult]:
        return [r for r in self.results if r.met is None]

    def write(self, run_dir: Path) -> Path:
        """Write `<run_dir>/slo.json` (atomically); returns its path."""
        directory = RunDirectory(run_dir)
        directory.write_json(RunFile.SLO, self.model_dump(mode="json"))
        return directory.file(RunFile.SLO)


def _scaling_record(scaling: WindowScaling) -> dict[str, Any]:
    return {"scale": scaling.scale, "windows_s": scaling.windows_s, "description": scaling.describe()}


def evaluate_client_slos(
    samples: pd.DataFrame,
    slos: Sequence[SloDefinition],
    *,
    duration_s: float | None = None,
    duration_source: str = "given",
    events_per_window: Mapping[str, float] | None = None,
) -> SloReport:
    """Judge every objective of `slos` on client samples (one row per request; see labkit.measure.slo.client).

    `duration_s` defaults to the samples' span (first intended send to last completion). It sets goodput
    and, unless `events_per_window[slo name]` gives a window's event count, the extrapolation of the run's
    event rate to the SLO window for budget consumed.
    """
    frame = samples_frame(samples)
    if frame.empty:
        raise SamplesError("no client samples; nothing to judge")
    start, end = run_span(frame)
    if duration_s is None:
        duration_s, duration_source = end - start, "samples: first intended send to last completion"
    if not duration_s > 0:
        raise SamplesError(f"the run's duration must be positive, got {duration_s} s; pass it explicitly")
    events_per_window = events_per_window or {}
    scaling = scale_alert_windows(duration_s, slo_window_s=max(s.window_s for s in slos))
    results = []
    for slo in slos:
        for objective in slo.objectives:
            events = objective_events(frame, slo, objective)
            if slo.budgeting_method == "Timeslices":
                # good/valid count slices from here on: the target is a ratio of good slices
                assert objective.time_slice_s is not None and objective.time_slice_target is not None
                events = time_slice_events(
                    events,
                    start=start,
                    slice_s=objective.time_slice_s,
                    slice_target=objective.time_slice_target,
                )
            good, valid = count_events(events)
            ratio = budget.error_ratio(good, valid)
            burn = budget.burn_rate(ratio, objective.target)
            lasts = budget.time_to_exhaustion_s(burn, window_s=slo.window_s)
            results.append(
                ObjectiveResult(
                    slo=slo.name,
                    slo_display_name=slo.display_name,
                    objective=objective.display_name,
                    indicator=slo.indicator,
                    threshold_s=objective.value,
                    target=objective.target,
                    good=good,
                    valid=valid,
                    bad=valid - good,
                    sli=good / valid if valid else None,
                    met=None if valid == 0 else good / valid >= objective.target,
                    error_ratio=ratio,
                    burn_rate=burn,
                    budget_remaining=budget.error_budget_remaining(good, valid, objective.target),
                    budget_consumed=budget.budget_consumed(
                        valid - good,
                        valid,
                        objective.target,
                        duration_s=duration_s,
                        window_s=slo.window_s,
                        events_per_window=events_per_window.get(slo.name),
                    ),
                    slo_window_s=slo.window_s,
                    time_to_exhaustion_s=None if math.isinf(lasts) else lasts,
                    alerts=evaluate_alerts(error_ratios_by_window(events, scaling.windows_s, end), objective),
                )
            )
    meets = requests_meeting_every_slo(frame, slos)
    valid_count = int(valid_requests(frame).sum())
    good_requests = int(meets.sum())
    assumptions = [
        "client-side SLIs, exact, timed from each request's intended send time",
        "availability: valid = all requests but 4xx other than 429; 429, 5xx and no response are bad",
        "latency SLIs count successful requests only; inter-token latency counts every gap",
        "budget consumed = bad / ((1 - target) * events in the SLO window), the window's events being "
        + (
            "given for " + ", ".join(sorted(events_per_window))
            if events_per_window
            else "the run's event rate extrapolated (traffic as dense as during the run)"
        ),
        "goodput counts requests that are ok, within every latency threshold, and whose share of gaps "
        "within the inter-token threshold reaches its target",
        scaling.describe(),
        *(
            f"{slo.name}: Timeslices budgeting: good and valid count slices of the run (from its first "
            "intended send) that hold events; a slice is good when its ratio of good events reaches the "
            "objective's timeSliceTarget"
            for slo in slos
            if slo.budgeting_method == "Timeslices"
        ),
    ]
    return SloReport(
        verdict=_verdict(results),
        requests=len(frame),
        valid_requests=valid_count,
        good_requests=good_requests,
        duration_s=duration_s,
        duration_source=duration_source,
        goodput_rps=budget.goodput_rps(good_requests, duration_s),
        goodput_ratio=good_requests / valid_count if valid_count else None,
        window_scaling=_scaling_record(scaling),
        assumptions=assumptions,
        results=results,
    )


def _verdict(results: Sequence[ObjectiveResult]) -> Literal["met", "violated"]:
    # Objectives without events (no data) neither pass nor fail a run, but a run needs some evidence.
    judged = [r.met for r in results if r.met is not None]
    return "met" if judged and all(judged) else "violated"


def _params_duration(run: RunDirectory) -> tuple[float, str] | None:
    """The load's configured duration from params.json: `load.spec.duration_s` (what `labkit load`
    writes), else a top-level `duration_s`."""
    path = run.file(RunFile.PARAMS)
    if not path.exists():
        return None
    try:
        params = run.read_json(RunFile.PARAMS)
    except (OSError, ValueError) as exc:
        raise SamplesError(f"cannot read {path}: {exc}") from exc
    if not isinstance(params, dict):
        return None
    load = params.get("load")
    spec = load.get("spec") if isinstance(load, dict) else None
    candidates = [
        (spec.get("duration_s") if isinstance(spec, dict) else None, "load.spec.duration_s"),
        (params.get("duration_s"), "duration_s"),
    ]
    for value, key in candidates:
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value), f"{RunFile.PARAMS} {key}"
    return None


def check_run(run_dir: Path, *, spec_path: Path | None = None, duration_s: float | None = None) -> SloReport:
    """Judge `run_dir/requests.jsonl` against the spec and write `run_dir/slo.json`. The run's duration is
    `duration_s`, else the load's configured duration in params.json, else the samples' span."""
    if not run_dir.is_dir():
        raise SamplesError(f"run directory {run_dir} does not exist")
    slos = load_slo_spec(spec_path)
    run = RunDirectory(run_dir)
    samples = read_samples(run.file(RunFile.REQUESTS))
    source = "given"
    if duration_s is None and (configured := _params_duration(run)) is not None:
        duration_s, source = configured
    if duration_s is None:
        report = evaluate_client_slos(samples, slos)
    else:
        report = evaluate_client_slos(samples, slos, duration_s=duration_s, duration_source=source)
    report.write(run_dir)
    return report


def _percent(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def format_report(report: SloReport) -> str:
    """A plain-text table, one line per objective, then goodput, alerts and the verdict."""
    rows = [("SLO", "OBJECTIVE", "SLI", "TARGET", "MET", "BURN", "BUDGET USED", "GOOD/VALID")]
    for r in report.results:
        rows.append(
            (
                r.slo,
                r.objective,
                _percent(r.sli),
                _percent(r.target, 1),
                "no data" if r.met is None else "yes" if r.met else "NO",
                f"{r.burn_rate:.2f}x",
                f"{r.budget_consumed * 100:.4g}% of {r.slo_window_s / 86400:g}d",
                f"{r.good}/{r.valid}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.append("")
    lines.append(
        f"requests {report.requests}, valid {report.valid_requests}, "
        f"meeting every SLO {report.good_requests}; goodput {report.goodput_rps:.3g} req/s "
        f"over {report.duration_s:.4g} s ({report.duration_source})"
    )
    lines.append(report.window_scaling["description"])
    firing = [
        f"{r.slo} ({r.objective}): {a.severity} {a.factor:g}x over {a.long_window} & {a.short_window}"
        for r in report.results
        for a in r.alerts
        if a.firing
    ]
    lines.append("alerts firing (scaled windows): " + ("; ".join(firing) if firing else "none"))
    if report.no_data:
        names = ", ".join(f"{r.slo} ({r.objective})" for r in report.no_data)
        lines.append(f"no data (no events in this run; not judged): {names}")
    judged = len(report.results) - len(report.no_data)
    if report.verdict == "met":
        lines.append(f"verdict: met ({judged} objectives judged)")
    elif report.violated:
        names = ", ".join(f"{r.slo} ({r.objective})" for r in report.violated)
        lines.append(f"verdict: violated — {len(report.violated)} of {judged} objectives: {names}")
    else:
        lines.append("verdict: violated — no objective had any events to judge")
    return "\n".join(lines)
