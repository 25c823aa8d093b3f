"""Figures of one run for its SLO report: timelines of latency, errors, availability, in-flight requests,
restarts, resources, GPU, TTFT and output tokens/s, each with the run's faults and remediation marked.

Conventions of every timeline: x = seconds since the run's start (`RunData.start`), the same range on
every figure (`RunData.t_range`); a fault with a duration is a shaded span labelled `<kind> <target>`,
an instantaneous one (kill, restart, unload) a solid vertical line; a remediation action a dashed vertical
line (a dry run dotted, labelled "would restart"). Artists carry a `gid` (`fault:<id>`,
`remediation:acted` / `remediation:dry_run`, `missing`) so that tests and tools can find them.

Missing data: every function returns a Figure; where the run lacks the series, its axes show a centred
sentence saying what is missing and why (gid `missing`), and the faults are still marked. The one
exception is the GPU: `gpu_figure` returns None on a machine without a GPU, and `gpu_note` gives the
sentence to print instead. Figures are built without pyplot (no global state, safe under Agg) as
`ReportFigure`s, which IPython shows as PNG by themselves: a notebook needs no `%matplotlib` magic.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from labkit.measure.slo import valid_requests
from labkit.measure.slo.client import completion_times
from labkit.report.data import RunData

__all__ = [
    "CLIENT_WINDOW_S",
    "X_LABEL",
    "ReportFigure",
    "availability_figure",
    "client_rolling_availability",
    "client_rolling_quantile",
    "counter_growth",
    "error_rate_figure",
    "gpu_figure",
    "gpu_note",
    "in_flight_figure",
    "latency_figure",
    "output_tokens_figure",
    "report_figures",
    "resources_figure",
    "restarts_figure",
    "service_up_figure",
    "ttft_figure",
]

# The trailing window of the client-side rolling series (p95, error share, availability), seconds.
CLIENT_WINDOW_S = 10.0
X_LABEL = "seconds since the run's start"
_SIZE = (10.0, 3.6)
_QUANTILE_STYLES = {0.5: ":", 0.95: "-", 0.99: "--"}
_FAULT_COLOURS = {
    "kill": "tab:red",
    "restart": "tab:orange",
    "pause": "tab:purple",
    "latency": "tab:olive",
    "error": "firebrick",
    "stream_cut": "tab:pink",
    "cpu_stress": "tab:brown",
    "unload": "tab:cyan",
}
# One colour per service on every figure, none of them a fault's colour.
_SERVICE_COLOURS = {
    "model": "tab:blue",
    "wrapper": "tab:green",
    "prometheus": "goldenrod",
    "exporter": "tab:gray",
}
_REMEDIATION_COLOUR = "black"
_CLIENT_COLOUR = "dimgray"
_GPU_SERIES = ("gpu_utilization", "gpu_memory")
_NO_PROMETHEUS = "not collected (no prometheus/{name}.csv in this run)"


# ---- building blocks -----------------------------------------------------------------------------
class ReportFigure(Figure):
    """A matplotlib Figure that IPython displays as PNG without pyplot's inline backend: a figure made
    without pyplot is otherwise shown as its text repr unless the notebook ran `%matplotlib inline`."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def _figure(title: str, ylabels: list[str]) -> tuple[Figure, list[Axes]]:
    """A figure with one axes per y label, stacked, sharing x; `title` on top."""
    fig = ReportFigure(figsize=(_SIZE[0], _SIZE[1] * (1 + 0.7 * (len(ylabels) - 1))), layout="constrained")
    axes = fig.subplots(len(ylabels), 1, sharex=True, squeeze=False)[:, 0].tolist()
    fig.suptitle(title)
    for ax, label in zip(axes, ylabels, strict=True):
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel(X_LABEL)
    return fig, axes


def _note_missing(ax: Axes, sentence: str) -> None:
    ax.text(
        0.5,
        0.5,
        f"no data: {sentence}",
        transform=ax.transAxes,
        ha="center",
        va="center",
        color="0.3",
        wrap=True,
        gid="missing",
        bbox={"facecolor": "white", "edgecolor": "0.8", "boxstyle": "round"},
    )


