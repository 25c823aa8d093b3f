"""The upstream's own metrics in a run's report: drawn on the run's clock with a caption from what is drawn,
or one line saying why there are none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labkit.measure.prom import save_series
from labkit.report import RunData, report_figures, upstream_figure, upstream_note
from labkit.rundir import RunDirectory, RunFile
from tests.test_report_data import T0, _frame, write_chaos_run

_COLLECTOR_START = T0 - 100.0
_T = [float(x) for x in range(71)]


def _upstream_run(
    tmp_path: Path, frames: dict[str, pd.DataFrame], *, found: list[str], lab: dict[str, Any]
) -> RunData:
    path = write_chaos_run(tmp_path / "runs")
    run = RunDirectory(path)
    save_series(path, frames)
    window = run.read_json_object(RunFile.WINDOW, [])
    assert window is not None
    run.write_json(RunFile.WINDOW, {**window, "rate_window_s": 4.0, "upstream_metrics": found})
    run.write_json(RunFile.LAB, lab)
    return RunData.load(path)


def _vllm_frames() -> dict[str, pd.DataFrame]:
    waiting = [3.0 if 20 <= x < 30 else 0.0 for x in _T]
    return {
        "upstream_queue": _frame(_T, waiting, _COLLECTOR_START),
        "upstream_running": _frame(_T, [1.0] * len(_T), _COLLECTOR_START),
        "upstream_kv_cache": _frame(_T, [0.25] * len(_T), _COLLECTOR_START),
        "upstream_ttft_p95": _frame(_T, [0.08] * len(_T), _COLLECTOR_START),
    }


_VLLM_LAB = {
    "engine": "openai",
    "model_api": "openai",
    "upstream_url": "http://127.0.0.1:8001/v1",
    "upstream_metrics_url": "http://127.0.0.1:8001/metrics",
}
_VLLM_NAMES = [
    "vllm:kv_cache_usage_perc",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:time_to_first_token_seconds_bucket",
]


def test_a_vllm_upstream_s_series_are_drawn_on_the_run_s_clock(tmp_path: Path) -> None:
    run = _upstream_run(tmp_path, _vllm_frames(), found=_VLLM_NAMES, lab=_VLLM_LAB)
    fig = upstream_figure(run)
    assert fig is not None
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "requests",
        "KV-cache in use (%)",
        "upstream p95 TTFT (s)",
    ]
    queue = next(line for line in fig.axes[0].get_lines() if line.get_label() == "waiting")
    x, y = queue.get_data()
    assert min(x[pd.Series(y) > 0]) == pytest.approx(20.0)  # recounted from the method's start
    kv = next(line for line in fig.axes[1].get_lines() if line.get_label() == "KV-cache in use")
    assert set(kv.get_ydata()) == {25.0}  # a 0-1 ratio drawn in %
    caption = fig.caption
    assert "; requests waiting in the upstream's queue (dashed blue, vllm:num_requests_waiting)" in caption
    assert "running: requests the upstream is generating for (solid blue, " in caption
    assert "; KV-cache in use (solid blue, vllm:kv_cache_usage_perc)" in caption
    assert "vllm:time_to_first_token_seconds" in caption
    assert "the p95 is histogram_quantile over a 4 s rate window" in caption
    assert "Shaded:" in caption and "exported no" not in caption
    assert fig.alt.startswith("The upstream's own metrics.")
    assert report_figures(run)["upstream"].caption == caption
    note = upstream_note(run)
    assert note.startswith("upstream metrics from http://127.0.0.1:8001/metrics: ")
    assert "vllm:num_requests_waiting" in note


def test_a_tgi_upstream_without_kv_cache_or_ttft_draws_what_it_has_and_says_what_it_lacks(
    tmp_path: Path,
) -> None:
    frames = _vllm_frames()
    for name in ("upstream_kv_cache", "upstream_ttft_p95"):
        frames[name] = _frame([], [], _COLLECTOR_START)
    run = _upstream_run(tmp_path, frames, found=["tgi_batch_current_size", "tgi_queue_size"], lab=_VLLM_LAB)
    fig = upstream_figure(run)
    assert fig is not None and [ax.get_ylabel() for ax in fig.axes] == ["requests"]
    assert "(dashed blue, tgi_queue_size)" in fig.caption
    assert "the upstream exported no KV-cache in use, no the upstream's own p95 time" in fig.caption


@pytest.mark.parametrize(
    ("lab", "expected"),
    [
        (
            {"engine": "llamacpp-server", "upstream_metrics_url": None},
            "the upstream exposes no metrics (llama-cpp-python's server has no /metrics)",
        ),
        (
            {"engine": "openai", "upstream_metrics_url": None},
            "the upstream exposes no metrics (no --upstream-metrics-url was given)",
        ),
        (
            {"engine": "openai", "upstream_metrics_url": "http://127.0.0.1:8001/metrics"},
            "the upstream exposes no metrics the report reads: http://127.0.0.1:8001/metrics had none",
        ),
    ],
)
def test_no_upstream_series_is_one_line_saying_why(
    tmp_path: Path, lab: dict[str, Any], expected: str
) -> None:
    empty = {name: _frame([], [], _COLLECTOR_START) for name in _vllm_frames()}
    run = _upstream_run(tmp_path, empty, found=[], lab=lab)
    assert upstream_figure(run) is None and "upstream" not in report_figures(run)
    note = upstream_note(run)
    assert note.startswith(expected) and "\n" not in note


def test_a_run_collected_before_upstream_series_existed_says_so(tmp_path: Path) -> None:
    run = RunData.load(write_chaos_run(tmp_path / "runs"))
    assert upstream_figure(run) is None
    assert upstream_note(run) == "upstream metrics: not collected (no prometheus/upstream_*.csv in this run)"
