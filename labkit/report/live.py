"""The live view of a run in a notebook: one small figure (latency p50/p95 of the recent requests,
requests answered and failed, in flight; phases, faults as they start and end, restarts, alerts) redrawn
every second or two from the run directory's growing files, as one display that a background thread updates
(IPython's `display_id`: papermill and nbclient keep the last figure in the saved notebook). Outside a
kernel it does nothing. Each update's number is in the output's metadata (`LIVE_METADATA_KEY`), so a saved
notebook says how many updates it received.
"""

from __future__ import annotations

import base64
import contextvars
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.transforms import blended_transform_factory

from labkit.report.data import RunData
from labkit.report.figures import (
    CLIENT_BIN_S,
    CLIENT_WINDOW_S,
    client_binned_failures,
    client_in_flight,
    client_rolling_quantile,
)
from labkit.report.live_data import AlertSpan, RunFollower
from labkit.report.marks import (
    ALERT_COLOURS,
    CLIENT_COLOUR,
    SERVICE_COLOURS,
    ReportFigure,
    colour_name,
    finish,
    new_figure,
    note_missing,
    seconds,
)

__all__ = [
    "DEFAULT_LIVE_INTERVAL_S",
    "LIVE_METADATA_KEY",
    "LiveView",
    "Restart",
    "in_kernel",
    "live_figure",
    "live_view",
]

logger = logging.getLogger(__name__)

DEFAULT_LIVE_INTERVAL_S = 1.5
# The figure's output metadata key: {"run": run id, "updates": how many updates were sent, "final": bool}.
LIVE_METADATA_KEY = "labkit_live"
_SIZE = (9.0, 6.0)  # inches: small enough to redraw every second on a laptop
_FRAME_DPI = 80  # the frames while it runs; the final figure is drawn at twice that (2x PNG)

Restart = tuple[float, str]  # (unix time it was seen, service)


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (JupyterLab, papermill): the only place a display updates."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _mark_restarts(fig: ReportFigure, axes: list[Axes], run: RunData, restarts: list[Restart]) -> None:
    for index, (at, service) in enumerate(restarts):
        t, colour = run.t_s(at), SERVICE_COLOURS.get(service, "black")
        for ax in axes:
            legend = f"restart: {service}" if ax is axes[0] and index == 0 else "_nolegend_"
            ax.axvline(t, color=colour, linestyle=":", linewidth=1.5, gid=f"restart:{service}", label=legend)
        fig.describe("marks", f"{service} restarted, seen at {seconds(t)} s (dotted line)")


def _mark_alert_spans(fig: ReportFigure, ax: Axes, run: RunData, alerts: list[AlertSpan], now: float) -> None:
    """Each alert's firing time as a band along the bottom of the latency axes, in its severity's colour."""
    bottom = blended_transform_factory(ax.transData, ax.transAxes)
    for alert in alerts:
        colour = ALERT_COLOURS.get(alert.severity, "0.3")
        start, end = run.t_s(alert.start), run.t_s(alert.end if alert.end is not None else now)
        ax.axvspan(start, max(end, start + 0.2), ymin=0, ymax=0.05, color=colour, alpha=0.9, linewidth=0,
                   gid=f"alert:{alert.alertname}", label="_nolegend_")  # fmt: skip
        ax.text(start, 0.06, f" {alert.alertname}", transform=bottom, fontsize=7, color=colour)
        state = "firing" if alert.end is None else f"resolved at {seconds(end)} s"
        fig.describe(
            "marks",
            f"alert {alert.alertname} ({alert.severity or 'no severity'}) from {seconds(start)} s, {state} "
            f"({colour_name(colour)} band along the bottom)",
        )


def live_figure(
    run: RunData,
    *,
    now: float,
    restarts: list[Restart] | None = None,
    alerts: list[AlertSpan] | None = None,
    title: str = "",
) -> ReportFigure:
    """The live view of `run` as it stands at `now` (unix s): the client's p50 and p95 latency over the
    trailing window, requests answered and failed per bin, requests in flight, and the report's marks
    (phases, faults, remediation) with the restarts and alerts seen so far."""
    fig, axes = new_figure(
        run, title or f"Live: {run.run_id}", ["latency (s)", f"requests per {CLIENT_BIN_S:g} s", "in flight"]
    )
    fig.set_size_inches(*_SIZE)
    fig.suptitle(fig.get_suptitle(), fontsize=10)
    latency_ax, count_ax, flight_ax = axes
    drew = False
    for quantile, style in ((0.5, "--"), (0.95, "-")):
        series = client_rolling_quantile(run, "e2e_s", quantile)
        if series is not None:
            label = f"p{quantile * 100:.0f}"
            latency_ax.plot(
                series.index, series.to_numpy(), color=CLIENT_COLOUR, linestyle=style, label=label
            )
            line = "dashed" if style == "--" else "solid"
            fig.describe(
                "series",
                f"{label} end-to-end latency of the requests answered in the last {CLIENT_WINDOW_S:g} s "
                f"({line} dark grey)",
            )
            drew = True
    if not drew:
        note_missing(fig, latency_ax, "no request answered yet")
    bins = client_binned_failures(run)
    if bins is None:
        note_missing(fig, count_ax, "no request answered yet")
    else:
        ok = (bins["valid"] - bins["failed"]).astype(float).where(bins["valid"] > 0)
        count_ax.step(bins["start"], ok, where="post", color=CLIENT_COLOUR, label="answered ok")
        count_ax.bar(
            bins["start"], bins["failed"], width=CLIENT_BIN_S, align="edge", color="#d62728", label="failed"
        )
        fig.describe(
            "series",
            f"requests answered ok per {CLIENT_BIN_S:g} s (dark grey steps, a gap without requests) and "
            f"failed ({int(bins['failed'].sum())} in all, red bars)",
        )
    flight = client_in_flight(run)
    if flight is None:
        note_missing(fig, flight_ax, "no request answered yet")
    else:
        flight_ax.step(flight.index, flight.to_numpy(), where="post", color=CLIENT_COLOUR, label="client")
        fig.describe(
            "series",
            "requests in flight (dark grey steps, from each answered request's send and end: the last "
            "seconds fill in as answers arrive)",
        )
    _mark_restarts(fig, axes, run, restarts or [])
    _mark_alert_spans(fig, latency_ax, run, alerts or [], now)
    finish(fig, run)
    for ax in axes:
        ax.set_ylim(bottom=0)
    return fig


