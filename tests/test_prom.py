"""labkit.measure.prom against a real Prometheus scraping a tiny exporter with known values, plus its pure
parts.

The exporter stands in for the lab's wrapper and exporter: the values must be known exactly, and one
"wrapper restart" (every counter back to 0) must happen at a known moment.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import Metric

from labkit.errors import LabkitError
from labkit.measure.collect import ALERT_LABELS, collect_series
from labkit.measure.histograms import GENERATION_ENDPOINT_MATCHER, REQUEST_DURATION_BUCKETS, bucket_quantile
from labkit.measure.prom import (
    QUANTILE_COLUMNS,
    PrometheusClient,
    PrometheusQueryError,
    PrometheusSeries,
    PrometheusUnreachableError,
    rate_window_s,
    save_series,
    to_unix,
    window_increase,
)
from labkit.measure.slo.server import server_quantile, server_slis
from labkit.measure.slo.spec import load_slo_spec
from tests.conftest import free_port, free_ports

INF = math.inf

# ---------------------------------------------------------------------------------------------------
# Pure parts


def test_window_increase_subtracts_the_baseline_before_start_and_ignores_later_samples() -> None:
    samples = [(9.0, 5.0), (10.0, 7.0), (11.0, 9.0), (12.0, 12.0), (13.0, 20.0)]
    assert window_increase(samples, 10.0, 12.0) == (5.0, 0)  # 12 - 7, the sample at 13 is after the end
    assert window_increase(samples, 10.5, 12.5) == (5.0, 0)  # the baseline is the last sample <= start


def test_window_increase_counts_a_series_born_in_the_window_from_zero() -> None:
    assert window_increase([(11.0, 2.0), (12.0, 3.0)], 10.0, 12.0) == (3.0, 0)


def test_window_increase_counts_through_a_reset() -> None:
    # 10 -> 18 (+8), restart: 3 (+3 since the restart), 5 (+2)
    assert window_increase([(1.0, 10.0), (2.0, 18.0), (3.0, 3.0), (4.0, 5.0)], 1.0, 4.0) == (13.0, 1)


def test_rate_window_is_valid_for_a_one_second_scrape() -> None:
    assert rate_window_s(1.0) == 4.0  # four samples
    assert rate_window_s(10.0) == 11.0  # windows overlap: no sample falls between two points
    assert rate_window_s(1.0, scrape_interval_s=15.0) == 60.0
    with pytest.raises(ValueError):
        rate_window_s(0)


def test_times_are_unix_seconds_or_aware_datetimes() -> None:
    assert to_unix(datetime(2024, 1, 1, tzinfo=UTC)) == 1704067200.0
    assert to_unix(12) == 12.0
    with pytest.raises(ValueError, match="no timezone"):
        to_unix(datetime(2024, 1, 1))
    with pytest.raises(ValueError):
        to_unix(float("nan"))


def test_a_window_must_be_ordered_and_fit_prometheus_point_limit() -> None:
    with pytest.raises(ValueError, match="end after it starts"):
        PrometheusSeries("http://127.0.0.1:9", 10, 5)
    series = PrometheusSeries("http://127.0.0.1:9", 0, 86_400)  # a day at 1 s: 86,401 points
    with pytest.raises(PrometheusQueryError, match="raise the step to at least 8 s"):
        series.in_flight()
    series.close()


def test_save_series_refuses_names_that_are_not_file_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names a file"):
        save_series(tmp_path, {"../escape": pd.DataFrame()})


def test_an_unreachable_prometheus_says_to_start_the_lab() -> None:
    series = PrometheusSeries(f"http://127.0.0.1:{free_port()}", time.time() - 10, time.time())
    with pytest.raises(PrometheusUnreachableError, match=r"is the lab up\?.*labkit up") as caught:
        series.request_rate()
    assert isinstance(caught.value, LabkitError)
    series.close()


# ---------------------------------------------------------------------------------------------------
# A real Prometheus scraping known values


class _Swappable:
    """A collector whose metrics can be replaced at once: a process restart in one step."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.current = registry

    def collect(self) -> Iterable[Metric]:
        return self.current.collect()


