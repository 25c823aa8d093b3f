"""The scenarios a notebook runs, one call each (the notebook only narrates): a baseline under load, a kill
and its recovery, latency healed by remediation, a seeded random schedule, alerts proven by an error storm,
the capacity under the SLOs.
Each writes one run directory and, while Prometheus is reachable, saves the run's series into it, so that
the report renders from files after the lab is gone.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import cast

import httpx
import pandas as pd

from labkit._version import __version__
from labkit.chaos import (
    ExperimentLoad,
    ExperimentResult,
    ExperimentSpec,
    Fault,
    RemediationPolicy,
    Schedule,
    SteadyState,
    applicable_faults,
    as_schedule,
    random_schedule,
    run_experiment,
)
from labkit.errors import LabkitError
from labkit.lab.alertmanager_config import ALERTMANAGER_GROUP_WAIT_S
from labkit.measure.capacity import CapacityResult, CapacitySpec, describe_knee, find_capacity
from labkit.measure.load import Arrival, LoadApi, LoadResult, LoadSpec, run_load, wrapper_api_url
from labkit.measure.prom import PrometheusError
from labkit.measure.slo import SloReport, evaluate_client_slos, load_slo_spec
from labkit.rundir import RunDirectory, RunFile
from labkit.scenarios.session import LabSession, resolve_out_dir
from labkit.scenarios.specs import (
    Alerting,
    Capacity,
    ExperimentParams,
    KillAndRecover,
    LabParams,
    LatencyAndRemediation,
    LoadParams,
    RandomChaos,
)

__all__ = [
    "ScenarioRun",
    "alerting",
    "baseline",
    "capacity",
    "kill_and_recover",
    "latency_and_remediation",
    "random_chaos",
]

logger = logging.getLogger(__name__)

# Prometheus scrapes every second: this long after a run's last request its series hold every request.
_FINAL_SCRAPE_WAIT_S = 2.5


@dataclass
class ScenarioRun:
    """What a scenario produced: its run directory, and the result of its load or experiment."""

    run_dir: RunDirectory
    load: LoadResult | None = None
    experiment: ExperimentResult | None = None
    slo: SloReport | None = None
    capacity: CapacityResult | None = None
    series_files: list[Path] = field(default_factory=list)
    report_html: Path | None = None  # rendered when a notebook ran the scenario by itself (JupyterLab)

    @property
    def path(self) -> Path:
        return self.run_dir.path

    def summary(self) -> str:
        if self.experiment is not None:
            return self.experiment.summary()
        lines = [f"run {self.run_dir.run_id}"]
        if self.capacity is not None:
            lines.append(f"  {len(self.capacity.points)} points; {describe_knee(self.capacity)}")
        if self.slo is not None:
            lines.append(f"  SLOs {self.slo.verdict} ({self.slo.requests} requests)")
        return "\n".join(lines)


def _run_dir(run_dir: str | Path | None, out_dir: str | Path | None, scenario: str) -> RunDirectory:
    if run_dir:
        return RunDirectory.adopt(Path(run_dir), scenario)
    return RunDirectory.create(resolve_out_dir(out_dir), scenario)


def _publish(run: ScenarioRun, params: LabParams, *, say: Callable[[str], None] | None) -> None:
    """A run a notebook made by itself (JupyterLab: no run_dir given) gets its report.html and its line in
    reports/index.html, as a `labkit run` does, unless its `render_report` parameter is false; `labkit run`
    passes run_dir and renders them itself. A report that fails to render is said, not raised: the run's
    files are whole either way."""
    if params.run_dir or not params.render_report:
        return
    from labkit.runner.runs import render_report

    try:
        html = render_report(run.path, progress=False)
    except LabkitError as exc:
        logger.warning("the report of %s was not rendered: %s", run.path, exc)
        if say is not None:
            say(f"the report was not rendered ({exc}); render it with `labkit report {run.path}`")
        return
    run.report_html = html
    if say is not None:
        say(f"report: {html}")


def _describe_lab(session: LabSession, run_dir: RunDirectory) -> None:
    """lab.json: what the run ran on (engine, model, the upstream the wrapper fronts and its API, backend,
    host, versions), for the report's title."""
    config = session.config
    prometheus_version = None
    try:
        answer = httpx.get(f"{session.prometheus_url}/api/v1/status/buildinfo", timeout=2.0, trust_env=False)
        data = answer.json()
        info = data.get("data") if isinstance(data, dict) else None
        prometheus_version = info.get("version") if isinstance(info, dict) else None
    except (httpx.HTTPError, ValueError) as exc:
        logger.info("Prometheus' version is unknown: %s", exc)
    run_dir.write_json(
        RunFile.LAB,
        {
            "engine": config.engine,
            "model": config.model_name,
            # What the wrapper fronts and how it speaks to it (never its API key: only the key file's path
            # is a setting, and it is not recorded either).
            "model_api": config.model_api,
            "upstream_url": config.model_api_url,
            "upstream_metrics_url": config.upstream_metrics,
            "backend": config.backend,
            "host": platform.node(),
            "platform": platform.platform(terse=True),
            "python": platform.python_version(),
            "labkit_version": __version__,
            "prometheus_version": prometheus_version,
            "wrapper_url": session.wrapper_url,
            # What the alert measures need: the rules' profile the lab loaded, its scrape (and rule
            # evaluation) interval, and how long Alertmanager waits before it notifies a new alert.
            "alert_profile": _alert_profile_of(session),
            "scrape_interval_s": config.scrape_interval_s,
            "alertmanager_group_wait_s": ALERTMANAGER_GROUP_WAIT_S,
        },
    )