def _png(fig: ReportFigure, dpi: int) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return base64.b64encode(buffer.getvalue()).decode()


def _headline(follower: RunFollower, run: RunData, now: float) -> str:
    """The figure's title: where the run stands and its latest p95."""
    progress = follower.progress(now)
    p95 = client_rolling_quantile(run, "e2e_s", 0.95)
    latest = f" · p95 {float(p95.iloc[-1]):.2f} s" if p95 is not None and np.isfinite(p95.iloc[-1]) else ""
    scenario = run.params.get("scenario") or run.run_id
    return f"{scenario}: {progress.line()}{latest}"


class LiveView:
    """The live figure of the run directory `path`, as one display updated every `interval_s` from a
    background thread. `restarts` (optional) returns each service's restart count (the lab's control API);
    a count that grows is drawn as a restart. `display` shows a dict of MIME data with its metadata and
    returns a handle with `update(data, metadata=..., raw=True)` (default: IPython's `display(...,
    display_id=True)`)."""

    def __init__(
        self,
        path: Path,
        *,
        interval_s: float = DEFAULT_LIVE_INTERVAL_S,
        restarts: Callable[[], dict[str, int]] | None = None,
        display: Callable[[dict[str, str], dict[str, Any]], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.follower = RunFollower(Path(path))
        self.interval_s = interval_s
        self.updates = 0
        self.restarts: list[Restart] = []
        self._count_restarts = restarts
        self._last_counts: dict[str, int] | None = None
        self._display = display or _ipython_display
        self._clock = clock
        self._handle: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample_restarts(self, now: float) -> None:
        if self._count_restarts is None:
            return
        try:
            counts = self._count_restarts()
        except Exception as exc:  # the lab's manager may be the service that is down: no reading this time
            logger.debug("no restart counts: %s", exc)
            return
        if self._last_counts is not None:
            for service, count in counts.items():
                grown = count - self._last_counts.get(service, count)
                self.restarts += [(now, service)] * max(0, grown)
        self._last_counts = {**(self._last_counts or {}), **counts}

    def frame(self, *, final: bool = False) -> tuple[dict[str, str], dict[str, Any]]:
        """Read what the run directory gained and draw it: the MIME data and metadata of one update."""
        now = self._clock()
        self._sample_restarts(now)
        self.follower.poll()
        run = self.follower.run_data(now)
        title = _headline(self.follower, run, now) + (" (final)" if final else "")
        fig = live_figure(run, now=now, restarts=self.restarts, alerts=self.follower.alerts(now), title=title)
        dpi = 2 * _FRAME_DPI if final else _FRAME_DPI
        data = {"image/png": _png(fig, dpi), "text/plain": fig.alt}
        metadata = {
            "image/png": {"width": int(_SIZE[0] * _FRAME_DPI)},
            LIVE_METADATA_KEY: {"run": run.run_id, "updates": self.updates, "final": final},
        }
        return data, metadata

    def _show(self, *, final: bool = False) -> None:
        data, metadata = self.frame(final=final)
        if self._handle is None:
            self._handle = self._display(data, metadata)
        else:
            self.updates += 1
            metadata[LIVE_METADATA_KEY]["updates"] = self.updates
            self._handle.update(data, metadata=metadata, raw=True)

    def _loop(self) -> None:
        # One frame every interval_s, not a pause after each (a slow frame on a busy laptop does not stretch
        # the next), yet half an interval's rest at least after each, left to the lab being measured.
        due = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            began = time.monotonic()
            try:
                self._show()
            except Exception:  # a frame that fails to draw must not stop the experiment
                logger.exception("the live view of %s could not be drawn", self.follower.path)
            due = max(began + self.interval_s, time.monotonic() + self.interval_s / 2)

    def start(self) -> LiveView:
        self._sample_restarts(self._clock())
        self._show()
        # The thread runs in this cell's context, so each update is the cell's output (ipykernel's parent).
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._loop,), name="labkit-live", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the updates and draw the final figure (what the saved notebook keeps)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._show(final=True)
        except Exception:
            logger.exception("the live view of %s could not be drawn", self.follower.path)


def _ipython_display(data: dict[str, str], metadata: dict[str, Any]) -> Any:
    from IPython.display import display

    return display(data, raw=True, metadata=metadata, display_id=True)


@contextmanager
def live_view(
    path: Path,
    *,
    interval_s: float = DEFAULT_LIVE_INTERVAL_S,
    restarts: Callable[[], dict[str, int]] | None = None,
    enabled: bool | None = None,
) -> Iterator[LiveView | None]:
    """The live view of run directory `path` while the block runs, its final figure when it ends; nothing
    (None) outside a Jupyter kernel or with `enabled=False`."""
    if not (in_kernel() if enabled is None else enabled):
        yield None
        return
    try:
        view = LiveView(Path(path), interval_s=interval_s, restarts=restarts).start()
    except Exception:  # the run matters more than its picture: it goes on without one
        logger.exception("the live view of %s could not start; the run goes on without it", path)
        yield None
        return
    try:
        yield view
    finally:
        view.stop()
