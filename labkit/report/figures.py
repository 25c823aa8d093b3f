"""Timelines of one run for its SLO report: latency, TTFT, inter-token latency, errors, availability,
requests and rejections, in-flight requests, restarts, readiness, CPU and memory, GPU and output tokens/s.

Every timeline shares one clock (t = 0 at the method's start, where faults are scheduled; `RunData.t_range`
on every figure), shades the phases, and marks faults and remediation the same way (`labkit.report.marks`).
A client ratio is drawn per `CLIENT_BIN_S` bin with its counts beside it ("1 of 5"); a bin without requests
is a gap. Every function returns a `ReportFigure` whose caption and alt text say what it draws; where the run
lacks a series, its axes say what is missing and why (gid `missing`). The one exception is the GPU:
`gpu_figure` returns None without a GPU and `gpu_note` gives the sentence to print instead. Figures are built
without pyplot (no global state, safe under Agg).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from labkit.measure.slo import valid_requests
from labkit.measure.slo.client import completion_times
from labkit.report.data import RunData
from labkit.report.marks import (
    CLIENT_COLOUR,
    SERVER_COLOUR,
    SERVICE_COLOURS,
    ReportFigure,
    finish,
    new_figure,
    note_missing,
    x_label,
)

__all__ = [
    "CLIENT_BIN_S",
    "CLIENT_WINDOW_S",
    "availability_figure",
    "client_binned_failures",
    "client_in_flight",
    "client_rolling_availability",
    "client_rolling_quantile",
    "counter_growth",
    "error_rate_figure",
    "gpu_figure",
    "gpu_note",
    "in_flight_figure",
    "itl_figure",
    "latency_figure",
    "output_tokens_figure",
    "request_rate_figure",
    "resources_figure",
    "restarts_figure",
    "service_up_figure",
    "ttft_figure",
    "x_label",
]

# The trailing window of the client-side rolling quantiles, seconds.
CLIENT_WINDOW_S = 10.0
# The bins of the client-side failure and availability ratios, seconds (each drawn with its counts).
CLIENT_BIN_S = 5.0
_QUANTILE_STYLES = {0.5: ":", 0.95: "-", 0.99: "--"}
_STYLE_WORDS = {":": "dotted", "-": "solid", "--": "dashed"}
_GPU_SERIES = ("gpu_utilization", "gpu_memory")
_NO_PROMETHEUS = "not collected (no prometheus/{name}.csv in this run)"


def _series(run: RunData, name: str) -> pd.DataFrame | None:
    """A Prometheus frame with rows, or None when it is absent or empty."""
    frame = run.series.get(name)
    return frame if frame is not None and not frame.empty else None


def _series_or_note(fig: ReportFigure, ax: Axes, run: RunData, name: str) -> pd.DataFrame | None:
    """The Prometheus frame `name` with rows; when there is none, `ax` says why and None is returned."""
    frame = _series(run, name)
    if frame is None:
        note_missing(fig, ax, _why_missing(run, name))
    return frame


def _why_missing(run: RunData, name: str) -> str:
    if name in run.series:
        return f"Prometheus had no {name.replace('_', ' ')} in the run's window"
    return _NO_PROMETHEUS.format(name=name)


def _rate_note(run: RunData) -> str:
    window = run.rate_window_s
    return f"rate over {window:g} s" if window else "rate window"


def _plot_quantiles(
    fig: ReportFigure, ax: Axes, run: RunData, frame: pd.DataFrame, scale: float = 1.0
) -> None:
    """One line per quantile, and the histogram bucket the p95 was interpolated in as a band: Prometheus'
    quantile is only known to lie inside it (no band where it fell in the +Inf bucket)."""
    for q in sorted(frame["quantile"].unique()):
        rows = frame[frame["quantile"] == q]
        style = _QUANTILE_STYLES.get(float(q), "-")
        label = f"server p{q * 100:g}"
        ax.plot(rows["t_s"], rows["value"] * scale, linestyle=style, color=SERVER_COLOUR, label=label)
        fig.describe(
            "series",
            f"{label} ({_STYLE_WORDS.get(style, style)} blue, histogram_quantile, {_rate_note(run)})",
        )
        if q == 0.95 and {"bucket_lower", "bucket_upper"} <= set(rows.columns):
            upper = rows["bucket_upper"].where(np.isfinite(rows["bucket_upper"]))
            ax.fill_between(
                rows["t_s"],
                rows["bucket_lower"] * scale,
                upper * scale,
                color=SERVER_COLOUR,
                alpha=0.12,
                step="mid",
                label="server p95 bucket",
                gid="bucket:p95",
            )
            fig.describe("shaded", "the histogram bucket the server p95 lies in (light blue band)")


def _plot_by_label(ax: Axes, frame: pd.DataFrame, label: str, scale: float = 1.0) -> list[str]:
    keys = sorted(frame[label].astype(str).unique())
    for key in keys:
        rows = frame[frame[label].astype(str) == key]
        ax.plot(rows["t_s"], rows["value"] * scale, label=key, color=SERVICE_COLOURS.get(key))
    return keys


# ---- client-side series from the samples -----------------------------------------------------------
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
    return pd.Series(rolled.to_numpy(float), index=at - (run.origin or 0.0))


def client_rolling_quantile(
    run: RunData, column: str, quantile: float = 0.95, window_s: float = CLIENT_WINDOW_S
) -> pd.Series | None:
    """The client's `quantile` of `column` (seconds) over successful, valid requests in the trailing
    `window_s`, indexed by t_s of each measurement (send + the measured time); None without data."""
    samples = run.all_samples
    if samples.empty or column not in samples.columns:
        return None
    ok = samples[samples["ok"] & valid_requests(samples) & samples[column].notna()]
    if ok.empty:
        return None
    return _rolling(run, ok["intended_send"] + ok[column], ok[column], window_s, quantile)


def _valid_samples(run: RunData) -> pd.DataFrame | None:
    """Every valid request of the run (steady-state checks included), or None when there is none."""
    samples = run.all_samples
    valid = samples[valid_requests(samples)] if not samples.empty else samples
    return None if valid.empty else valid


def client_rolling_availability(run: RunData, window_s: float = CLIENT_WINDOW_S) -> pd.Series | None:
    """Share (0-1) of valid requests that succeeded among those completing in the trailing `window_s`,
    indexed by t_s of each completion; None without samples."""
    valid = _valid_samples(run)
    if valid is None:
        return None
    return _rolling(run, completion_times(valid), valid["ok"].astype(float), window_s, None)


def client_binned_failures(run: RunData, bin_s: float = CLIENT_BIN_S) -> pd.DataFrame | None:
    """Valid requests per `bin_s` bin of completion time (bins aligned on t = 0): columns `start`, `end`
    (t_s), `valid`, `failed` and `failed_share` (0-1; NaN for a bin without requests); None without
    samples."""
    valid = _valid_samples(run)
    if valid is None:
        return None
    done = completion_times(valid).to_numpy(float) - (run.origin or 0.0)
    low, high = run.t_range or (float(done.min()), float(done.max()))
    first, last = np.floor(low / bin_s), np.ceil(max(high, float(done.max())) / bin_s)
    edges = np.arange(first, last + 1) * bin_s
    index = np.clip(np.searchsorted(edges, done, side="right") - 1, 0, len(edges) - 2)
    failed = (~valid["ok"].astype(bool)).to_numpy()
    counts = np.bincount(index, minlength=len(edges) - 1)
    failures = np.bincount(index, weights=failed.astype(float), minlength=len(edges) - 1)
    frame = pd.DataFrame(
        {"start": edges[:-1], "end": edges[1:], "valid": counts, "failed": failures.astype(int)}
    )
    frame["failed_share"] = (frame["failed"] / frame["valid"]).where(frame["valid"] > 0)
    return frame


def client_in_flight(run: RunData) -> pd.Series | None:
    """The client's exact count of requests in flight (sent, not yet finished) at every change, indexed by
    t_s (a step function: each value holds until the next index); None without samples."""
    samples = run.all_samples
    if samples.empty:
        return None
    sent = samples["actual_send"].fillna(samples["intended_send"]).to_numpy(float)
    done = completion_times(samples).to_numpy(float)
    times = np.concatenate([sent, done]) - (run.origin or 0.0)
    steps = np.concatenate([np.ones(len(sent)), -np.ones(len(done))])
    order = np.lexsort((steps, times))  # at a tie, a finish (-1) before a start
    counts = np.cumsum(steps[order])
    return pd.Series(counts, index=times[order])


# ---- the figures -------------------------------------------------------------------------------------
def _plot_client(fig: ReportFigure, ax: Axes, values: pd.Series, label: str, what: str) -> None:
    """A client-side series (indexed by t_s), in one style on every figure."""
    ax.plot(values.index, values.to_numpy(), color=CLIENT_COLOUR, alpha=0.85, label=label)
    fig.describe("series", f"{label} (dark grey, {what})")


def _quantile_figure(
    run: RunData, title: str, ylabel: str, name: str, column: str, *, unit: str = "s", scale: float = 1.0
) -> ReportFigure:
    """Server quantiles of the series `name` and the client's rolling p95 of the sample `column`."""
    fig, (ax,) = new_figure(run, title, [ylabel])
    server = _series(run, name)
    client = client_rolling_quantile(run, column)
    if server is not None:
        _plot_quantiles(fig, ax, run, server, scale)
    if client is not None:
        what = f"exact, successful requests completing in the trailing {CLIENT_WINDOW_S:g} s"
        _plot_client(fig, ax, client * scale, f"client p95 ({CLIENT_WINDOW_S:g} s)", what)
    if server is None and client is None:
        note_missing(fig, ax, f"{_why_missing(run, name)}; no client {column} samples either")
    ax.set_ylim(bottom=0)
    return finish(fig, run, warm_up=server is not None, alerts=True)