def _mark_text(ax: Axes, at: float, text: str, colour: str, *, at_top: bool) -> None:
    """A mark's label, written upwards beside its line at time `at`: at the top of the axes (faults) or at
    the bottom (remediation), so that a fault and the action that answered it do not overlap."""
    ax.text(
        at,
        0.98 if at_top else 0.02,
        f" {text}",
        transform=blended_transform_factory(ax.transData, ax.transAxes),
        rotation=90,
        va="top" if at_top else "bottom",
        ha="right",
        fontsize=8,
        color=colour,
    )


def _mark_faults(ax: Axes, run: RunData) -> None:
    """Each fault as a span (or a line when instantaneous) labelled with its kind and target."""
    seen: set[str] = set()
    for fault in run.faults.to_dict("records"):
        start, end, kind = float(fault["start_t_s"]), float(fault["end_t_s"]), str(fault["kind"])
        colour = _FAULT_COLOURS.get(kind, "tab:gray")
        legend = f"fault: {kind}"
        label, gid = (legend if legend not in seen else "_nolegend_"), f"fault:{fault['fault_id']}"
        seen.add(legend)
        if fault["instantaneous"]:
            ax.axvline(start, color=colour, linewidth=1.5, label=label, gid=gid)
        else:
            ax.axvspan(start, end, color=colour, alpha=0.15, label=label, gid=gid)
        _mark_text(ax, start, f"{kind} {fault['target']}", colour, at_top=True)


def _mark_remediation(ax: Axes, run: RunData) -> None:
    """Each remediation action as a vertical line: dashed when acted, dotted for a dry run."""
    seen: set[bool] = set()
    for action in run.remediation_actions.to_dict("records"):
        at, dry = float(action["t_s"]), bool(action["dry_run"])
        legend = "remediation (dry run)" if dry else "remediation"
        ax.axvline(
            at,
            color=_REMEDIATION_COLOUR,
            linestyle=":" if dry else "--",
            linewidth=1.5,
            label=legend if dry not in seen else "_nolegend_",
            gid="remediation:dry_run" if dry else "remediation:acted",
        )
        seen.add(dry)
        verb = "would restart" if dry else "restart"
        _mark_text(ax, at, f"{verb} {action['target']}", _REMEDIATION_COLOUR, at_top=False)


def _finish(fig: Figure, run: RunData) -> Figure:
    """Marks, the shared x range and legends on every axes of `fig`."""
    t_range = run.t_range
    for ax in fig.axes:
        _mark_faults(ax, run)
        _mark_remediation(ax, run)
        if t_range is not None:
            ax.set_xlim(*t_range)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return fig


def _series(run: RunData, name: str) -> pd.DataFrame | None:
    """A Prometheus frame with rows, or None when it is absent or empty."""
    frame = run.series.get(name)
    return frame if frame is not None and not frame.empty else None


def _series_or_note(ax: Axes, run: RunData, name: str) -> pd.DataFrame | None:
    """The Prometheus frame `name` with rows; when there is none, `ax` says why and None is returned."""
    frame = _series(run, name)
    if frame is None:
        _note_missing(ax, _why_missing(run, name))
    return frame


def _why_missing(run: RunData, name: str) -> str:
    if name in run.series:
        return f"Prometheus had no {name.replace('_', ' ')} in the run's window"
    return _NO_PROMETHEUS.format(name=name)


def _plot_quantiles(ax: Axes, frame: pd.DataFrame) -> None:
    """One line per quantile, and the histogram bucket the p95 was interpolated in as a band: Prometheus'
    quantile is only known to lie inside it (no band where it fell in the +Inf bucket)."""
    for q in sorted(frame["quantile"].unique()):
        rows = frame[frame["quantile"] == q]
        style = _QUANTILE_STYLES.get(float(q), "-")
        (line,) = ax.plot(rows["t_s"], rows["value"], linestyle=style, label=f"server p{q * 100:g}")
        if q == 0.95 and {"bucket_lower", "bucket_upper"} <= set(rows.columns):
            upper = rows["bucket_upper"].where(np.isfinite(rows["bucket_upper"]))
            ax.fill_between(
                rows["t_s"],
                rows["bucket_lower"],
                upper,
                color=line.get_color(),
                alpha=0.12,
                step="mid",
                label="server p95 bucket",
                gid="bucket:p95",
            )