def _alert_profile_of(session: LabSession) -> dict[str, object] | None:
    """The alert profile the lab recorded when it started (rules.alert_profile_record); None for a lab
    started by a labkit that recorded none."""
    try:
        saved = json.loads(session.backend.lab.config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.info("the lab's alert profile is unknown: %s", exc)
        return None
    profile = saved.get("alert_profile") if isinstance(saved, dict) else None
    return profile if isinstance(profile, dict) else None


def _save_series(session: LabSession, run_dir: RunDirectory, start: float, end: float) -> list[Path]:
    """Wait for Prometheus' last scrapes of the run, then keep its series in the run directory. A run
    whose Prometheus is unreachable or refuses the queries keeps its samples and journal; its report
    says the series are missing (nothing is invented)."""
    from labkit.measure.collect import save_prometheus_series

    time.sleep(_FINAL_SCRAPE_WAIT_S)
    try:
        return save_prometheus_series(run_dir.path, session.prometheus_url, start, end + _FINAL_SCRAPE_WAIT_S)
    except PrometheusError as exc:
        logger.warning("the run's Prometheus series were not saved: %s", exc)
        return []


def _save_request_logs(session: LabSession, run_dir: RunDirectory, frame: pd.DataFrame) -> None:
    """Keep the lab's log lines of a sample of the run's failed requests in the run directory (after
    `_save_series`' wait, the services have written them). Logs that cannot be read cost the report its
    log lines, not the run."""
    from labkit.measure.request_logs import save_request_logs

    try:
        save_request_logs(run_dir, frame, session.backend.log_lines)
    except (LabkitError, OSError) as exc:
        logger.warning("the failed requests' log lines were not saved: %s", exc)


def _restart_counts(session: LabSession) -> dict[str, int]:
    """Each service's restarts so far (the lab's control API), for the live view's restart marks."""
    return {s.name: s.restarts for s in session.backend.status() if s.restarts is not None}


def _live_view(session: LabSession, run_dir: RunDirectory) -> AbstractContextManager[object]:
    """In a Jupyter kernel, a figure of the run that updates while it runs (labkit.report.live); elsewhere
    nothing. Imported here: matplotlib is not loaded for a scenario run outside a kernel."""
    from labkit.report.live import in_kernel, live_view

    if not in_kernel():
        return nullcontext()
    return live_view(run_dir.path, restarts=partial(_restart_counts, session), enabled=True)


def _load_span(frame: pd.DataFrame, fallback_start: float) -> tuple[float, float]:
    if frame.empty:
        return fallback_start, time.time()
    start = float(frame["intended_send"].min())
    end = float((frame["intended_send"] + frame["e2e_s"].fillna(0)).max())
    return start - 1.0, max(end, start) + 1.0


def baseline(
    session: LabSession,
    params: LoadParams,
    *,
    scenario: str | None = None,
    progress: bool = True,
) -> ScenarioRun:
    """Open-loop load with nothing broken (`params`: its duration, rate, max_tokens, seed, api, arrival and
    burstiness, which only `gamma` arrivals use); the SLOs judged on the client's samples. `scenario` names
    the run directory when `params.run_dir` is not given (default: the spec's scenario)."""
    api = cast(LoadApi, params.api)  # one of them: its Bound checked it
    spec = LoadSpec(
        url=wrapper_api_url(session.wrapper_url, api),
        api=api,
        rate=params.rate,
        duration_s=params.duration_s,
        max_tokens=params.max_tokens,
        stream=True,
        seed=params.seed,
        arrival=cast(Arrival, params.arrival),  # one of them: its Bound checked it
        burstiness=params.burstiness if params.arrival == "gamma" else None,
        api_key_file=session.config.api_key_file,
    )
    out = _run_dir(params.run_dir, params.out_dir, scenario or params.scenario)
    _describe_lab(session, out)
    began = time.time()
    with _live_view(session, out):
        result = run_load(spec, out, progress=progress)
    report = evaluate_client_slos(result.frame, load_slo_spec(), duration_s=params.duration_s)
    report.write(out.path)
    start, end = _load_span(result.frame, began)
    files = _save_series(session, out, start, end)
    _save_request_logs(session, out, result.frame)
    run = ScenarioRun(out, load=result, slo=report, series_files=files)
    _publish(run, params, say=print if progress else None)
    return run


def _experiment(
    session: LabSession,
    params: ExperimentParams,
    faults: list[Fault] | Schedule,
    *,
    say: Callable[[str], None] | None,
    remediation: RemediationPolicy | None = None,
) -> ScenarioRun:
    """Run the experiment of a scenario's parameters (its load, its steady-state checks) with `faults`."""
    spec = ExperimentSpec(
        schedule=as_schedule(faults),
        duration_s=params.duration_s,
        load=ExperimentLoad(api=cast(LoadApi, params.api), rate=params.rate, max_tokens=params.max_tokens),
        steady_state=SteadyState(duration_s=params.steady_state_s),
        remediation=remediation,
        scenario=params.scenario,
    )
    out = _run_dir(params.run_dir, params.out_dir, params.scenario)
    _describe_lab(session, out)
    began = time.time()
    with _live_view(session, out):
        result = run_experiment(session.lab_dir, spec, run_dir=out, say=say)
    frame = result.load.frame if result.load is not None else pd.DataFrame()
    start, end = _load_span(frame, began)
    # The steady-state checks are part of the story: the series span the whole experiment.
    files = _save_series(session, out, min(start, began), max(end, time.time()))
    _save_request_logs(session, out, frame)
    run = ScenarioRun(out, load=result.load, experiment=result, slo=result.method_slo, series_files=files)
    _publish(run, params, say=say)
    return run


def kill_and_recover(
    session: LabSession, params: KillAndRecover, *, say: Callable[[str], None] | None = print
) -> ScenarioRun:
    """SIGKILL one service `kill_at_s` into `duration_s` of load; the supervisor's restart policy brings
    it back. The window after the kill, to the end of the run, is the fault's observation window."""
    fault = Fault(
        kind="kill",
        target=params.target,
        start_s=params.kill_at_s,
        duration_s=params.duration_s - params.kill_at_s,
    )
    return _experiment(session, params, [fault], say=say)


def latency_and_remediation(
    session: LabSession, params: LatencyAndRemediation, *, say: Callable[[str], None] | None = print
) -> ScenarioRun:
    """Latency injected in front of the model from `latency_at_s` to the end of the run; a remediation
    loop reads p95 from Prometheus and restarts the wrapper (which drops the fault) after
    `breaches_to_act` readings above `threshold_s`. With `dry_run` it only journals its decisions."""
    fault = Fault(
        kind="latency",
        start_s=params.latency_at_s,
        duration_s=params.duration_s - params.latency_at_s - 1,
        params={"delay_s": params.delay_s},
    )
    policy = RemediationPolicy(
        target="wrapper",
        threshold_s=params.threshold_s,
        window_s=5,
        interval_s=1,
        breaches_to_act=params.breaches_to_act,
        cooldown_s=params.duration_s,
        dry_run=params.dry_run,
    )
    return _experiment(session, params, [fault], say=say, remediation=policy)


def random_chaos(
    session: LabSession, params: RandomChaos, *, say: Callable[[str], None] | None = print
) -> ScenarioRun:
    """A random schedule drawn from `seed` (same seed, same schedule; printed before it runs)."""
    schedule = random_schedule(
        params.seed, params.duration_s, kinds=params.kind_list, applicable=applicable_faults(session.config)
    )
    return _experiment(session, params, schedule, say=say)


def alerting(
    session: LabSession, params: Alerting, *, say: Callable[[str], None] | None = print
) -> ScenarioRun:
    """A fault-free baseline of `baseline_s`, then the wrapper answers 5xx with `error_probability` for
    `storm_s` (long enough, at the default rate, for the lab profile's fast page to fire by the rules'
    arithmetic), then `kill_after_s` later a SIGKILL of the model, then recovery to the end of the method.
    Alertmanager's notifications land in the run's alerts.jsonl; the report measures them per fault."""
    storm = Fault(
        kind="error",
        start_s=params.baseline_s,
        duration_s=params.storm_s,
        params={"probability": params.error_probability},
    )
    kill = Fault(
        kind="kill", target="model", start_s=params.kill_at_s, duration_s=params.duration_s - params.kill_at_s
    )
    return _experiment(session, params, [storm, kill], say=say)


def capacity(
    session: LabSession, params: Capacity, *, say: Callable[[str], None] | None = print
) -> ScenarioRun:
    """The highest offered rate at which every SLO holds (labkit.measure.capacity): open-loop points of
    `point_s` from `start_rate`, doubled or halved, then bisected to `precision`, `repeats` times, within
    `max_search_s`; a point whose backlog or latency keeps growing is stopped early as saturated. The
    points go into points/, the search into capacity.json, the knee into run.json's headline."""
    api = cast(LoadApi, params.api)
    load = LoadSpec(
        url=wrapper_api_url(session.wrapper_url, api),
        api=api,
        rate=params.start_rate,
        duration_s=params.point_s,
        arrival=params.arrival,
        max_tokens=params.max_tokens,
        stream=True,
        seed=params.seed,
        api_key_file=session.config.api_key_file,
    )
    spec = CapacitySpec(
        load=load,
        point_s=params.point_s,
        min_requests=params.min_requests,
        start_rate=params.start_rate,
        max_rate=max(params.max_rate, params.start_rate),
        precision=params.precision,
        repeats=params.repeats,
        max_search_s=params.max_search_s,
    )
    out = _run_dir(params.run_dir, params.out_dir, params.scenario)
    _describe_lab(session, out)
    began = time.time()
    result = find_capacity(spec, out, say=say)
    files = _save_series(session, out, began - 1.0, time.time() + 1.0)
    run = ScenarioRun(out, capacity=result, series_files=files)
    _publish(run, params, say=say)
    return run
