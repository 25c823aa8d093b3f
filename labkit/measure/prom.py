"""Prometheus' view of a run as tidy pandas DataFrames, on prometheus-api-client.

Range queries over a run's window (request rate, error ratio, availability, latency quantiles with the
bucket bounds they interpolated between, in-flight, restarts, services, GPU) and exact counter increases.

Every frame has `timestamp` (UTC), `t_s` (seconds since the run's start, as in its `events.jsonl`),
one column per label that matters, and `value`. Rates use a window of
`max(4 * scrape_interval, step + scrape_interval)` (4 s at the lab's 1 s scrape): `rate()` needs two
samples in a window, four tolerate a missed scrape, and `step + scrape` makes consecutive windows overlap
so that no sample falls between two points (Grafana's `$__rate_interval`).
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from labkit.errors import LabkitError
from labkit.measure.histograms import GENERATION_ENDPOINT_MATCHER, bucket_quantile
from labkit.measure.promql import counter_sum_selector, promql_duration
from labkit.rundir import RunDirectory, series_file

__all__ = [
    "DEFAULT_AVAILABILITY_GOOD_QUERY",
    "DEFAULT_AVAILABILITY_TOTAL_QUERY",
    "QUANTILE_COLUMNS",
    "CounterIncrease",
    "PrometheusClient",
    "PrometheusError",
    "PrometheusQueryError",
    "PrometheusSeries",
    "PrometheusUnreachableError",
    "TimeLike",
    "rate_window_s",
    "save_series",
    "to_unix",
    "window_increase",
]

logger = logging.getLogger(__name__)

TimeLike = float | int | datetime

# The availability SLO of SLO.md / stack/slo.yaml; callers holding the spec pass its queries instead.
# Valid: every status but the client's 4xx, except 429 (full: the server's doing, as 503 is).
DEFAULT_AVAILABILITY_GOOD_QUERY = (
    f'sum(llm_requests_total{{{GENERATION_ENDPOINT_MATCHER},status_code=~"2.."}})'
)
DEFAULT_AVAILABILITY_TOTAL_QUERY = (
    f'sum(llm_requests_total{{{GENERATION_ENDPOINT_MATCHER},status_code=~"[1235]..|429"}})'
)

# Prometheus refuses range queries of more than 11,000 points per series.
_MAX_POINTS = 11_000

_FRAME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class PrometheusError(LabkitError):
    """Prometheus could not answer what labkit asked of it."""


class PrometheusUnreachableError(PrometheusError):
    """Nothing answers at the Prometheus URL."""


class PrometheusQueryError(PrometheusError):
    """Prometheus answered, but refused or failed a query; the message names the query."""


def to_unix(moment: TimeLike) -> float:
    """Unix seconds from unix seconds or a timezone-aware datetime (a naive one is ambiguous)."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError(
                f"datetime {moment.isoformat()} has no timezone; pass an aware one "
                "(datetime.now(UTC)) or unix seconds"
            )
        return moment.timestamp()
    if isinstance(moment, bool) or not isinstance(moment, int | float) or not math.isfinite(moment):
        raise ValueError(f"a time must be unix seconds or an aware datetime, got {moment!r}")
    return float(moment)


def rate_window_s(step_s: float, scrape_interval_s: float = 1.0) -> float:
    """The `rate()` window for a range query: `max(4 * scrape, step + scrape)` (see the module doc)."""
    if step_s <= 0 or scrape_interval_s <= 0:
        raise ValueError("step and scrape interval must be positive")
    return max(4 * scrape_interval_s, step_s + scrape_interval_s)


@dataclass(frozen=True)
class CounterIncrease:
    """How much a sum of counters grew in a window; `resets` counts restarts of the counting process."""

    value: float
    resets: int
    series: int


def window_increase(samples: Sequence[tuple[float, float]], start: float, end: float) -> tuple[float, int]:
    """Exact increase of one counter series over `(start, end]` from its raw samples, and its resets.

    The baseline is the last sample at or before `start` (what an instant query at `start` returns);
    a series first seen inside the window was born there and starts from 0. A drop is a reset (the
    process restarted and counts from 0 again): the new value is all growth since. Unlike `increase()`
    there is no extrapolation to the window's edges, so whole events stay whole. What a process counted
    after its last scrape before a restart is lost to every Prometheus query, this one included.
    """
    baseline: float | None = None
    previous: float | None = None
    growth = 0.0
    resets = 0
    for at, value in sorted(samples):
        if at > end:
            break
        if at <= start:
            baseline = value
            continue
        if previous is None:
            previous = baseline if baseline is not None else 0.0
        if value < previous:
            resets += 1
            growth += value
        else:
            growth += value - previous
        previous = value
    return growth, resets