def _plot_by_label(ax: Axes, frame: pd.DataFrame, label: str, scale: float = 1.0) -> None:
    for key in sorted(frame[label].astype(str).unique()):
        rows = frame[frame[label].astype(str) == key]
        ax.plot(rows["t_s"], rows["value"] * scale, label=key, color=_SERVICE_COLOURS.get(key))


# ---- client-side rolling series from the samples ---------------------------------------------------
def _rolling(
    run: RunData, times: pd.Series, values: pd.Series, window_s: float, quantile: float | None
) -> pd.Series:
    """`values` over the trailing `window_s` seconds at each of `times` (unix s): their `quantile`
    (linear interpolation), or their mean when `quantile` is None; indexed by t_s."""
    order = np.argsort(times.to_numpy(float), kind="stable")
    at = times.to_numpy(float)[order]
    window = pd.Series(values.to_numpy(float)[order], index=pd.to_datetime(at, unit="s")).rolling(
        f"{window_s:g}s"
    )
    rolled = window.mean() if quantile is None else window.quantile(quantile)
    return pd.Series(rolled.to_numpy(float), index=at - (run.start or 0.0))


def client_rolling_quantile(
    run: RunData, column: str, quantile: float = 0.95, window_s: float = CLIENT_WINDOW_S
) -> pd.Series | None:
    """The client's `quantile` of `column` (seconds) over successful, valid requests in the trailing
    `window_s`, indexed by t_s of each measurement (send + the measured time); None without data."""
    samples = run.samples
    if samples.empty or column not in samples.columns:
        return None
    ok = samples[samples["ok"] & valid_requests(samples) & samples[column].notna()]
    if ok.empty:
        return None
    return _rolling(run, ok["intended_send"] + ok[column], ok[column], window_s, quantile)


def client_rolling_availability(run: RunData, window_s: float = CLIENT_WINDOW_S) -> pd.Series | None:
    """Share (0-1) of valid requests that succeeded among those completing in the trailing `window_s`,
    indexed by t_s of each completion; None without samples."""
    samples = run.samples
    if samples.empty:
        return None
    valid = samples[valid_requests(samples)]
    if valid.empty:
        return None
    return _rolling(run, completion_times(valid), valid["ok"].astype(float), window_s, None)


# ---- the figures -------------------------------------------------------------------------------------
def _plot_client(ax: Axes, values: pd.Series, label: str) -> None:
    """A client-side rolling series (indexed by t_s), in one style on every figure."""
    ax.plot(values.index, values.to_numpy(), color=_CLIENT_COLOUR, alpha=0.8, label=label)


def _quantile_figure(run: RunData, title: str, ylabel: str, name: str, column: str) -> Figure:
    """Server quantiles of the series `name` and the client's rolling p95 of the sample `column`."""
    fig, (ax,) = _figure(title, [ylabel])
    server = _series(run, name)
    client = client_rolling_quantile(run, column)
    if server is not None:
        _plot_quantiles(ax, server)
    if client is not None:
        _plot_client(ax, client, f"client p95 ({CLIENT_WINDOW_S:g} s)")
    if server is None and client is None:
        _note_missing(ax, f"{_why_missing(run, name)}; no client {column} samples either")
    ax.set_ylim(bottom=0)
    return _finish(fig, run)


def latency_figure(run: RunData) -> Figure:
    """End-to-end latency of /generate, seconds: the server's p50/p95/p99 (histogram_quantile over the
    rate window) and the client's p95 of its exact per-request latencies of successful requests over the
    trailing `CLIENT_WINDOW_S`."""
    return _quantile_figure(
        run, "End-to-end latency of /generate", "latency (s)", "latency_quantiles", "e2e_s"
    )


def ttft_figure(run: RunData) -> Figure:
    """Time to first token, seconds: the server's p50/p95/p99 and the client's p95 (streams only)."""
    return _quantile_figure(run, "Time to first token", "time to first token (s)", "ttft_quantiles", "ttft_s")