def latency_figure(run: RunData) -> ReportFigure:
    """End-to-end latency of generation requests, seconds: the server's p50/p95/p99 (histogram_quantile
    over the rate window) and the client's p95 of its exact per-request latencies of successful requests
    over the trailing `CLIENT_WINDOW_S`."""
    return _quantile_figure(
        run, "End-to-end latency of generation requests", "latency (s)", "latency_quantiles", "e2e_s"
    )


def ttft_figure(run: RunData) -> ReportFigure:
    """Time to first token, seconds: the server's p50/p95/p99 and the client's p95 (streams only)."""
    return _quantile_figure(run, "Time to first token", "time to first token (s)", "ttft_quantiles", "ttft_s")


def itl_figure(run: RunData) -> ReportFigure:
    """Inter-token latency, milliseconds: the server's p50/p95/p99 of the gaps between chunks, and the
    client's p95 of every gap it received (successful streams) over the trailing window."""
    fig, (ax,) = new_figure(run, "Inter-token latency", ["inter-token latency (ms)"])
    server = _series(run, "itl_quantiles")
    if server is not None:
        _plot_quantiles(fig, ax, run, server, 1000.0)
    samples = run.all_samples
    gaps = None
    if not samples.empty and "itl_s" in samples.columns:
        ok = samples[samples["ok"] & valid_requests(samples)]
        rows = [
            (float(send) + float(ttft) + float(at), float(gap))
            for send, ttft, itl in zip(
                ok["intended_send"], ok["ttft_s"].fillna(0.0), ok["itl_s"], strict=True
            )
            if isinstance(itl, list | np.ndarray)
            for at, gap in zip(np.cumsum(itl), itl, strict=True)
        ]
        if rows:
            at, value = zip(*rows, strict=True)
            gaps = _rolling(run, pd.Series(at), pd.Series(value), CLIENT_WINDOW_S, 0.95) * 1000
    if gaps is not None:
        what = f"exact, every gap of successful streams in the trailing {CLIENT_WINDOW_S:g} s"
        _plot_client(fig, ax, gaps, f"client p95 ({CLIENT_WINDOW_S:g} s)", what)
    if server is None and gaps is None:
        note_missing(fig, ax, f"{_why_missing(run, 'itl_quantiles')}; no client token gaps either")
    ax.set_ylim(bottom=0)
    return finish(fig, run, warm_up=server is not None, alerts=True)