class PrometheusClient:
    """Instant, range and raw-sample queries with labkit's errors; one HTTP session (close it)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        # Two quick retries for a Prometheus that is restarting, not the library's default of three
        # with 1 s backoff, which makes "nothing is listening" take seconds to say.
        retry = Retry(
            total=2,
            connect=2,
            read=0,
            status=2,
            backoff_factor=0.1,
            status_forcelist=(503,),
            raise_on_status=False,
        )
        self._connect = PrometheusConnect(self.url, disable_ssl=True, retry=retry, timeout=timeout_s)  # type: ignore[arg-type]

    def close(self) -> None:
        self._connect.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def instant(self, query: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """`/api/v1/query` at unix time `at` (now if None): the `result` list."""
        params = {} if at is None else {"time": f"{at:.3f}"}
        return self._call(query, lambda: self._connect.custom_query(query, params=params))

    def range(self, query: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        """`/api/v1/query_range`: the `result` list of `{metric, values}` series."""
        points = (end - start) / step_s + 1
        if points > _MAX_POINTS:
            raise PrometheusQueryError(
                f"a window of {end - start:.0f} s at a {step_s:g} s step is {points:.0f} points per series, "
                f"more than Prometheus' limit of {_MAX_POINTS}; raise the step to at least "
                f"{math.ceil((end - start) / (_MAX_POINTS - 1))} s"
            )
        # The library rounds start and end to whole seconds; exact values go in `params`, which win.
        params = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
        return self._call(
            query,
            lambda: self._connect.custom_query_range(
                query,
                start_time=datetime.fromtimestamp(start),
                end_time=datetime.fromtimestamp(end),
                step=f"{step_s:g}",
                params=params,
            ),
        )

    def raw_samples(
        self, selector: str, start: float, end: float, *, lookback_s: float = 300.0
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """Every stored sample of `selector` in `[start - lookback_s, end]`, per series.

        The lookback (Prometheus' own staleness lookback is 5 min) finds each series' last sample
        before `start`, the baseline of `window_increase`.
        """
        query = f"{selector}[{promql_duration(end - start + lookback_s)}]"
        result = self.instant(query, at=end)
        return [
            (dict(series.get("metric", {})), [(float(t), float(v)) for t, v in series.get("values", [])])
            for series in result
        ]

    def counter_increase(
        self, selector: str, start: float, end: float, *, lookback_s: float = 300.0
    ) -> CounterIncrease:
        """Exact increase of the sum of every series of `selector` over `(start, end]`."""
        series = self.raw_samples(selector, start, end, lookback_s=lookback_s)
        total, resets = 0.0, 0
        for _, samples in series:
            growth, seen = window_increase(samples, start, end)
            total += growth
            resets += seen
        return CounterIncrease(total, resets, len(series))

    def bucket_increases(
        self, metric: str, start: float, end: float, *, matchers: str = "", lookback_s: float = 300.0
    ) -> tuple[dict[float, float], int]:
        """Exact increase of each `<metric>_bucket` over `(start, end]`, summed by `le`; and resets."""
        series = self.raw_samples(f"{metric}_bucket{matchers}", start, end, lookback_s=lookback_s)
        buckets: dict[float, float] = {}
        resets = 0
        for labels, samples in series:
            if "le" not in labels:
                continue
            growth, seen = window_increase(samples, start, end)
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + growth
            resets += seen
        return buckets, resets

    def _call(self, query: str, request: Any) -> list[dict[str, Any]]:
        try:
            result = request()
        except (requests.ConnectionError, requests.exceptions.ConnectTimeout) as exc:
            raise PrometheusUnreachableError(
                f"Prometheus at {self.url} does not answer ({type(exc).__name__}); is the lab up? "
                "Start it with `labkit up`, or pass the URL of the Prometheus that scrapes it"
            ) from exc
        except requests.Timeout as exc:
            raise PrometheusQueryError(
                f"Prometheus at {self.url} took more than {self.timeout_s:g} s over the query {query!r}; "
                "shorten the window, raise the step or the timeout"
            ) from exc
        except PrometheusApiClientException as exc:
            raise PrometheusQueryError(
                f"Prometheus at {self.url} refused the query {query!r}: {_api_error(str(exc))}"
            ) from exc
        except (requests.RequestException, ValueError, KeyError) as exc:
            raise PrometheusQueryError(
                f"{self.url} did not answer the query {query!r} as Prometheus would ({exc}); "
                "is that the Prometheus URL (http://127.0.0.1:9090 by default)?"
            ) from exc
        if not isinstance(result, list):
            raise PrometheusQueryError(
                f"unexpected answer from {self.url} to the query {query!r}: {result!r}"
            )
        return result


def _api_error(text: str) -> str:
    """Prometheus' own `error` from the library's message `HTTP Status Code 400 (b'<json body>')`."""
    match = re.match(r"HTTP Status Code (\d+) \((b(?:'.*'|\".*\"))\)$", text, re.DOTALL)
    if match is None:
        return text
    try:
        body = json.loads(ast.literal_eval(match.group(2)))
        return f"{body['error']} (HTTP {match.group(1)})"
    except (ValueError, SyntaxError, TypeError, KeyError):
        return text


def _empty_frame(labels: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"timestamp": pd.Series([], dtype="datetime64[ns, UTC]"), "t_s": pd.Series([], dtype=float)}
    )
    for label in labels:
        frame[label] = pd.Series([], dtype=object)
    frame["value"] = pd.Series([], dtype=float)
    return frame


def _empty_quantile_frame() -> pd.DataFrame:
    frame = _empty_frame([])
    frame["quantile"] = pd.Series([], dtype=float)
    frame["bucket_lower"] = pd.Series([], dtype=float)
    frame["bucket_upper"] = pd.Series([], dtype=float)
    frame["in_inf_bucket"] = pd.Series([], dtype=bool)
    return frame[list(QUANTILE_COLUMNS)]


def _tidy(result: list[dict[str, Any]], labels: Sequence[str], run_start: float) -> pd.DataFrame:
    """Range-query result -> one row per (series, timestamp): timestamp, t_s, labels..., value."""
    rows: list[tuple[Any, ...]] = []
    for series in result:
        metric = series.get("metric", {})
        key = tuple(metric.get(label, "") for label in labels)
        rows.extend((float(at), *key, float(value)) for at, value in series.get("values", []))
    if not rows:
        return _empty_frame(labels)
    raw = pd.DataFrame(rows, columns=["at", *labels, "value"]).sort_values(["at", *labels], kind="stable")
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(raw["at"], unit="s", utc=True),
            "t_s": raw["at"] - run_start,
        }
    )
    for label in labels:
        frame[label] = raw[label]
    frame["value"] = raw["value"]
    return frame.reset_index(drop=True)


# The columns of a quantile frame, one row per (timestamp, quantile).
QUANTILE_COLUMNS = ("timestamp", "t_s", "quantile", "value", "bucket_lower", "bucket_upper", "in_inf_bucket")


class PrometheusSeries:
    """The lab's series over one window `[start, end]` as tidy DataFrames.

    Points sit on a grid of `step_s` from `start` rounded up to a multiple of the step; `t_s` counts
    from `run_start` (default `start`), the run's start in its journal. A frame is empty, with its
    columns, where Prometheus has no data (e.g. the GPU frames on a machine without NVML). Ratios and
    quantiles are NaN at points whose rate window saw no requests.
    """

    def __init__(
        self,
        prometheus: str | PrometheusClient,
        start: TimeLike,
        end: TimeLike,
        *,
        step_s: float = 1.0,
        run_start: TimeLike | None = None,
        scrape_interval_s: float = 1.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.start, self.end = to_unix(start), to_unix(end)
        if self.end <= self.start:
            raise ValueError(f"the window must end after it starts (start {self.start}, end {self.end})")
        if step_s <= 0:
            raise ValueError(f"step must be positive, got {step_s}")
        self.step_s = step_s
        self.run_start = self.start if run_start is None else to_unix(run_start)
        self.rate_window = promql_duration(rate_window_s(step_s, scrape_interval_s))
        self._owned = isinstance(prometheus, str)
        self.client = (
            PrometheusClient(prometheus, timeout_s=timeout_s) if isinstance(prometheus, str) else prometheus
        )
        # A grid of whole steps keeps the frames of one run (and of different runs) joinable.
        self._grid_start = math.ceil(self.start / step_s - 1e-9) * step_s
        self._grid_end = math.floor(self.end / step_s + 1e-9) * step_s

    def close(self) -> None:
        if self._owned:
            self.client.close()

    def __enter__(self) -> PrometheusSeries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query_range(self, query: str, labels: Sequence[str] = ()) -> pd.DataFrame:
        """Any PromQL over the window as a tidy frame with the given labels as columns."""
        if self._grid_end < self._grid_start:
            return _empty_frame(labels)
        result = self.client.range(query, self._grid_start, self._grid_end, self.step_s)
        return _tidy(result, labels, self.run_start)

    def request_rate(self) -> pd.DataFrame:
        """Requests/s to the generation endpoints by `status_class` (`2xx`, `4xx`, `5xx`)."""
        return self.query_range(
            f"sum by (status_class) (label_replace(rate(llm_requests_total{{{GENERATION_ENDPOINT_MATCHER}}}"
            f'[{self.rate_window}]), "status_class", "${{1}}xx", "status_code", "([0-9]).."))',
            ["status_class"],
        )

    def rejection_rate(self) -> pd.DataFrame:
        """Requests/s turned away (503, or 429 on /v1) before generating, by `reason`."""
        return self.query_range(
            f"sum by (reason) (rate(llm_requests_rejected_total[{self.rate_window}]))", ["reason"]
        )

    def error_ratio(self) -> pd.DataFrame:
        """5xx / all generation requests: rates summed first, then divided (sloth#241).

        /generate's rejections are 503s and already counted in 5xx (/v1's are 429s: the availability SLI
        counts them); the denominator is every request the wrapper answered, 4xx included (the
        availability SLI is the one that leaves out the client's faults).
        """
        w = self.rate_window
        return self.query_range(
            f'sum(rate(llm_requests_total{{{GENERATION_ENDPOINT_MATCHER},status_code=~"5.."}}[{w}])) / '
            f"sum(rate(llm_requests_total{{{GENERATION_ENDPOINT_MATCHER}}}[{w}]))"
        )

    def availability(
        self,
        good_query: str = DEFAULT_AVAILABILITY_GOOD_QUERY,
        total_query: str = DEFAULT_AVAILABILITY_TOTAL_QUERY,
    ) -> pd.DataFrame:
        """good / valid requests per rate window, from the availability SLO's `sum(<counter>)` queries."""
        w = self.rate_window
        good, total = counter_sum_selector(good_query), counter_sum_selector(total_query)
        return self.query_range(f"sum(rate({good}[{w}])) / sum(rate({total}[{w}]))")

    def quantiles(self, metric: str, quantiles: Sequence[float], matchers: str = "") -> pd.DataFrame:
        """`histogram_quantile` of `metric` per point, with the bucket it interpolated in.

        The bounds come from the same `sum by (le) (rate(<metric>_bucket[w]))` vector Prometheus
        interpolated on, read back and searched by `labkit.measure.histograms.bucket_quantile`.
        """
        buckets_query = f"sum by (le) (rate({metric}_bucket{matchers}[{self.rate_window}]))"
        if self._grid_end < self._grid_start:
            return _empty_quantile_frame()
        grid = (self._grid_start, self._grid_end, self.step_s)
        per_time: dict[float, list[tuple[float, float]]] = {}
        for series in self.client.range(buckets_query, *grid):
            bound = float(series.get("metric", {}).get("le", "nan"))
            for at, value in series.get("values", []):
                per_time.setdefault(float(at), []).append((bound, float(value)))
        rows: list[tuple[Any, ...]] = []
        for q in quantiles:
            result = self.client.range(f"histogram_quantile({q:g}, {buckets_query})", *grid)
            for series in result:
                for at, value in series.get("values", []):
                    found = bucket_quantile(q, per_time.get(float(at), []))
                    rows.append((float(at), q, float(value), found.lower, found.upper, found.in_inf_bucket))
        if not rows:
            return _empty_quantile_frame()
        raw = pd.DataFrame(
            rows, columns=["at", "quantile", "value", "bucket_lower", "bucket_upper", "in_inf_bucket"]
        )
        raw = raw.sort_values(["at", "quantile"], kind="stable").reset_index(drop=True)
        frame = pd.DataFrame(
            {"timestamp": pd.to_datetime(raw["at"], unit="s", utc=True), "t_s": raw["at"] - self.run_start}
        )
        for column in QUANTILE_COLUMNS[2:]:
            frame[column] = raw[column]
        frame["in_inf_bucket"] = frame["in_inf_bucket"].astype(bool)
        return frame

    def latency_quantiles(self, quantiles: Sequence[float] = (0.5, 0.95, 0.99)) -> pd.DataFrame:
        """End-to-end duration of successful generation requests (server-side), seconds."""
        return self.quantiles("llm_request_duration_seconds", quantiles, f"{{{GENERATION_ENDPOINT_MATCHER}}}")

    def ttft_quantiles(self, quantiles: Sequence[float] = (0.5, 0.95, 0.99)) -> pd.DataFrame:
        """Time to first token (server-side, from the request's arrival), seconds."""
        return self.quantiles("llm_time_to_first_token_seconds", quantiles)

    def itl_quantiles(self, quantiles: Sequence[float] = (0.5, 0.95, 0.99)) -> pd.DataFrame:
        """Gaps between token chunks after the first (server-side), seconds."""
        return self.quantiles("llm_inter_token_latency_seconds", quantiles)

    def in_flight(self) -> pd.DataFrame:
        """Admitted generation requests not yet finished."""
        return self.query_range("sum(llm_requests_in_flight)")

    def restarts(self) -> pd.DataFrame:
        """`lab_service_restarts_total` by `service`: the counter itself; restarts in the run = growth."""
        return self.query_range("sum by (service) (lab_service_restarts_total)", ["service"])

    def service_up(self) -> pd.DataFrame:
        """1 while a service answers its readiness check, by `service`."""
        return self.query_range("max by (service) (lab_service_up)", ["service"])

    def service_cpu(self) -> pd.DataFrame:
        """CPU cores in use (CPU seconds per second) of each service's process tree, by `service`."""
        return self.query_range(
            f"sum by (service) (rate(lab_service_cpu_seconds_total[{self.rate_window}]))", ["service"]
        )

    def service_memory(self) -> pd.DataFrame:
        """Resident memory of each service's process tree, bytes, by `service`."""
        return self.query_range("sum by (service) (lab_service_resident_memory_bytes)", ["service"])

    def gpu_available(self) -> bool:
        """True when the exporter reported a GPU (NVML answered) at any point of the window."""
        window = promql_duration(self.end - self.start)
        result = self.client.instant(f"max(max_over_time(lab_gpu_available[{window}]))", at=self.end)
        return bool(result) and float(result[0]["value"][1]) >= 1

    def gpu_utilization(self) -> pd.DataFrame:
        """Busy ratio 0..1 by `gpu`, `uuid`, `name`; empty without a GPU (never a made-up zero)."""
        labels = ["gpu", "uuid", "name"]
        if not self.gpu_available():
            return _empty_frame(labels)
        return self.query_range("lab_gpu_utilization_ratio", labels)

    def gpu_memory(self) -> pd.DataFrame:
        """GPU memory bytes by `gpu`, `uuid`, `name` and `memory` (`used` or `total`); empty without a GPU."""
        labels = ["gpu", "uuid", "name", "memory"]
        if not self.gpu_available():
            return _empty_frame(labels)
        return self.query_range(
            'label_replace(lab_gpu_memory_used_bytes, "memory", "used", "", "") or '
            'label_replace(lab_gpu_memory_total_bytes, "memory", "total", "", "")',
            labels,
        )


def save_series(run_dir: RunDirectory | Path | str, frames: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Write each frame as `<run_dir>/prometheus/<name>.csv` (timestamps ISO 8601 UTC); the paths."""
    run = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(Path(run_dir))
    written: list[Path] = []
    for name, frame in frames.items():
        if not _FRAME_NAME.match(name):
            raise ValueError(
                f"series name {name!r} must be letters, digits, '.', '_' or '-' (it names a file)"
            )
        written.append(
            run.write_text(series_file(name), frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ"))
        )
    return written
