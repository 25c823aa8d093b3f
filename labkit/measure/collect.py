"""Save Prometheus' view of a run into its run directory while the lab is still up, so that its report
can be rendered later, and again, without Prometheus.

Under `<run_dir>/prometheus/`: one CSV per name of `SERIES` (`timestamp` ISO 8601 UTC, `t_s`, labels...,
`value`; no data gives a header-only CSV, never made-up values); `server_slis.json` (exact server SLIs
and quantiles; NaN and infinity as null, `in_inf_bucket` says when a bucket had no upper bound);
`client_vs_server.csv` when the run has client samples; and, written last, `window.json` (start, end,
run_start, prometheus_url, step_s, rate_window_s, gpu_available, upstream_metrics: the upstream's key metric
names found, series, notes). Every query runs before
anything is
written, so an unreachable Prometheus leaves the run directory as it was.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.measure.histograms import BucketQuantile
from labkit.measure.prom import (
    DEFAULT_AVAILABILITY_GOOD_QUERY,
    DEFAULT_AVAILABILITY_TOTAL_QUERY,
    PrometheusSeries,
    TimeLike,
    rate_window_s,
    save_series,
    to_unix,
)
from labkit.measure.slo.client import SamplesError, read_samples
from labkit.measure.slo.compare import explain_client_server
from labkit.measure.slo.server import server_quantile, server_slis
from labkit.measure.slo.spec import SloDefinition, load_slo_spec
from labkit.measure.upstream import upstream_names_query, upstream_queries
from labkit.rundir import RunDirectory, RunDirectoryError, RunFile, RunFolder

__all__ = ["ALERT_LABELS", "SERIES", "collect_series", "save_prometheus_series", "upstream_metrics_found"]

logger = logging.getLogger(__name__)

# Every series the report reads, by file name (prometheus/<name>.csv).
SERIES = (
    "availability",  # good / valid requests per rate window (the availability SLO's queries), ratio 0-1
    "error_ratio",  # 5xx / all generation requests, ratio 0-1
    "request_rate",  # requests/s by status_class
    "rejection_rate",  # requests/s turned away with 503, by reason
    "latency_quantiles",  # end-to-end seconds, p50/p95/p99 with bucket bounds
    "ttft_quantiles",  # time to first token, seconds
    "itl_quantiles",  # inter-token latency, seconds
    "output_tokens_rate",  # output tokens/s (rate of llm_output_tokens_total)
    "in_flight",  # admitted /generate requests not yet finished
    "faults_active",  # llm_faults_active by kind (wrapper: 0 or 1; supervisor: paused services, stress)
    "restarts",  # lab_service_restarts_total by service (the counter; growth = restarts)
    "service_up",  # 1 while a service is ready, by service
    "service_cpu",  # CPU cores in use, by service
    "service_memory",  # resident bytes, by service
    "gpu_utilization",  # busy ratio 0-1 by gpu; empty without a GPU
    "gpu_memory",  # bytes by gpu and memory (used/total); empty without a GPU
    # The upstream's own series (labkit.measure.upstream; job `upstream`), empty when it exports none:
    "upstream_queue",  # requests waiting in its queue
    "upstream_running",  # requests it is generating for
    "upstream_kv_cache",  # KV-cache in use, ratio 0-1
    "upstream_ttft_p95",  # its own p95 time to first token, seconds
    "alerts",  # Prometheus' ALERTS: 1 while an alert is pending or firing, by ALERT_LABELS
)

# The labels of the alerts series: the rules' (labkit.measure.slo.rules) and Prometheus' alertstate.
ALERT_LABELS = ("alertname", "alertstate", "severity", "slo", "objective", "long_window", "short_window")


def _availability_queries(slos: Sequence[SloDefinition]) -> tuple[str, str]:
    """The availability SLO's good and total queries (the first ratio SLO), else labkit's defaults."""
    for slo in slos:
        if slo.indicator == "ratio" and slo.good_query and slo.total_query:
            return slo.good_query, slo.total_query
    return DEFAULT_AVAILABILITY_GOOD_QUERY, DEFAULT_AVAILABILITY_TOTAL_QUERY


def collect_series(series: PrometheusSeries, slos: Sequence[SloDefinition]) -> dict[str, pd.DataFrame]:
    """Every frame of `SERIES` over one PrometheusSeries window, by name (one range query or a few each)."""
    good, total = _availability_queries(slos)
    window = series.rate_window
    frames = {
        "availability": series.availability(good, total),
        "error_ratio": series.error_ratio(),
        "request_rate": series.request_rate(),
        "rejection_rate": series.rejection_rate(),
        "latency_quantiles": series.latency_quantiles(),
        "ttft_quantiles": series.ttft_quantiles(),
        "itl_quantiles": series.itl_quantiles(),
        "output_tokens_rate": series.query_range(f"sum(rate(llm_output_tokens_total[{window}]))"),
        "in_flight": series.in_flight(),
        "faults_active": series.query_range("max by (kind) (llm_faults_active)", ["kind"]),
        "restarts": series.restarts(),
        "service_up": series.service_up(),
        "service_cpu": series.service_cpu(),
        "service_memory": series.service_memory(),
        "gpu_utilization": series.gpu_utilization(),
        "gpu_memory": series.gpu_memory(),
    }
    frames.update({name: series.query_range(query) for name, query in upstream_queries(window).items()})
    # The alerts' states as Prometheus evaluated them, so that a report draws them even without Alertmanager.
    frames["alerts"] = series.query_range("ALERTS", ALERT_LABELS)
    return frames


def upstream_metrics_found(series: PrometheusSeries) -> list[str]:
    """The key metric names the upstream exported in the window (labkit.measure.upstream), sorted."""
    frame = series.query_range(upstream_names_query(), ["__name__"])
    return sorted(frame["__name__"].astype(str).unique()) if not frame.empty else []


def _json_safe(value: Any) -> Any:
    """NaN, infinities and pandas' NA as None (JSON has none of them); numpy scalars as Python numbers."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): _json_safe(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _quantile_record(found: BucketQuantile) -> dict[str, Any]:
    return {
        "quantile": found.quantile,
        "value_s": _json_safe(found.value),
        "bucket_lower_s": _json_safe(found.lower),
        "bucket_upper_s": _json_safe(found.upper),
        "in_inf_bucket": found.in_inf_bucket,
        "observations": _json_safe(found.observations),
    }


