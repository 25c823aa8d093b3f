"""The upstream's own view of a run, for its SLO report: the key series its metrics endpoint exported (queue
length, running requests, KV-cache in use, its own p95 time to first token; `labkit.measure.upstream`), on the
report's one clock, or one sentence saying why there are none ("the upstream exposes no metrics ...").

Like the GPU figure, `upstream_figure` returns None when there is nothing to draw and `upstream_note` gives
the sentence to print instead; a series the upstream lacks (TGI has no KV-cache gauge) is named in the
caption, not drawn as an empty axes.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from labkit.measure.upstream import UPSTREAM_SERIES, UPSTREAM_SERVERS, UpstreamSeries
from labkit.report.data import RunData
from labkit.report.marks import SERVER_COLOUR, ReportFigure, finish, new_figure

__all__ = ["upstream_figure", "upstream_note"]

_BY_NAME = {series.name: series for series in UPSTREAM_SERIES}
# Where the lab has no upstream endpoint to scrape, by engine: why.
_NO_ENDPOINT = {
    "llamacpp-server": "llama-cpp-python's server has no /metrics",
    "openai": "no --upstream-metrics-url was given",
    "ollama": "Ollama has no Prometheus endpoint",
    "llama": "the model service is labkit's own, measured by the lab's own metrics above",
    "sim": "the model service is labkit's own, measured by the lab's own metrics above",
}
# One axes each: (y label, the series drawn on it, scale); running solid, waiting dashed, the rest solid.
_AXES = (
    ("requests", ("upstream_running", "upstream_queue"), 1.0),
    ("KV-cache in use (%)", ("upstream_kv_cache",), 100.0),
    ("upstream p95 TTFT (s)", ("upstream_ttft_p95",), 1.0),
)
_STYLES = {"upstream_queue": "--"}
_STYLE_WORDS = {"-": "solid", "--": "dashed"}
_LABELS = {
    "upstream_running": "running",
    "upstream_queue": "waiting",
    "upstream_kv_cache": "KV-cache in use",
    "upstream_ttft_p95": "p95 time to first token",
}


def _frame(run: RunData, name: str) -> pd.DataFrame | None:
    frame = run.series.get(name)
    return frame if frame is not None and not frame.empty else None


def _found_names(run: RunData) -> list[str]:
    """The key metric names Prometheus had from the upstream in the run's window (window.json)."""
    found = (run.window or {}).get("upstream_metrics")
    return [str(name) for name in found] if isinstance(found, list) else []


def _source(series: UpstreamSeries, found: list[str]) -> str:
    """Which of the series' metric names the upstream exported ("vllm:num_requests_waiting")."""
    names = [n for n in series.names if n in found or f"{n}_bucket" in found]
    return ", ".join(names) if names else "one of " + ", ".join(series.names)


def upstream_note(run: RunData) -> str:
    """One sentence about the upstream's metrics in the run: which were drawn and from where, or that the
    upstream exposes none, and why."""
    collected = any(series.name in run.series for series in UPSTREAM_SERIES)
    drawn = [s for s in UPSTREAM_SERIES if _frame(run, s.name) is not None]
    url = run.lab.get("upstream_metrics_url")
    if drawn:
        where = f" from {url}" if url else ""
        return f"upstream metrics{where}: " + "; ".join(
            f"{s.what} ({_source(s, _found_names(run))})" for s in drawn
        )
    if not collected:
        return "upstream metrics: not collected (no prometheus/upstream_*.csv in this run)"
    if url:
        return (
            f"the upstream exposes no metrics the report reads: {url} had none of the key series of "
            f"{', '.join(UPSTREAM_SERVERS)} in the run's window"
        )
    engine = run.lab.get("engine")
    why = _NO_ENDPOINT.get(str(engine), "no metrics endpoint of the model service was scraped")
    return f"the upstream exposes no metrics ({why})"


def _draw(fig: ReportFigure, ax: Axes, run: RunData, name: str, scale: float, style: str) -> None:
    frame = _frame(run, name)
    if frame is None:
        return
    series = _BY_NAME[name]
    ax.plot(frame["t_s"], frame["value"] * scale, color=SERVER_COLOUR, linestyle=style, label=_LABELS[name])
    label = _LABELS[name]
    what = series.what if label in series.what else f"{label}: {series.what}"
    fig.describe("series", f"{what} ({_STYLE_WORDS[style]} blue, {_source(series, _found_names(run))})")


def upstream_figure(run: RunData) -> ReportFigure | None:
    """The upstream's queue and running requests, KV-cache in use (%) and its own p95 time to first token
    (seconds), one axes each for what it exported; None when it exported none (see `upstream_note`)."""
    present = [axis for axis in _AXES if any(_frame(run, name) is not None for name in axis[1])]
    if not present:
        return None
    fig, axes = new_figure(run, "The upstream's own metrics", [label for label, _, _ in present])
    for ax, (label, names, scale) in zip(axes, present, strict=True):
        for name in names:
            _draw(fig, ax, run, name, scale, _STYLES.get(name, "-"))
        ax.set_ylim(bottom=0)
        if label == "requests":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    lacking = [s.what for s in UPSTREAM_SERIES if _frame(run, s.name) is None]
    if lacking:
        fig.describe("note", f"the upstream exported no {', no '.join(lacking)}")
    ttft = _frame(run, "upstream_ttft_p95") is not None
    window = run.rate_window_s
    if ttft and window:
        fig.describe("note", f"the p95 is histogram_quantile over a {window:g} s rate window")
    return finish(fig, run, warm_up=ttft)
