"""labkit.measure.collect.save_prometheus_series: which files it writes, what an empty series looks like,
and that an unreachable Prometheus leaves the run directory as it was.

The Prometheus here is a fake HTTP server on 127.0.0.1 answering canned series: the test is about the
files written for known answers (a restart step, an empty series, no GPU), which a real Prometheus cannot
be made to give at chosen timestamps in the past. The queries themselves run against a real Prometheus in
tests/test_prom.py.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest

from labkit.measure.collect import ALERT_LABELS, SERIES, save_prometheus_series
from labkit.measure.prom import QUANTILE_COLUMNS, PrometheusUnreachableError
from labkit.report import RunData, client_server_table, restarts_figure
from labkit.rundir import RunDirectoryError
from tests.conftest import free_port, reply_json
from tests.test_report_data import KILL_AT, T0, write_chaos_run

RESTART_AT = T0 + KILL_AT + 1  # the exporter counts the model's restart one scrape after the kill


def _range_answer(query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    """Canned range series: the model's restart counter and the output token rate; nothing else."""
    grid = [start + i * step for i in range(round((end - start) / step) + 1)]
    if "lab_service_restarts_total" in query:
        return [
            {"metric": {"service": "model"}, "values": [[t, "0" if t < RESTART_AT else "1"] for t in grid]},
            {"metric": {"service": "wrapper"}, "values": [[t, "0"] for t in grid]},
        ]
    if "llm_output_tokens_total" in query:
        return [{"metric": {}, "values": [[t, "110"] for t in grid]}]
    if query == "ALERTS":  # the fast page firing for 10 s after the kill
        labels = {"alertname": "SloErrorBudgetBurnPage", "alertstate": "firing", "severity": "page"}
        labels |= {"slo": "availability", "objective": "99%", "long_window": "2m", "short_window": "10s"}
        return [{"metric": labels, "values": [[t, "1"] for t in grid if RESTART_AT <= t < RESTART_AT + 10]}]
    return []


class _FakePrometheus(BaseHTTPRequestHandler):
    queries: list[str]

    def do_GET(self) -> None:
        url = urlparse(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.queries.append(params.get("query", ""))
        if url.path == "/api/v1/query_range":
            start, end, step = (float(params[k]) for k in ("start", "end", "step"))
            data = {"resultType": "matrix", "result": _range_answer(params["query"], start, end, step)}
        elif url.path == "/api/v1/query":
            data = {"resultType": "matrix", "result": []}  # no raw samples, no GPU
        else:
            self.send_error(404)
            return
        reply_json(self, {"status": "success", "data": data})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[tuple[str, list[str]]]:
    queries: list[str] = []
    handler = type("Handler", (_FakePrometheus,), {"queries": queries})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", queries
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_every_series_is_written_and_read_back(tmp_path: Path, prometheus: tuple[str, list[str]]) -> None:
    url, queries = prometheus
    run_dir = write_chaos_run(tmp_path, prometheus=False)
    written = save_prometheus_series(run_dir, url, T0 - 2, T0 + 70)
    directory = run_dir / "prometheus"
    assert [p.name for p in written[-3:]] == ["server_slis.json", "client_vs_server.csv", "window.json"]
    assert {p.name for p in written} == {f"{name}.csv" for name in SERIES} | {
        "server_slis.json",
        "client_vs_server.csv",
        "window.json",
    }
    assert any("llm_faults_active" in q for q in queries)

    restarts = pd.read_csv(directory / "restarts.csv")
    assert list(restarts.columns) == ["timestamp", "t_s", "service", "value"]
    assert len(restarts) == 2 * 73  # two services on a 1 s grid over 72 s
    # No data: the header only, never a made-up value.
    assert (directory / "gpu_utilization.csv").read_text().strip() == "timestamp,t_s,gpu,uuid,name,value"
    assert (directory / "latency_quantiles.csv").read_text().strip() == ",".join(QUANTILE_COLUMNS)

    alerts = pd.read_csv(directory / "alerts.csv")
    assert list(alerts.columns) == ["timestamp", "t_s", *ALERT_LABELS, "value"]
    assert set(alerts["alertstate"]) == {"firing"} and len(alerts) == 10

    window = json.loads((directory / "window.json").read_text())
    # run_start: the journal's first event (experiment_started, 5 s before the method)
    assert window["start"] == T0 - 2 and window["end"] == T0 + 70 and window["run_start"] == T0 - 5
    assert window["rate_window_s"] == 4.0  # max(4 scrapes, step + scrape) at 1 s
    assert window["gpu_available"] is False and window["prometheus_url"] == url
    slis = json.loads((directory / "server_slis.json").read_text())
    availability = next(row for row in slis["slis"] if row["slo"] == "availability")
    assert availability["total"] == 0 and availability["sli"] is None  # NaN is not JSON

    run = RunData.load(run_dir)
    assert run.problems == ()
    model = run.series["restarts"].query("service == 'model'")
    assert model.loc[model["value"] == 1, "t_s"].min() == pytest.approx(KILL_AT + 1)
    (ax,) = restarts_figure(run).axes
    (line,) = [line for line in ax.lines if line.get_label() == "model"]
    assert np.asarray(line.get_ydata(), float).max() == 1
    comparison = client_server_table(run)
    row = comparison.loc[comparison["SLO"] == "availability"].iloc[0]
    assert row["client SLI (%)"] == pytest.approx(95.0) and math.isnan(row["server SLI (%)"])


def test_an_unreachable_prometheus_writes_nothing(tmp_path: Path) -> None:
    run_dir = write_chaos_run(tmp_path, prometheus=False)
    with pytest.raises(PrometheusUnreachableError, match="is the lab up"):
        save_prometheus_series(run_dir, f"http://127.0.0.1:{free_port()}", T0, T0 + 70)
    assert not (run_dir / "prometheus").exists()


def test_a_failed_collection_keeps_the_previous_one(tmp_path: Path) -> None:
    run_dir = write_chaos_run(tmp_path)
    before = {p.name: p.read_bytes() for p in (run_dir / "prometheus").iterdir()}
    with pytest.raises(PrometheusUnreachableError):
        save_prometheus_series(run_dir, f"http://127.0.0.1:{free_port()}", T0, T0 + 70)
    assert {p.name: p.read_bytes() for p in (run_dir / "prometheus").iterdir()} == before


def test_a_missing_run_directory_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(RunDirectoryError, match="does not exist"):
        save_prometheus_series(tmp_path / "nope", "http://127.0.0.1:9", T0, T0 + 1)
