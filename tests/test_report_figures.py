"""labkit.report.figures on the synthetic kill-and-recover run of test_report_data: what each figure draws
(lines, spans, labels), that faults and remediation are marked where the journal says, and how missing
data shows."""

from __future__ import annotations

import io
import json
from html import escape
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
    EVENT_ROWS,
    ReportFigure,
    RunData,
    availability_figure,
    client_in_flight,
    counter_growth,
    error_rate_figure,
    events_figure,
    gpu_figure,
    gpu_note,
    in_flight_figure,
    latency_distribution_figure,
    latency_figure,
    output_tokens_figure,
    report_figures,
    request_rate_figure,
    resources_figure,
    restarts_figure,
    ttft_figure,
)
from labkit.rundir import RunDirectory
from tests.test_report_data import KILL_AT, LATENCY, PAUSE, REMEDIATION_AT, T0, request_rows, write_chaos_run


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
    assert ax.get_xlabel() == "seconds since the method's start"
    assert ax.get_xlim() == pytest.approx((-5.0, 70.0))  # every timeline shares the run's range


def test_latency_has_server_quantiles_and_the_client_p95(run: RunData) -> None:
    fig = latency_figure(run)
    (ax,) = fig.axes
    assert (
        fig.get_suptitle() == "End-to-end latency of generation requests" and ax.get_ylabel() == "latency (s)"
    )
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
    assert {t.get_text() for t in legend.get_texts()} >= {"fault: kill", "remediation: restart (dry run)"}


def test_the_availability_dip_of_the_kill_is_visible(run: RunData) -> None:
    (ax,) = availability_figure(run).axes
    x, server = _line(ax, "server")
    assert server[(x >= KILL_AT) & (x < KILL_AT + 4)] == pytest.approx(0.0)  # percent
    x, client = _line(ax, "client availability (5 s bins)")
    assert np.nanmin(client) < 80 and np.nanmin(client[x < KILL_AT]) == 100.0
    assert np.isnan(client[x < 5]).all()  # no request ended before t=5: a gap, not 0 % or 100 %
    bottom, top = ax.get_ylim()
    assert bottom <= np.nanmin(client) and top >= 100  # the dip is inside the axes
    # The bin of the kill says how many of its requests failed.
    assert "6 of 10" in {t.get_text() for t in ax.texts}
    assert any(line.get_label() == "SLO target 99%" for line in ax.lines)
    assert ax.get_ylabel() == "availability (%)"
    _check_marks(ax)


def test_errors_show_the_server_5xx_and_client_failures(run: RunData) -> None:
    (ax,) = error_rate_figure(run).axes
    x, server = _line(ax, "server 5xx")
    assert server.max() == 100.0 and server[x < KILL_AT].max() == 0.0
    _, client = _line(ax, "client failures (5 s bins)")
    assert np.nanmax(client) == pytest.approx(60.0)  # 6 failed of the 10 requests ending in [20, 25)
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
    cpu_ax, _ = resources_figure(run).axes
    (note,) = _notes(cpu_ax)
    assert "not collected (no prometheus/service_cpu.csv" in note
    (ax,) = in_flight_figure(run).axes  # the client's own count needs no Prometheus
    assert not _notes(ax)
    assert not any(line.get_label() == "server gauge" for line in ax.lines)
    assert any(line.get_label() == "client (exact)" for line in ax.lines)


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
        # IPython shows it as SVG in a <figure>, with its alt text and caption, without any magic.
        assert isinstance(fig, ReportFigure)
        html = fig._repr_html_()
        assert '<img src="data:image/svg+xml;base64,' in html and f'alt="{fig.title}.' in html
        assert "</figcaption>" in html and escape(fig.caption) in html


def test_captions_and_alt_text_say_what_is_drawn(run: RunData) -> None:
    fig = latency_figure(run)
    assert "server p95 (solid blue" in fig.caption and "client p95 (10 s) (dark grey" in fig.caption
    assert "kill model at 20.0 s (red line)" in fig.caption
    assert "latency wrapper 40.0 to 50.0 s (olive span)" in fig.caption
    assert "restart wrapper at 45.0 s (dashed line)" in fig.caption
    assert "would restart wrapper at 47.0 s (dotted line)" in fig.caption
    assert fig.alt.startswith(
        "End-to-end latency of generation requests. x: seconds since the method's start; y: latency (s)."
    )


def test_phases_are_shaded_and_named(tmp_path: Path) -> None:
    path = write_chaos_run(tmp_path)
    with (path / "events.jsonl").open("a") as journal:
        for kind, t, extra in (
            ("steady_state_started", -5.0, {"phase": "before"}),
            ("steady_state", -0.5, {"phase": "before", "verdict": "met"}),
            ("method_finished", 65.0, {}),
        ):
            journal.write(json.dumps({"kind": kind, "wall_time": T0 + t, **extra}) + "\n")
    run = RunData.load(path)
    assert [(p.key, run.t_s(p.start), run.t_s(p.end)) for p in run.phases] == [
        ("before", -5.0, -0.5),
        ("method", 0.0, 65.0),
    ]
    (ax,) = availability_figure(run).axes
    (before,) = _spans(ax, "phase:before")
    assert before.get_x() == pytest.approx(-5.0) and before.get_width() == pytest.approx(4.5)
    assert {"steady state before", "method (faults)"} <= {t.get_text() for t in ax.texts}


def test_the_client_in_flight_count_is_exact(run: RunData) -> None:
    counts = client_in_flight(run)
    assert counts is not None
    # One request every 0.5 s taking 0.5 s (4 s while slow): never more than 8 at once, mean from the samples.
    assert counts.max() == 8 and counts.min() == 0 and counts.iloc[-1] == 0
    (ax,) = in_flight_figure(run).axes
    assert any(line.get_label() == "client (exact)" for line in ax.lines)


def test_the_latency_distribution_has_one_line_per_phase(tmp_path: Path) -> None:
    path = write_chaos_run(tmp_path)
    before = path / "steady_state" / "before"
    before.mkdir(parents=True)
    rows = [{**r, "intended_send": r["intended_send"] - 60} for r in request_rows()[:4]]
    (before / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = latency_distribution_figure(RunData.load(path))
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == [
        "steady state before: 4 requests, p95 500 ms",
        "method (faults): 114 requests, p95 4000 ms",
    ]


def test_the_journal_is_drawn_as_events(run: RunData) -> None:
    fig = events_figure(run)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == list(EVENT_ROWS)
    texts = {t.get_text() for t in ax.texts}
    assert {"start kill model", "restart wrapper"} <= texts
    assert "7 faults events" in fig.caption  # 3 starts, 3 ends, 1 window end


def test_the_server_s_worst_ratio_says_how_many_requests_it_stands_on(tmp_path: Path) -> None:
    path = write_chaos_run(tmp_path)
    window = json.loads((path / "prometheus" / "window.json").read_text())
    (path / "prometheus" / "window.json").write_text(json.dumps({**window, "rate_window_s": 4.0}))
    t = [float(x) for x in range(71)]
    rates = pd.DataFrame({"timestamp": pd.to_datetime([T0 + x for x in t], unit="s", utc=True), "t_s": t,
                          "status_class": "2xx", "value": 0.5})  # fmt: skip
    save_series(path, {"request_rate": rates})
    run = RunData.load(path)
    (ax,) = error_rate_figure(run).axes  # 100 % 5xx during the kill, 0.5 req/s over a 4 s window
    assert "~2 of 2" in {t.get_text() for t in ax.texts}
    assert any(line.get_label() == "2xx" for line in request_rate_figure(run).axes[0].lines)