def error_rate_figure(run: RunData) -> Figure:
    """Server errors: 5xx as % of /generate requests per rate window (Prometheus), and the client's share
    of valid requests that failed (any failure, no response included) over the trailing window."""
    fig, (ax,) = _figure("Errors", ["errors (% of requests)"])
    server = _series(run, "error_ratio")
    client = client_rolling_availability(run)
    if server is not None:
        ax.plot(server["t_s"], server["value"] * 100, color="tab:red", label="server 5xx")
    if client is not None:
        _plot_client(ax, (1 - client) * 100, f"client failures ({CLIENT_WINDOW_S:g} s)")
    if server is None and client is None:
        _note_missing(ax, _why_missing(run, "error_ratio") + "; no client samples either")
    ax.set_ylim(bottom=0, top=max(5.0, ax.get_ylim()[1]))
    return _finish(fig, run)


def _availability_target(run: RunData) -> float | None:
    results = run.slo.get("results") if run.slo else None
    for result in results if isinstance(results, list) else []:
        if isinstance(result, dict) and result.get("indicator") == "ratio":
            target = result.get("target")
            return float(target) if isinstance(target, int | float) else None
    return None


def _availability_floor(server: pd.DataFrame | None, client: pd.Series | None, target: float | None) -> float:
    """The y axis' bottom, %: 5 points below the lowest value or target, so that a dip is never cut off."""
    lows = [target * 100] if target is not None else [99.0]
    for values in (server["value"] if server is not None else None, client):
        if values is not None and values.notna().any():
            lows.append(float(values.min()) * 100)
    return max(0.0, min(lows) - 5)


def availability_figure(run: RunData) -> Figure:
    """Availability, %: good / valid requests per rate window (server, the availability SLO's queries)
    and per trailing window of completions (client), with the SLO's target as a dashed line."""
    fig, (ax,) = _figure("Availability of /generate", ["availability (%)"])
    server = _series(run, "availability")
    client = client_rolling_availability(run)
    if server is not None:
        ax.plot(server["t_s"], server["value"] * 100, color="tab:blue", label="server")
    if client is not None:
        _plot_client(ax, client * 100, f"client ({CLIENT_WINDOW_S:g} s)")
    if server is None and client is None:
        _note_missing(ax, _why_missing(run, "availability") + "; no client samples either")
    target = _availability_target(run)
    if target is not None:
        ax.axhline(
            target * 100, color="0.4", linestyle="--", linewidth=1, label=f"SLO target {target * 100:g}%"
        )
    ax.set_ylim(bottom=_availability_floor(server, client, target), top=100.5)
    return _finish(fig, run)


def _one_series_figure(run: RunData, title: str, ylabel: str, name: str, **plot: Any) -> tuple[Figure, Axes]:
    """A figure of the one series `name` of the run (or the note that it is missing), from 0 up."""
    fig, (ax,) = _figure(title, [ylabel])
    frame = _series_or_note(ax, run, name)
    if frame is not None:
        ax.plot(frame["t_s"], frame["value"], **plot)
    ax.set_ylim(bottom=0)
    return fig, ax


def in_flight_figure(run: RunData) -> Figure:
    """Requests admitted by the wrapper and not yet finished (streams until their last line)."""
    fig, ax = _one_series_figure(
        run,
        "Requests in flight",
        "requests in flight",
        "in_flight",
        drawstyle="steps-post",
        label="in flight",
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, run)


def counter_growth(values: pd.Series) -> pd.Series:
    """A counter's growth since its first sample, a drop counted as a reset to 0 (as `increase()` does)."""
    steps = values.diff().fillna(0.0)
    steps = steps.where(steps >= 0, values)
    return steps.cumsum()


def restarts_figure(run: RunData) -> Figure:
    """Restarts of each service since the window's start (growth of lab_service_restarts_total), as
    steps: a kill that the restart policy answered is a step up by one."""
    fig, (ax,) = _figure("Service restarts", ["restarts since start"])
    frame = _series_or_note(ax, run, "restarts")
    if frame is not None:
        for service, rows in frame.groupby(frame["service"].astype(str)):
            ordered = rows.sort_values("t_s")
            ax.plot(
                ordered["t_s"],
                counter_growth(ordered["value"]),
                drawstyle="steps-post",
                label=str(service),
                color=_SERVICE_COLOURS.get(str(service)),
            )
    ax.set_ylim(bottom=-0.1, top=max(1.5, ax.get_ylim()[1]))  # a flat 0 stays visible
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, run)


