"""One point of the capacity search: an open-loop load at one offered rate, in a run directory of its own
under points/, watched for over-saturation and judged against every SLO of the spec.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from labkit.measure.capacity._saturation import PointWatch, SaturationCheck
from labkit.measure.load import LoadSpec, run_load
from labkit.measure.slo import SloDefinition, SloReport, evaluate_client_slos
from labkit.rundir import RunDirectory, RunFolder

__all__ = [
    "PointResult",
    "SloOutcome",
    "describe_point",
    "drain_service",
    "measure_point",
    "point_run_id",
    "point_summary",
]

logger = logging.getLogger(__name__)

Phase = Literal["sweep", "bisect"]


class SloOutcome(BaseModel):
    """One objective of one SLO at one point."""

    model_config = ConfigDict(frozen=True)

    slo: str
    objective: str
    met: bool | None  # None: no events to judge (e.g. TTFT of answers that were not streamed)
    sli: float | None
    target: float
    burn_rate: float
    good: int
    valid: int


def _quantile(values: pd.Series, q: float) -> float | None:
    clean = values.dropna().astype(float)
    return float(clean.quantile(q)) if len(clean) else None


class PointResult(BaseModel):
    """A measured point. Rates are requests per second, times seconds. `passed`: every judged SLO objective
    met and not over-saturated; `saturated`: stopped early or found growing at its end (`saturation` says
    why). The SLOs are judged on the requests that finished: those cancelled by an early stop are left
    out (the stop, not the service, ended them); throughput and goodput are over the time load was sent."""

    model_config = ConfigDict(frozen=True)

    index: int  # 1, 2, ... in the order measured
    repeat: int  # 1 .. repeats
    phase: Phase
    rate: float  # offered
    seed: int
    run_dir: str  # relative to the capacity run directory, e.g. points/003-r2.500
    started_at: float  # unix
    duration_s: float  # load sent for: point_s, or until the early stop
    elapsed_s: float  # the whole point, its drain included
    requests: int  # rows (requests whose send time came)
    ok: int
    cancelled: int  # ended by the early stop
    sent_rate: float | None  # sends per second the client managed
    throughput_rps: float  # ok answers per second of load
    goodput_rps: float | None  # answers meeting every SLO per second of load; None when nothing was judged
    latency: dict[str, float | None]  # e2e_p50_s, e2e_p95_s, e2e_p99_s, ttft_*, itl_* (ok requests)
    slos: list[SloOutcome]
    failed_slos: list[str]  # the SLOs with an objective not met
    saturated: bool
    stopped_early: bool
    saturation: str | None
    passed: bool
    drain_s: float | None = None  # the probe's latency after the point (see `drain_service`), seconds


def point_run_id(index: int, rate: float) -> str:
    """`003-r2.500`: the measuring order, then the offered rate."""
    return f"{index:03d}-r{rate:.3f}"


def _latency(frame: pd.DataFrame) -> dict[str, float | None]:
    ok = frame[frame["ok"]]
    gaps = ok["itl_s"].explode() if len(ok) else pd.Series(dtype=float)
    values: dict[str, float | None] = {}
    for name, series in (("e2e", ok["e2e_s"]), ("ttft", ok["ttft_s"]), ("itl", gaps)):
        for q in (0.5, 0.95, 0.99):
            values[f"{name}_p{round(q * 100)}_s"] = _quantile(pd.Series(series, dtype=float), q)
    return values


def _outcomes(report: SloReport) -> list[SloOutcome]:
    return [
        SloOutcome(
            slo=r.slo,
            objective=r.objective,
            met=r.met,
            sli=r.sli,
            target=r.target,
            burn_rate=r.burn_rate,
            good=r.good,
            valid=r.valid,
        )
        for r in report.results
    ]


def measure_point(
    parent: RunDirectory,
    load: LoadSpec,
    *,
    index: int,
    repeat: int,
    phase: Phase,
    rate: float,
    point_s: float,
    seed: int,
    slos: Sequence[SloDefinition],
    check: SaturationCheck,
    progress: bool = False,
) -> PointResult:
    """Send `load` at `rate` for `point_s` seconds into `parent/points/<index>-r<rate>/` (its requests, params
    and journal, and its slo.json), stopping early when `check` finds the service over-saturated."""
    spec = LoadSpec(
        **{**load.model_dump(), "rate": rate, "duration_s": point_s, "seed": seed, "mode": "open"}
    )
    run_dir = RunDirectory.create(parent.file(RunFolder.POINTS), "point", run_id=point_run_id(index, rate))
    watch = PointWatch(rate=rate, check=check)
    began = time.time()
    result = run_load(spec, run_dir, progress=progress, monitor=watch)
    frame = result.frame
    stopped = result.stopped
    started_at = watch.started_at if watch.started_at is not None else began
    sent = frame["actual_send"].dropna()
    if stopped is not None:
        # The time load was sent: to the stop (the last scheduled send, the stop being the next tick).
        last = float(frame["intended_send"].max()) if len(frame) else started_at
        duration = min(point_s, max(last - started_at, 1e-3))
        reason: str | None = stopped
    else:
        duration = point_s
        rows: list[dict[str, Any]] = [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]
        reason = watch.final(rows, duration_s=point_s)
    cancelled_by_stop = frame["error_kind"].eq("cancelled") & (stopped is not None)
    judged = frame[~cancelled_by_stop]
    report: SloReport | None = None
    if len(judged):
        report = evaluate_client_slos(judged, slos, duration_s=duration, duration_source="the point's load")
        report.write(run_dir.path)
    outcomes = _outcomes(report) if report else []
    failed = sorted({o.slo for o in outcomes if o.met is False})
    slos_met = report is not None and report.verdict == "met"
    point = PointResult(
        index=index,
        repeat=repeat,
        phase=phase,
        rate=rate,
        seed=seed,
        run_dir=str(run_dir.path.relative_to(parent.path)),
        started_at=started_at,
        duration_s=duration,
        elapsed_s=result.elapsed_s,
        requests=len(frame),
        ok=int(frame["ok"].sum()),
        cancelled=int(cancelled_by_stop.sum()),
        sent_rate=result.achieved_rate if len(sent) >= 2 else None,
        throughput_rps=int(judged["ok"].sum()) / duration,
        goodput_rps=report.goodput_rps if report else None,
        latency=_latency(judged) if len(judged) else {},
        slos=outcomes,
        failed_slos=failed,
        saturated=reason is not None,
        stopped_early=stopped is not None,
        saturation=reason,
        passed=slos_met and reason is None,
    )
    if reason is not None or frame["error_kind"].isin(["cancelled", "timeout"]).any():
        point = point.model_copy(update={"drain_s": drain_service(run_dir, spec)})
    run_dir.write_run_record({"status": "completed", "capacity_point": point.model_dump(mode="json")})
    return point


def drain_service(run_dir: RunDirectory, load: LoadSpec) -> float | None:
    """One request after a point that left work behind (stopped early, or requests the client gave up on),
    waited for: a request the client cancelled may still sit in the service's queue or be generating, and
    would slow the next point down. The probe queues behind that work, so its answer means the service has
    caught up (up to the load's timeout). Recorded in `<point>/drain/`; returns its latency, seconds."""
    folder = RunDirectory.create(run_dir.path, "drain", run_id="drain")
    values = {**load.model_dump(), "rate": 1.0, "duration_s": 0.5, "mode": "open", "arrival": "constant"}
    probe = run_load(LoadSpec(**values), folder, progress=False)
    latency = probe.frame["e2e_s"].dropna()
    return float(latency.iloc[0]) if len(latency) else None


def describe_point(point: PointResult) -> str:
    """One line for people: `#3 2.50/s pass  p95 412 ms  goodput 2.49/s` or why it failed."""
    p95 = point.latency.get("e2e_p95_s")
    head = f"#{point.index:<3} {point.rate:8.3f}/s  {'pass' if point.passed else 'FAIL'}"
    cells = [
        f"p95 {'-' if p95 is None else f'{p95 * 1000:.0f} ms'}",
        f"goodput {'-' if point.goodput_rps is None else f'{point.goodput_rps:.3g}/s'}",
        f"{point.requests} requests",
    ]
    if point.failed_slos:
        cells.append("SLOs broken: " + ", ".join(point.failed_slos))
    if point.saturation:
        cells.append(("stopped early, " if point.stopped_early else "") + point.saturation)
    if point.drain_s is not None:
        cells.append(f"drained in {point.drain_s:.1f} s")
    return head + "  " + "  ".join(cells)


def point_summary(point: PointResult) -> dict[str, Any]:
    """The journal's fields of a finished point."""
    return {
        "index": point.index,
        "repeat": point.repeat,
        "phase": point.phase,
        "rate": point.rate,
        "passed": point.passed,
        "saturated": point.saturated,
        "stopped_early": point.stopped_early,
        "failed_slos": point.failed_slos,
        "run_dir": point.run_dir,
    }
