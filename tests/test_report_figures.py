"""labkit.report.figures on the synthetic kill-and-recover run of test_report_data: what each figure draws
(lines, spans, labels), that faults and remediation are marked where the journal says, and how missing
data shows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from labkit.measure.prom import save_series
from labkit.report import (
    X_LABEL,
    ReportFigure,
    RunData,
    availability_figure,
    counter_growth,
    error_rate_figure,
    gpu_figure,
    gpu_note,
    in_flight_figure,
    latency_figure,
    output_tokens_figure,
    report_figures,
    restarts_figure,
    ttft_figure,
)
from labkit.rundir import RunDirectory
from tests.test_report_data import KILL_AT, LATENCY, PAUSE, REMEDIATION_AT, T0, write_chaos_run


@pytest.fixture
def run(tmp_path: Path) -> RunData:
    return RunData.load(write_chaos_run(tmp_path))


def _lines(ax: Axes, gid: str) -> list[Line2D]:
    return [line for line in ax.lines if line.get_gid() == gid]


def _spans(ax: Axes, gid: str) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == gid]


def _notes(ax: Axes) -> list[str]:
    """The "no data" sentences of an axes."""
    return [t.get_text() for t in ax.texts if t.get_gid() == "missing"]


def _line(ax: Axes, label: str) -> tuple[np.ndarray, np.ndarray]:
    (line,) = [line for line in ax.lines if line.get_label() == label]
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


def _check_marks(ax: Axes) -> None:
    """The kill is a vertical line at 20 s, the latency and pause faults spans, remediation lines at 45
    (acted, dashed) and 47 (dry run, dotted), each labelled."""
    (kill,) = _lines(ax, "fault:f1")
    assert list(np.asarray(kill.get_xdata(), float)) == [KILL_AT, KILL_AT]
    for gid, (start, end) in (("fault:f2", LATENCY), ("fault:f3", PAUSE)):
        (span,) = _spans(ax, gid)
        assert span.get_x() == pytest.approx(start) and span.get_width() == pytest.approx(end - start)
    (acted,) = _lines(ax, "remediation:acted")
    (dry,) = _lines(ax, "remediation:dry_run")
    assert np.asarray(acted.get_xdata(), float)[0] == REMEDIATION_AT and acted.get_linestyle() == "--"
    assert np.asarray(dry.get_xdata(), float)[0] == REMEDIATION_AT + 2 and dry.get_linestyle() == ":"
    texts = {t.get_text().strip() for t in ax.texts}
    assert {"kill model", "latency wrapper", "pause prometheus"} <= texts
    assert {"restart wrapper", "would restart wrapper"} <= texts
    assert ax.get_xlabel() == X_LABEL
    assert ax.get_xlim() == pytest.approx((-2.0, 70.0))  # every timeline shares the run's range


def test_latency_has_server_quantiles_and_the_client_p95(run: RunData) -> None:
    fig = latency_figure(run)
    (ax,) = fig.axes
    assert fig.get_suptitle() == "End-to-end latency of /generate" and ax.get_ylabel() == "latency (s)"
    for q in ("p50", "p95", "p99"):
        x, y = _line(ax, f"server {q}")
        assert len(x) == 71 and x[0] == pytest.approx(0.0)  # recounted from the run's start
    (band,) = [c for c in ax.collections if c.get_label() == "server p95 bucket"]
    assert band.get_gid() == "bucket:p95"  # Prometheus' p95 is only known to lie in its bucket
    x, y = _line(ax, "client p95 (10 s)")
    assert len(x) == 114  # every successful request (120 - 6 failed), at its completion
    slow = y[(x > LATENCY[0] + 5) & (x < LATENCY[1])]
    assert slow.size and (slow == pytest.approx(4.0))  # the trailing 10 s hold only 4 s requests there
    assert y[x < KILL_AT].max() == pytest.approx(0.5)
    _check_marks(ax)
    legend = ax.get_legend()
    assert legend is not None
    assert {t.get_text() for t in legend.get_texts()} >= {"fault: kill", "remediation (dry run)"}


def test_the_availability_dip_of_the_kill_is_visible(run: RunData) -> None:
    (ax,) = availability_figure(run).axes
    x, server = _line(ax, "server")
    assert server[(x >= KILL_AT) & (x < KILL_AT + 4)] == pytest.approx(0.0)  # percent
    x, client = _line(ax, "client (10 s)")
    assert client.min() < 80 and client[x < KILL_AT].min() == 100.0
    bottom, top = ax.get_ylim()
    assert bottom <= client.min() and top >= 100  # the dip is inside the axes
    assert any(line.get_label() == "SLO target 99%" for line in ax.lines)
    assert ax.get_ylabel() == "availability (%)"
    _check_marks(ax)


def test_errors_show_the_server_5xx_and_client_failures(run: RunData) -> None:
    (ax,) = error_rate_figure(run).axes
    x, server = _line(ax, "server 5xx")
    assert server.max() == 100.0 and server[x < KILL_AT].max() == 0.0
    _, client = _line(ax, "client failures (10 s)")
    assert client.max() > 20  # 6 failed of the ~20 requests ending in the 10 s after the kill
    _check_marks(ax)


def test_a_kill_shows_as_a_restart_step_to_one(run: RunData) -> None:
    (ax,) = restarts_figure(run).axes
    x, model = _line(ax, "model")
    assert ax.lines[0].get_drawstyle() == "steps-post"
    assert model[x < KILL_AT + 1].max() == 0 and model[x >= KILL_AT + 1].min() == 1
    _, wrapper = _line(ax, "wrapper")
    assert wrapper.max() == 0
    _check_marks(ax)


def test_counter_growth_counts_through_a_reset() -> None:
    # 2 -> 3 (+1), then a reset to 0 and 1 (+1): 2 restarts since the first sample.
    assert list(counter_growth(pd.Series([2.0, 2.0, 3.0, 0.0, 1.0]))) == [0.0, 0.0, 1.0, 1.0, 2.0]


def test_missing_series_say_so_and_still_mark_faults(run: RunData) -> None:
    (ax,) = output_tokens_figure(run).axes  # the CSV is there but empty
    (note,) = _notes(ax)
    assert "Prometheus had no output tokens rate" in note
    _check_marks(ax)
    (ax,) = ttft_figure(run).axes  # no CSV at all, but the client measured TTFT
    assert not _notes(ax) and _line(ax, "client p95 (10 s)")[0].size == 114


def test_a_run_without_prometheus_names_what_to_collect(tmp_path: Path) -> None:
    run = RunData.load(write_chaos_run(tmp_path, prometheus=False))
    (ax,) = in_flight_figure(run).axes
    (note,) = _notes(ax)
    assert "not collected (no prometheus/in_flight.csv" in note
    assert not any(line.get_label() == "in flight" for line in ax.lines)


def test_an_empty_run_renders_without_data_or_marks(tmp_path: Path) -> None:
    run = RunData.load(tmp_path)
    figures = report_figures(run)
    assert "gpu" not in figures and gpu_note(run).startswith("GPU: not collected")
    for name, fig in figures.items():
        for ax in fig.axes:
            assert _notes(ax), name


def test_no_gpu_gives_a_sentence_instead_of_a_figure(run: RunData) -> None:
    assert gpu_figure(run) is None
    assert gpu_note(run).startswith("no GPU on this machine")


def test_a_gpu_is_drawn_when_the_exporter_saw_one(tmp_path: Path) -> None:
    path = write_chaos_run(tmp_path)
    at = pd.to_datetime([T0 + 1, T0 + 2], unit="s", utc=True)
    base = {
        "timestamp": at,
        "t_s": [1.0, 2.0],
        "gpu": ["0", "0"],
        "uuid": ["GPU-1"] * 2,
        "name": ["H100"] * 2,
    }
    memory = pd.concat(
        [
            pd.DataFrame({**base, "memory": m, "value": [v, v]})
            for m, v in (("used", 2**30), ("total", 8 * 2**30))
        ]
    )
    save_series(path, {"gpu_utilization": pd.DataFrame({**base, "value": [0.5, 0.75]}), "gpu_memory": memory})
    RunDirectory(path).write_json(
        "prometheus/window.json", {"start": T0 - 2, "end": T0 + 70, "gpu_available": True}
    )
    run = RunData.load(path)
    fig = gpu_figure(run)
    assert fig is not None and gpu_note(run) == "GPU: H100"
    util_ax, mem_ax = fig.axes
    assert list(_line(util_ax, "0")[1]) == [50.0, 75.0]  # percent
    assert list(_line(mem_ax, "gpu 0 used")[1]) == [1.0, 1.0]  # GiB
    assert list(_line(mem_ax, "gpu 0 total")[1]) == [8.0, 8.0]
    assert "gpu" in report_figures(run)


def test_figures_render_without_pyplot_state(run: RunData) -> None:
    from matplotlib._pylab_helpers import Gcf

    before = Gcf.get_num_fig_managers()
    figures = report_figures(run)
    assert Gcf.get_num_fig_managers() == before  # nothing registered with pyplot
    for fig in figures.values():
        assert isinstance(fig, Figure) and fig.get_suptitle()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        assert buffer.getvalue().startswith(b"\x89PNG")
        # IPython shows it as PNG even where no `%matplotlib inline` registered a formatter.
        assert isinstance(fig, ReportFigure) and fig._repr_png_().startswith(b"\x89PNG")