class _FakeWrapper:
    """The wrapper's request counter and duration histogram, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "llm_requests_total", "requests", ["endpoint", "status_code"], registry=self.registry
        )
        self.duration = Histogram(
            "llm_request_duration_seconds",
            "duration",
            ["endpoint"],
            buckets=REQUEST_DURATION_BUCKETS,
            registry=self.registry,
        )
        for code in ("200", "422", "499", "500"):
            self.requests.labels("/generate", code)
        self.duration.labels("/generate")

    def count(self, code: str, n: int) -> None:
        self.requests.labels("/generate", code).inc(n)

    def observe(self, seconds: float, n: int = 1) -> None:
        for _ in range(n):
            self.duration.labels("/generate").observe(seconds)


@dataclass
class Scenario:
    url: str
    exporter_url: str
    t0: float  # after the baseline: 2 x 200 and 2 x 0.2 s before the window
    t1: float  # after phase 1: +18 x 200, +2 x 500, +3 x 422, +1 x 499; durations below
    t2: float  # after a wrapper restart: 5 x 200, 1 x 500 counted by the new process


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def _value(url: str, query: str) -> float | None:
    try:
        result = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=2).json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.skip("the prometheus binary is not installed (Debian package prometheus)")
    tmp = tmp_path_factory.mktemp("prom")
    registry = CollectorRegistry()
    wrapper = _FakeWrapper()
    swappable = _Swappable(wrapper.registry)
    registry.register(swappable)  # type: ignore[arg-type]
    restarts = Counter("lab_service_restarts_total", "restarts", ["service"], registry=registry)
    up = Gauge("lab_service_up", "up", ["service"], registry=registry)
    Gauge("lab_gpu_available", "gpu", registry=registry).set(0)
    in_flight = Gauge("llm_requests_in_flight", "in flight", registry=registry)
    for service in ("model", "wrapper"):
        restarts.labels(service)
        up.labels(service).set(1)
    wrapper.count("200", 2)
    wrapper.observe(0.2, 2)

    exporter_port, prom_port = free_ports(2)
    server, thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        "scrape_configs:\n  - job_name: fake\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter_port}']\n"
    )
    url = f"http://127.0.0.1:{prom_port}"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        total = 'sum(llm_requests_total{status_code="200"})'
        _wait_for(lambda: _value(url, total) == 2, 30, "the first scrape")
        t0 = time.time()
        wrapper.count("200", 18)
        wrapper.count("500", 2)
        wrapper.count("422", 3)
        wrapper.count("499", 1)
        wrapper.observe(0.2, 10)
        wrapper.observe(0.6, 8)
        wrapper.observe(2.2)
        wrapper.observe(500.0)
        restarts.labels("model").inc()
        up.labels("model").set(0)
        in_flight.set(3)
        _wait_for(lambda: _value(url, "sum(llm_requests_total)") == 26, 10, "phase 1 to be scraped")
        t1 = time.time()
        restarted = _FakeWrapper()
        restarted.count("200", 5)
        restarted.count("500", 1)
        restarted.observe(0.2, 5)
        restarted.observe(0.6)
        swappable.current = restarted.registry
        _wait_for(lambda: _value(url, "sum(llm_requests_total)") == 6, 10, "the restart to be scraped")
        t2 = time.time()
        yield Scenario(url, f"http://127.0.0.1:{exporter_port}", t0, t1, t2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_counter_increase_is_exact_and_leaves_out_counts_before_start(scenario: Scenario) -> None:
    with PrometheusClient(scenario.url) as client:
        good = client.counter_increase('llm_requests_total{status_code="200"}', scenario.t0, scenario.t1)
        everything = client.counter_increase("llm_requests_total", scenario.t0, scenario.t1)
    assert (good.value, good.resets, good.series) == (18.0, 0, 1)
    assert (everything.value, everything.series) == (24.0, 4)


def test_counter_increase_counts_through_a_restart(scenario: Scenario) -> None:
    with PrometheusClient(scenario.url) as client:
        good = client.counter_increase('llm_requests_total{status_code="200"}', scenario.t0, scenario.t2)
        after = client.counter_increase('llm_requests_total{status_code="200"}', scenario.t1, scenario.t2)
    assert (good.value, good.resets) == (23.0, 1)
    assert (after.value, after.resets) == (5.0, 1)


def test_server_slis_of_the_lab_spec_are_exact_counts(scenario: Scenario) -> None:
    frame = server_slis(scenario.url, scenario.t0, scenario.t1, load_slo_spec())
    by_objective = frame.set_index("objective")
    availability = by_objective.loc["99% of valid requests succeed"]
    # valid = all but 4xx other than 429: 18 x 200 + 2 x 500
    assert (availability["good"], availability["total"], availability["sli"]) == (18, 20, 0.9)
    assert availability["promql"].startswith(
        f"sum(increase(llm_requests_total{{{GENERATION_ENDPOINT_MATCHER},status_code"
    )
    latency3 = by_objective.loc["95% of requests within 3 s"]
    assert (latency3["good"], latency3["total"], latency3["threshold_s"]) == (19, 20, 3.0)
    assert 'le="3.0"' in latency3["promql"]
    # No TTFT histogram at all in this exporter: no events, no SLI (not a made-up 0 or 1).
    ttft = frame[frame["slo"] == "time-to-first-token"].iloc[0]
    assert ttft["total"] == 0 and math.isnan(ttft["sli"])
    assert frame["counter_resets"].sum() == 0

    across = server_slis(scenario.url, scenario.t0, scenario.t2, load_slo_spec())
    row = across[across["slo"] == "availability"].iloc[0]
    assert (row["good"], row["total"]) == (23, 26)  # 18 + 5 good of 20 + 6 valid, through the restart
    assert int(row["counter_resets"]) >= 1


def test_server_quantile_of_the_window_with_bucket_bounds(scenario: Scenario) -> None:
    p95 = server_quantile(scenario.url, scenario.t0, scenario.t1, quantile=0.95)
    assert (p95.value, p95.lower, p95.upper, p95.in_inf_bucket, p95.observations) == (
        2.5,
        2.0,
        2.5,
        False,
        20,
    )
    p50 = server_quantile(scenario.url, scenario.t0, scenario.t1, quantile=0.5)
    assert (p50.lower, p50.upper) == (0.1, 0.25)
    p99 = server_quantile(scenario.url, scenario.t0, scenario.t1, quantile=0.99)
    assert p99.in_inf_bucket and p99.value == 300.0


def test_bucket_quantile_agrees_with_prometheus_histogram_quantile(scenario: Scenario) -> None:
    with PrometheusClient(scenario.url) as client:
        vector = client.instant("sum by (le) (llm_request_duration_seconds_bucket)", at=scenario.t1)
        buckets = [(float(s["metric"]["le"]), float(s["value"][1])) for s in vector]
        for q in (0.1, 0.5, 0.8, 0.95, 0.99):
            query = f"histogram_quantile({q}, sum by (le) (llm_request_duration_seconds_bucket))"
            prometheus = float(client.instant(query, at=scenario.t1)[0]["value"][1])
            ours = bucket_quantile(q, buckets)
            assert ours.value == pytest.approx(prometheus, rel=1e-12), q
            assert ours.lower <= prometheus <= ours.upper


def test_frames_have_the_documented_columns_and_stay_inside_the_window(scenario: Scenario) -> None:
    with PrometheusSeries(scenario.url, scenario.t0, scenario.t2, run_start=scenario.t0 - 100) as series:
        frames = collect_series(series, load_slo_spec())
        assert not series.gpu_available()
    labels = {
        "faults_active": ["kind"],
        "request_rate": ["status_class"],
        "rejection_rate": ["reason"],
        "restarts": ["service"],
        "service_up": ["service"],
        "service_cpu": ["service"],
        "service_memory": ["service"],
        "gpu_utilization": ["gpu", "uuid", "name"],
        "gpu_memory": ["gpu", "uuid", "name", "memory"],
        "alerts": list(ALERT_LABELS),
    }
    start = pd.Timestamp(scenario.t0, unit="s", tz="UTC")
    end = pd.Timestamp(scenario.t2, unit="s", tz="UTC")
    for name, frame in frames.items():
        if name.endswith("_quantiles"):
            assert list(frame.columns) == list(QUANTILE_COLUMNS), name
        else:
            assert list(frame.columns) == ["timestamp", "t_s", *labels.get(name, []), "value"], name
        assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]", name
        assert frame["timestamp"].between(start, end).all(), name
        expected_t = (frame["timestamp"] - start).dt.total_seconds() + 100
        assert (frame["t_s"] - expected_t).abs().max() < 1e-3 if len(frame) else True, name
    for name in ("request_rate", "availability", "latency_quantiles", "restarts", "in_flight"):
        assert len(frames[name]) > 0, name
    assert frames["gpu_utilization"].empty and frames["gpu_memory"].empty  # lab_gpu_available is 0
    assert frames["service_cpu"].empty  # this exporter has no CPU series: empty, with its columns
    assert set(frames["request_rate"]["status_class"]) == {"2xx", "4xx", "5xx"}
    assert frames["restarts"].groupby("service")["value"].last().to_dict() == {"model": 1.0, "wrapper": 0.0}
    assert frames["in_flight"]["value"].iloc[-1] == 3
    ratios = pd.concat([frames["availability"]["value"], frames["error_ratio"]["value"]]).dropna()
    assert len(ratios) and ratios.between(0, 1).all()

    quantiles = frames["latency_quantiles"].dropna(subset=["value"])
    assert set(quantiles["quantile"]) == {0.5, 0.95, 0.99}
    # Prometheus' interpolated value lies in the bucket we found in the same bucket vector.
    assert (quantiles["bucket_lower"] <= quantiles["value"]).all()
    assert (quantiles["value"] <= quantiles["bucket_upper"]).all()
    in_inf = quantiles[quantiles["in_inf_bucket"]]
    assert len(in_inf) > 0  # the 500 s observation puts p99 in the +Inf bucket while it is in the window
    assert (in_inf["value"] == 300.0).all() and (in_inf["bucket_upper"] == INF).all()
    assert frames["ttft_quantiles"].empty


def test_save_series_writes_one_csv_per_frame(scenario: Scenario, tmp_path: Path) -> None:
    with PrometheusSeries(scenario.url, scenario.t0 - 2, scenario.t2) as series:
        frames = {"request_rate": series.request_rate(), "latency_quantiles": series.latency_quantiles()}
    paths = save_series(tmp_path, frames)
    assert paths == [
        tmp_path / "prometheus" / "request_rate.csv",
        tmp_path / "prometheus" / "latency_quantiles.csv",
    ]
    back = pd.read_csv(paths[0])
    assert len(back) > 0
    assert list(back.columns) == list(frames["request_rate"].columns) and len(back) == len(
        frames["request_rate"]
    )
    assert back["timestamp"].iloc[0].endswith("Z")


def test_a_query_error_names_the_query(scenario: Scenario) -> None:
    with PrometheusClient(scenario.url) as client, pytest.raises(PrometheusQueryError) as caught:
        client.instant("sum(llm_requests_total")
    assert "sum(llm_requests_total" in str(caught.value) and "parse error" in str(caught.value)


def test_a_url_that_is_not_prometheus_is_named(scenario: Scenario) -> None:
    with (
        PrometheusClient(scenario.exporter_url) as client,
        pytest.raises(PrometheusQueryError, match="Prometheus URL"),
    ):
        client.instant("up")