def _bin_counts(fig: ReportFigure, ax: Axes, bins: pd.DataFrame, values: pd.Series, what: str) -> None:
    """Each bin with a failure labelled with its counts, "1 of 5": a ratio alone misleads on few requests."""
    for start, end, valid, failed, value in zip(
        bins["start"].to_numpy(float), bins["end"].to_numpy(float), bins["valid"].to_numpy(int),
        bins["failed"].to_numpy(int), values.to_numpy(float), strict=True,
    ):  # fmt: skip
        if failed > 0 and np.isfinite(value):
            ax.annotate(
                f"{failed} of {valid}",
                ((start + end) / 2, value),
                textcoords="offset points",
                xytext=(0, 4),
                ha="center",
                fontsize=8,
                color=CLIENT_COLOUR,
            )
    fig.describe("note", f"counts beside each client bin with a failure are {what} of its valid requests")


def _client_bins(fig: ReportFigure, ax: Axes, run: RunData, *, failures: bool) -> pd.DataFrame | None:
    bins = client_binned_failures(run)
    if bins is None:
        return None
    share = bins["failed_share"] if failures else 1 - bins["failed_share"]
    values = share * 100
    centres = (bins["start"] + bins["end"]) / 2
    label = f"client {'failures' if failures else 'availability'} ({CLIENT_BIN_S:g} s bins)"
    ax.plot(centres, values, color=CLIENT_COLOUR, marker="o", markersize=3, label=label)
    fig.describe(
        "series",
        f"{label} (dark grey dots, by completion time; a gap where a bin had no requests)",
    )
    _bin_counts(fig, ax, bins, values, "failed")
    return bins