def service_up_figure(run: RunData) -> Figure:
    """Readiness of each service (1 ready, 0 not), offset per service so that the lines do not overlap."""
    fig, (ax,) = _figure("Services ready", ["ready (1) / not (0)"])
    frame = _series_or_note(ax, run, "service_up")
    if frame is not None:
        services = sorted(frame["service"].astype(str).unique())
        for offset, service in enumerate(services):
            rows = frame[frame["service"].astype(str) == service].sort_values("t_s")
            ax.plot(rows["t_s"], rows["value"] + offset * 0.02, drawstyle="steps-post", label=service)
    ax.set_ylim(-0.1, 1.3)
    return _finish(fig, run)


def resources_figure(run: RunData) -> Figure:
    """CPU (cores in use) and resident memory (MiB) of each service's process tree."""
    fig, (cpu_ax, mem_ax) = _figure("CPU and memory per service", ["CPU (cores)", "resident memory (MiB)"])
    for ax, name, scale in ((cpu_ax, "service_cpu", 1.0), (mem_ax, "service_memory", 1 / 2**20)):
        frame = _series_or_note(ax, run, name)
        if frame is not None:
            _plot_by_label(ax, frame, "service", scale)
        ax.set_ylim(bottom=0)
    return _finish(fig, run)


def output_tokens_figure(run: RunData) -> Figure:
    """Output tokens generated per second (rate of llm_output_tokens_total), all requests together."""
    fig, _ = _one_series_figure(
        run,
        "Output tokens per second",
        "output tokens/s",
        "output_tokens_rate",
        color="tab:blue",
        label="server",
    )
    return _finish(fig, run)


def _has_gpu(run: RunData) -> bool:
    return bool(run.window and run.window.get("gpu_available")) or any(
        _series(run, name) is not None for name in _GPU_SERIES
    )


def gpu_note(run: RunData) -> str:
    """One sentence about the GPU of the run: which one was measured, that there was none, or that
    nothing was collected to tell."""
    if _has_gpu(run):
        frame = _series(run, "gpu_utilization")
        names = sorted(frame["name"].astype(str).unique()) if frame is not None and "name" in frame else []
        if names:
            return f"GPU: {', '.join(names)}"
        return "GPU present, but Prometheus had no GPU series in the window"
    told = (run.window is not None and "gpu_available" in run.window) or any(
        name in run.series for name in _GPU_SERIES
    )
    if not told:
        return "GPU: not collected (no GPU series in prometheus/ of this run)"
    return "no GPU on this machine (the exporter found none through NVML), so no GPU figures"


def gpu_figure(run: RunData) -> Figure | None:
    """GPU utilization (%) and memory used and total (GiB) per GPU; None without a GPU (see `gpu_note`)."""
    if not _has_gpu(run):
        return None
    fig, (util_ax, mem_ax) = _figure("GPU", ["utilization (%)", "memory (GiB)"])
    util = _series(run, "gpu_utilization")
    if util is None:
        _note_missing(util_ax, _why_missing(run, "gpu_utilization"))
    else:
        _plot_by_label(util_ax, util, "gpu", 100.0)
        util_ax.set_ylim(0, 105)
    memory = _series(run, "gpu_memory")
    if memory is None:
        _note_missing(mem_ax, _why_missing(run, "gpu_memory"))
    else:
        for (gpu, kind), rows in memory.groupby([memory["gpu"].astype(str), memory["memory"].astype(str)]):
            mem_ax.plot(
                rows["t_s"],
                rows["value"] / 2**30,
                linestyle="--" if kind == "total" else "-",
                label=f"gpu {gpu} {kind}",
            )
        mem_ax.set_ylim(bottom=0)
    return _finish(fig, run)


def report_figures(run: RunData) -> dict[str, Figure]:
    """Every figure of the report in reading order, by name; the GPU one only where there was a GPU."""
    figures = {
        "availability": availability_figure(run),
        "errors": error_rate_figure(run),
        "latency": latency_figure(run),
        "ttft": ttft_figure(run),
        "output_tokens": output_tokens_figure(run),
        "in_flight": in_flight_figure(run),
        "restarts": restarts_figure(run),
        "service_up": service_up_figure(run),
        "resources": resources_figure(run),
    }
    gpu = gpu_figure(run)
    if gpu is not None:
        figures["gpu"] = gpu
    return figures
