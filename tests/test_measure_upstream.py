"""An upstream's key series (labkit.measure.upstream): the PromQL that picks whichever of the serving stacks'
names exists, and a real Prometheus scraping the lab's `upstream` job.

Two exporters stand in for vLLM and SGLang, which cannot run here (GPUs, model downloads): one answers in the
Prometheus text format whatever it is asked (as a Rust or Go server does: the colons reach Prometheus as
is), the other is prometheus_client's own handler, which vLLM and SGLang serve: it negotiates OpenMetrics
with Prometheus and then writes `sglang:num_running_reqs`'s samples as `sglang_num_running_reqs`
(prometheus/client_python#1177).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from labkit.lab.prometheus_config import UPSTREAM_JOB, ScrapeJob, render_scrape_config
from labkit.measure.collect import SERIES, collect_series, upstream_metrics_found
from labkit.measure.prom import PrometheusSeries
from labkit.measure.slo.spec import load_slo_spec
from labkit.measure.upstream import UPSTREAM_SERIES, upstream_metric_names, upstream_queries
from tests.conftest import free_ports, wait_for


def test_every_key_series_is_saved_with_the_run() -> None:
    names = [series.name for series in UPSTREAM_SERIES]
    assert names == ["upstream_queue", "upstream_running", "upstream_kv_cache", "upstream_ttft_p95"]
    assert set(names) <= set(SERIES)


def test_each_query_tries_every_stack_s_name_in_order_with_or() -> None:
    queries = upstream_queries("4s")
    assert queries["upstream_queue"] == " or ".join(
        f'sum({name}{{job="upstream"}})'
        for name in (
            "vllm:num_requests_waiting",
            "vllm_num_requests_waiting",
            "sglang:num_queue_reqs",
            "sglang_num_queue_reqs",
            "tgi_queue_size",
            "llamacpp:requests_deferred",
            "llamacpp_requests_deferred",
        )
    )
    running = queries["upstream_running"]
    assert running.index("vllm:num_requests_running") < running.index("sglang:num_running_reqs")
    assert "tgi_batch_current_size" in running and "llamacpp:requests_processing" in running
    kv = queries["upstream_kv_cache"]
    # vLLM's current name first, its former one after; a cache is as full as its fullest rank (max).
    assert kv.startswith(
        'max(vllm:kv_cache_usage_perc{job="upstream"}) or max(vllm_kv_cache_usage_perc{job="upstream"}) '
        'or max(vllm:gpu_cache_usage_perc{job="upstream"})'
    )
    assert "sglang:token_usage" in kv and "llamacpp:kv_cache_usage_ratio" in kv and "tgi" not in kv
    ttft = queries["upstream_ttft_p95"]
    assert ttft.startswith(
        "histogram_quantile(0.95, sum by (le) "
        '(rate(vllm:time_to_first_token_seconds_bucket{job="upstream"}[4s]))) or '
    )
    assert ttft.count("histogram_quantile") == 4  # vLLM's and SGLang's, each with its underscore twin
    assert "sglang_time_to_first_token_seconds_bucket" in upstream_metric_names()


class _TextFormat(BaseHTTPRequestHandler):
    """/metrics in the Prometheus text format (0.0.4), whatever the Accept header asks."""

    registry: CollectorRegistry

    def do_GET(self) -> None:
        body = generate_latest(self.registry)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Upstream:
    prometheus: str
    start: float
    end: float


def _value(url: str, query: str) -> float | None:
    result = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=2).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _prometheus_config(path: Path, targets: list[str]) -> None:
    """The lab's template with one job `upstream` of several targets (the lab's has one; the queries do not
    care how many)."""
    rendered = render_scrape_config(
        [ScrapeJob(UPSTREAM_JOB, targets[0])],
        scrape_interval_s=0.5,
        lab_id="test",
        rules_dir=str(path.parent / "rules"),
    )
    path.write_text(rendered.replace(f'"{targets[0]}"', ", ".join(f'"{t}"' for t in targets)))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.skip("the prometheus binary is not installed (Debian package prometheus)")
    tmp = tmp_path_factory.mktemp("upstream")
    (tmp / "rules").mkdir()
    # vLLM-like, in the text format: the colons reach Prometheus.
    vllm = CollectorRegistry()
    Gauge("vllm:num_requests_waiting", "waiting", ["model_name"], registry=vllm).labels("m").set(3)
    Gauge("vllm:kv_cache_usage_perc", "kv", ["model_name"], registry=vllm).labels("m").set(0.25)
    # The former name, still exported by some versions: the query must prefer the current one.
    Gauge("vllm:gpu_cache_usage_perc", "kv (old)", ["model_name"], registry=vllm).labels("m").set(0.9)
    ttft = Histogram(
        "vllm:time_to_first_token_seconds",
        "ttft",
        ["model_name"],
        buckets=(0.05, 0.1, 0.25, 0.5, 1.0),
        registry=vllm,
    ).labels("m")
    text_server = ThreadingHTTPServer(("127.0.0.1", 0), type("Text", (_TextFormat,), {"registry": vllm}))
    text_thread = threading.Thread(target=text_server.serve_forever, daemon=True)
    text_thread.start()
    # SGLang-like, through prometheus_client's own handler: OpenMetrics, the colons sent as underscores.
    sglang = CollectorRegistry()
    Gauge("sglang:num_running_reqs", "running", ["model_name"], registry=sglang).labels("m").set(2)
    sglang_port, prom_port = free_ports(2)
    server, thread = start_http_server(sglang_port, addr="127.0.0.1", registry=sglang)
    config = tmp / "prometheus.yml"
    _prometheus_config(config, [f"127.0.0.1:{text_server.server_address[1]}", f"127.0.0.1:{sglang_port}"])
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
        waiting = 'vllm:num_requests_waiting{job="upstream"}'
        wait_for(lambda: _value(url, waiting) == 3, 30, "the text-format scrape")
        running = 'sglang_num_running_reqs{job="upstream"}'
        wait_for(lambda: _value(url, running) == 2, 10, "the OpenMetrics scrape")
        start = time.time()
        for _ in range(20):
            ttft.observe(0.08)
        count = "sum(vllm:time_to_first_token_seconds_count)"
        wait_for(lambda: _value(url, count) == 20, 10, "the TTFT scrape")
        time.sleep(1.5)  # a few more scrapes, so that rate() has samples on both sides
        yield Upstream(url, start, time.time())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for http_server, http_thread in ((server, thread), (text_server, text_thread)):
            http_server.shutdown()
            http_server.server_close()
            http_thread.join(timeout=5)


def test_prometheus_keeps_the_colons_and_the_series_pick_whichever_name_exists(upstream: Upstream) -> None:
    with PrometheusSeries(upstream.prometheus, upstream.start, upstream.end, step_s=0.5) as series:
        frames = collect_series(series, load_slo_spec())
        found = upstream_metrics_found(series)
    assert set(frames["upstream_queue"]["value"]) == {3.0}  # vllm:num_requests_waiting, colon kept
    assert set(frames["upstream_running"]["value"]) == {2.0}  # sglang_num_running_reqs, colon lost
    assert set(frames["upstream_kv_cache"]["value"]) == {0.25}  # kv_cache_usage_perc, not the old 0.9
    ttft = frames["upstream_ttft_p95"]["value"].dropna()
    assert not ttft.empty and ((ttft > 0.05) & (ttft <= 0.1)).all()  # inside the bucket of 0.08
    assert found == [
        "sglang_num_running_reqs",
        "vllm:gpu_cache_usage_perc",
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_waiting",
        "vllm:time_to_first_token_seconds_bucket",
    ]
    # The lab's own series find nothing of this upstream: it is only ever read through its own job.
    assert frames["in_flight"].empty