def _requests_per_window(run: RunData) -> pd.Series | None:
    """How many requests each server ratio point stands on (request rate x rate window), by t_s."""
    rates, window = _series(run, "request_rate"), run.rate_window_s
    if rates is None or window is None:
        return None
    per_time = rates.groupby("t_s")["value"].sum() * window
    return per_time[per_time > 0]


def _server_counts(run: RunData) -> str:
    busy = _requests_per_window(run)
    if busy is None or busy.empty:
        return ""
    return f"; each point stands on {busy.min():.0f} to {busy.max():.0f} requests ({_rate_note(run)})"


def _mark_server_extreme(
    fig: ReportFigure, ax: Axes, run: RunData, server: pd.DataFrame, *, failures: bool
) -> None:
    """The server ratio's worst point labelled with about how many requests it stands on ("~1 of 2")."""
    counts = _requests_per_window(run)
    values = server.set_index("t_s")["value"].dropna()
    bad = values if failures else 1 - values
    if counts is None or bad.empty or not (bad > 0).any():
        return
    at = float(bad.index[int(np.argmax(bad.to_numpy()))])
    total = float(counts.get(at, float("nan")))
    if not np.isfinite(total):
        return
    fig.describe(
        "note", "the server's worst point says about how many of the requests in its window were bad"
    )
    ax.annotate(
        f"~{bad[at] * total:.0f} of {total:.0f}",
        (at, float(values[at]) * 100),
        textcoords="offset points",
        xytext=(6, 0),
        fontsize=8,
        color=SERVER_COLOUR,
    )


def _ratio_figure(
    run: RunData, title: str, ylabel: str, name: str, label: str, *, failures: bool
) -> tuple[ReportFigure, Axes, pd.DataFrame | None]:
    """A server ratio series (`name`, %) and the client's bins of the same ratio with their counts."""
    fig, (ax,) = new_figure(run, title, [ylabel])
    server = _series(run, name)
    if server is not None:
        ax.plot(server["t_s"], server["value"] * 100, color=SERVER_COLOUR, label=label)
        fig.describe("series", f"{label} (blue, {_rate_note(run)}{_server_counts(run)})")
        _mark_server_extreme(fig, ax, run, server, failures=failures)
    client = _client_bins(fig, ax, run, failures=failures)
    if server is None and client is None:
        note_missing(fig, ax, _why_missing(run, name) + "; no client samples either")
    return fig, ax, server


def error_rate_figure(run: RunData) -> ReportFigure:
    """Errors, %: the server's 5xx share of generation requests per rate window (Prometheus), and the
    client's share of valid requests that failed (any failure, no response included) per bin, with counts."""
    fig, ax, server = _ratio_figure(
        run, "Errors", "errors (% of requests)", "error_ratio", "server 5xx", failures=True
    )
    ax.set_ylim(bottom=0, top=max(5.0, ax.get_ylim()[1] * 1.1))
    return finish(fig, run, warm_up=server is not None, alerts=True)


def _availability_target(run: RunData) -> float | None:
    results = run.slo.get("results") if run.slo else None
    for result in results if isinstance(results, list) else []:
        if isinstance(result, dict) and result.get("indicator") == "ratio":
            target = result.get("target")
            return float(target) if isinstance(target, int | float) else None
    return None