def save_prometheus_series(
    run_dir: Path | str,
    prometheus_url: str,
    start: TimeLike,
    end: TimeLike,
    *,
    step_s: float = 1.0,
    quantile: float = 0.95,
    spec_path: Path | None = None,
    timeout_s: float = 10.0,
) -> list[Path]:
    """Query Prometheus at `prometheus_url` over `[start, end]` (unix s or aware datetimes) and write the
    files of the module docstring under `run_dir/prometheus/`; returns their paths, window.json last.

    Choose the window as for exact SLIs: from before the run's first request to at least one scrape
    interval after its last one finished. `t_s` in the CSVs counts from the run's start (its first journal
    event or request), or from `start` when the run directory has neither yet. Raises
    PrometheusUnreachableError (nothing written) when Prometheus does not answer, PrometheusQueryError
    when it refuses a query, RunDirectoryError when `run_dir` does not exist.
    """
    directory = Path(run_dir)
    if not directory.is_dir():
        raise RunDirectoryError(
            f"run directory {directory} does not exist; pass a directory under reports/runs"
        )
    start_s, end_s = to_unix(start), to_unix(end)
    run = RunDirectory(directory)
    run_start = run.start_time()
    slos = load_slo_spec(spec_path)
    notes: list[str] = []
    with PrometheusSeries(
        prometheus_url,
        start_s,
        end_s,
        step_s=step_s,
        run_start=run_start if run_start is not None else start_s,
        timeout_s=timeout_s,
    ) as series:
        frames = collect_series(series, slos)
        gpu_available = series.gpu_available()
        upstream_metrics = upstream_metrics_found(series)
        server = server_slis(series.client, start_s, end_s, slos)
        metrics = sorted({s.metric for s in slos if s.indicator == "threshold" and s.metric})
        quantiles = {
            metric: server_quantile(series.client, start_s, end_s, metric=metric, quantile=quantile)
            for metric in metrics
        }
    comparison: pd.DataFrame | None = None
    try:
        samples = _own_samples(run)
        if samples is None or samples.empty:
            notes.append(
                f"no client samples ({RunFile.REQUESTS}) when collected: no client-vs-server comparison"
            )
        else:
            comparison = explain_client_server(
                samples, server, quantiles, start_s, end_s, slos, quantile=quantile
            )
    except SamplesError as exc:
        logger.warning("no client-vs-server comparison for %s: %s", directory, exc)
        notes.append(f"no client-vs-server comparison: {exc}")
    return _write(
        directory,
        frames,
        server=server,
        quantiles=quantiles,
        comparison=comparison,
        window={
            "start": start_s,
            "end": end_s,
            "run_start": series.run_start,
            "prometheus_url": prometheus_url,
            "step_s": step_s,
            "rate_window_s": rate_window_s(step_s),
            "gpu_available": gpu_available,
            "upstream_metrics": upstream_metrics,
            "collected_at": time.time(),
            "series": list(frames),
            "notes": notes,
        },
    )


def _own_samples(run: RunDirectory) -> pd.DataFrame | None:
    """Every request this run sent: requests.jsonl and the steady-state checks' own (steady_state/*/), so
    that the server's counts over the window are compared with all of them; None without requests.jsonl."""
    if not run.file(RunFile.REQUESTS).exists():
        return None
    frames = [read_samples(run.file(RunFile.REQUESTS))]
    for check in sorted(run.file(RunFolder.STEADY_STATE).glob(f"*/{RunFile.REQUESTS}")):
        frames.append(read_samples(check))
    found = [f for f in frames if not f.empty]
    return pd.concat(found, ignore_index=True) if found else frames[0]


def _write(
    directory: Path,
    frames: dict[str, pd.DataFrame],
    *,
    server: pd.DataFrame,
    quantiles: dict[str, BucketQuantile],
    comparison: pd.DataFrame | None,
    window: dict[str, Any],
) -> list[Path]:
    """Write everything, each file atomically, window.json last (its presence means a whole collection)."""
    if not directory.is_dir():
        raise RunDirectoryError(f"run directory {directory} disappeared while Prometheus was queried")
    run = RunDirectory(directory)
    written = save_series(run, frames)
    run.write_json(
        RunFile.SERVER_SLIS,
        {
            "start": window["start"],
            "end": window["end"],
            "slis": _records(server),
            "quantiles": {metric: _quantile_record(q) for metric, q in quantiles.items()},
        },
    )
    written.append(run.file(RunFile.SERVER_SLIS))
    if comparison is not None:
        written.append(run.write_text(RunFile.CLIENT_VS_SERVER, comparison.to_csv(index=False)))
    run.write_json(RunFile.WINDOW, window)
    written.append(run.file(RunFile.WINDOW))
    return written