def availability_figure(run: RunData) -> ReportFigure:
    """Availability, %: good / valid requests per rate window (server, the availability SLO's queries)
    and per bin of completions (client, with counts), with the SLO's target as a dashed line."""
    fig, ax, server = _ratio_figure(
        run,
        "Availability of generation requests",
        "availability (%)",
        "availability",
        "server",
        failures=False,
    )
    target = _availability_target(run)
    if target is not None:
        ax.axhline(
            target * 100, color="0.4", linestyle="--", linewidth=1, label=f"SLO target {target * 100:g}%"
        )
        fig.describe("series", f"SLO target {target * 100:g}% (dashed grey)")
    lows = [target * 100 if target is not None else 99.0]
    for line in ax.lines:
        y = np.asarray(line.get_ydata(), float)
        if y.size and np.isfinite(y).any() and line.get_label() != "_nolegend_":
            lows.append(float(np.nanmin(y)))
    ax.set_ylim(bottom=max(0.0, min(lows) - 8), top=102)
    return finish(fig, run, warm_up=server is not None, alerts=True)


def request_rate_figure(run: RunData) -> ReportFigure:
    """Requests per second by status class (server) and requests turned away with 503 by reason (server),
    beside the client's sends per second."""
    fig, (rate_ax, reject_ax) = new_figure(run, "Requests and rejections", ["requests/s", "rejected/s"])
    rates = _series_or_note(fig, rate_ax, run, "request_rate")
    if rates is not None:
        label = "status_class" if "status_class" in rates.columns else None
        keys = _plot_by_label(rate_ax, rates, label) if label else []
        fig.describe("series", f"server requests/s by status class ({', '.join(keys)}; {_rate_note(run)})")
    if not run.all_samples.empty:
        sends = run.all_samples["intended_send"].to_numpy(float) - (run.origin or 0.0)
        edges = np.arange(np.floor(sends.min()), np.ceil(sends.max()) + 2)
        counts, _ = np.histogram(sends, bins=edges)
        rate_ax.step(edges[:-1], counts, where="post", color=CLIENT_COLOUR, alpha=0.7, label="client sends/s")
        fig.describe("series", "client sends per 1 s (dark grey steps, scheduled send times)")
    rejected = _series_or_note(fig, reject_ax, run, "rejection_rate")
    if rejected is not None:
        keys = _plot_by_label(reject_ax, rejected, "reason") if "reason" in rejected.columns else []
        fig.describe("series", f"server rejections/s by reason ({', '.join(keys) or 'none'})")
    for ax in (rate_ax, reject_ax):
        ax.set_ylim(bottom=0)
    return finish(fig, run, warm_up=rates is not None)


def in_flight_figure(run: RunData) -> ReportFigure:
    """Requests in flight: the client's exact count (sent and not finished, at every change) beside the
    wrapper's gauge as Prometheus sampled it (once per scrape: it can miss short requests entirely)."""
    fig, (ax,) = new_figure(run, "Requests in flight", ["requests in flight"])
    client = client_in_flight(run)
    server = _series(run, "in_flight")
    if client is not None:
        ax.step(client.index, client.to_numpy(), where="post", color=CLIENT_COLOUR, label="client (exact)")
        span = run.t_range
        mean = ""
        if span is not None:
            widths = np.diff(np.append(client.index.to_numpy(float), span[1]))
            busy = float(np.sum(np.clip(widths, 0, None) * client.to_numpy()))
            mean = f", mean {busy / (span[1] - span[0]):.2f}"
        fig.describe(
            "series", f"client in flight (dark grey steps, exact from every request's send and end{mean})"
        )
    if server is not None:
        ax.plot(
            server["t_s"],
            server["value"],
            color=SERVER_COLOUR,
            marker=".",
            linestyle="none",
            label="server gauge",
        )
        fig.describe(
            "series",
            f"server gauge (blue dots, one per scrape: {len(server)} samples, "
            f"mean {server['value'].mean():.2f})",
        )
    if client is None and server is None:
        note_missing(fig, ax, _why_missing(run, "in_flight") + "; no client samples either")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return finish(fig, run)


def counter_growth(values: pd.Series) -> pd.Series:
    """A counter's growth since its first sample, a drop counted as a reset to 0 (as `increase()` does)."""
    steps = values.diff().fillna(0.0)
    steps = steps.where(steps >= 0, values)
    return steps.cumsum()


def restarts_figure(run: RunData) -> ReportFigure:
    """Restarts of each service since the window's start (growth of lab_service_restarts_total), as
    steps: a kill that the restart policy answered is a step up by one."""
    fig, (ax,) = new_figure(run, "Service restarts", ["restarts since start"])
    frame = _series_or_note(fig, ax, run, "restarts")
    if frame is not None:
        for service, rows in frame.groupby(frame["service"].astype(str)):
            ordered = rows.sort_values("t_s")
            growth = counter_growth(ordered["value"])
            ax.plot(
                ordered["t_s"], growth, drawstyle="steps-post", label=str(service),
                color=SERVICE_COLOURS.get(str(service)),
            )  # fmt: skip
            fig.describe("series", f"{service}: {growth.iloc[-1]:.0f} restart(s)")
    ax.set_ylim(bottom=-0.1, top=max(1.5, ax.get_ylim()[1]))  # a flat 0 stays visible
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return finish(fig, run)


def service_up_figure(run: RunData) -> ReportFigure:
    """Readiness of each service (1 ready, 0 not), offset per service so that the lines do not overlap."""
    fig, (ax,) = new_figure(run, "Services ready", ["ready (1) / not (0)"])
    frame = _series_or_note(fig, ax, run, "service_up")
    if frame is not None:
        services = sorted(frame["service"].astype(str).unique())
        for offset, service in enumerate(services):
            rows = frame[frame["service"].astype(str) == service].sort_values("t_s")
            ax.plot(
                rows["t_s"], rows["value"] + offset * 0.02, drawstyle="steps-post", label=service,
                color=SERVICE_COLOURS.get(service),
            )  # fmt: skip
        fig.describe("series", f"readiness of {', '.join(services)} (steps, offset 0.02 apart)")
    ax.set_ylim(-0.1, 1.3)
    return finish(fig, run)


def resources_figure(run: RunData) -> ReportFigure:
    """CPU (cores in use) and resident memory (MiB) of each service's process tree."""
    fig, (cpu_ax, mem_ax) = new_figure(run, "CPU and memory per service", ["CPU (cores)", "memory (MiB)"])
    for ax, name, scale, what in (
        (cpu_ax, "service_cpu", 1.0, "CPU cores in use"),
        (mem_ax, "service_memory", 1 / 2**20, "resident memory, MiB"),
    ):
        frame = _series_or_note(fig, ax, run, name)
        if frame is not None:
            keys = _plot_by_label(ax, frame, "service", scale)
            fig.describe("series", f"{what} of {', '.join(keys)} (one colour per service)")
        ax.set_ylim(bottom=0)
    return finish(fig, run)


def output_tokens_figure(run: RunData) -> ReportFigure:
    """Output tokens generated per second (rate of llm_output_tokens_total), all requests together."""
    fig, (ax,) = new_figure(run, "Output tokens per second", ["output tokens/s"])
    frame = _series_or_note(fig, ax, run, "output_tokens_rate")
    if frame is not None:
        ax.plot(frame["t_s"], frame["value"], color=SERVER_COLOUR, label="server")
        fig.describe("series", f"server output tokens/s (blue, {_rate_note(run)})")
    ax.set_ylim(bottom=0)
    return finish(fig, run, warm_up=frame is not None)


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


def gpu_figure(run: RunData) -> ReportFigure | None:
    """GPU utilization (%) and memory used and total (GiB) per GPU; None without a GPU (see `gpu_note`)."""
    if not _has_gpu(run):
        return None
    fig, (util_ax, mem_ax) = new_figure(run, "GPU", ["utilization (%)", "memory (GiB)"])
    util = _series_or_note(fig, util_ax, run, "gpu_utilization")
    if util is not None:
        keys = _plot_by_label(util_ax, util, "gpu", 100.0)
        util_ax.set_ylim(0, 105)
        fig.describe("series", f"utilization of GPU {', '.join(keys)} (NVML, %)")
    memory = _series_or_note(fig, mem_ax, run, "gpu_memory")
    if memory is not None:
        for (gpu, kind), rows in memory.groupby([memory["gpu"].astype(str), memory["memory"].astype(str)]):
            mem_ax.plot(
                rows["t_s"],
                rows["value"] / 2**30,
                linestyle="--" if kind == "total" else "-",
                label=f"gpu {gpu} {kind}",
            )
        fig.describe("series", "GPU memory used (solid) and total (dashed), GiB")
        mem_ax.set_ylim(bottom=0)
    return finish(fig, run)
