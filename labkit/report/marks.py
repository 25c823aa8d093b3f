"""What every timeline of a report shares: the figure type (SVG with alt text and a caption written from what
was drawn), one time axis from the method's start, the phases shaded, the rate warm-up hatched, and each
fault kind and remediation action in its own colour and marker, the same in every figure and legend.

Artists carry a `gid` (`fault:<id>`, `remediation:acted` / `remediation:dry_run`, `phase:<key>`, `warm-up`,
`missing`) so that tests and tools can find them.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from labkit.report.data import RunData

__all__ = [
    "ALERT_COLOURS",
    "CLIENT_COLOUR",
    "FAULT_STYLES",
    "REMEDIATION_STYLES",
    "SERVER_COLOUR",
    "SERVICE_COLOURS",
    "ReportFigure",
    "finish",
    "new_figure",
    "note_missing",
    "seconds",
    "state_spans",
    "x_label",
]

# Each fault kind: (colour, marker). Data lines use SERVER_COLOUR, CLIENT_COLOUR and SERVICE_COLOURS, none
# of which is a fault's colour, so that a line is never mistaken for a mark.
FAULT_STYLES: dict[str, tuple[str, str]] = {
    "kill": ("#d62728", "X"),
    "restart": ("#ff7f0e", "P"),
    "pause": ("#9467bd", "s"),
    "latency": ("#bcbd22", "D"),
    "error": ("#8c564b", "^"),
    "stream_cut": ("#e377c2", "v"),
    "cpu_stress": ("#17becf", "h"),
    "unload": ("#7f7f7f", "d"),
}
# Each remediation action: (colour, marker); acted is dashed, a dry run dotted with a hollow marker.
REMEDIATION_STYLES: dict[str, tuple[str, str]] = {"restart": ("black", "o")}
# Alerts by severity (prometheus/alerts.csv), drawn as a band along the bottom of the SLI timelines.
ALERT_COLOURS: dict[str, str] = {"page": "#000080", "ticket": "#5f9ea0"}
SERVER_COLOUR = "#1f77b4"
CLIENT_COLOUR = "#444444"
SERVICE_COLOURS = {"model": "#1f77b4", "wrapper": "#2ca02c", "prometheus": "#b8860b", "exporter": "#999999"}
_PHASE_FILL = {"before": "0.88", "after": "0.88"}
_SIZE = (10.0, 3.4)


def seconds(value: float) -> str:
    """A time on the run's clock for a caption: one decimal, never "-0.0"."""
    return f"{round(value, 1) + 0.0:.1f}"


def x_label(run: RunData) -> str:
    """The x axis' label: the method's clock where a chaos experiment ran, else the run's."""
    return "seconds since the method's start" if run.has_method else "seconds since the run's start"


class ReportFigure(Figure):
    """A matplotlib Figure that knows what it draws: `describe` records each series, shading and mark as it
    is drawn, `caption` and `alt` are written from those records. In a notebook it shows as SVG inside a
    `<figure>` with its alt text and caption (HTML output: no pyplot, no `%matplotlib` magic needed)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.drawn: dict[str, list[str]] = {}
        self.x_text = ""

    def describe(self, what: str, text: str) -> None:
        """Record that the figure draws `text` under `what` (series, shaded, marks, note)."""
        items = self.drawn.setdefault(what, [])
        if text not in items:
            items.append(text)

    @property
    def title(self) -> str:
        suptitle = self.get_suptitle()
        return suptitle or "figure"

    @property
    def caption(self) -> str:
        """One sentence per kind of thing drawn, in the order series, shading, marks, notes."""
        names = {"series": "Lines", "shaded": "Shaded", "marks": "Marks", "note": "Note"}
        parts = [f"{names.get(k, k)}: {'; '.join(v)}." for k, v in self.drawn.items() if v]
        return " ".join(parts)

    @property
    def alt(self) -> str:
        ylabels = [ax.get_ylabel() for ax in self.axes if ax.get_ylabel()]
        axes = f"x: {self.x_text}; y: {', '.join(ylabels)}." if self.x_text else ""
        return f"{self.title}. {axes} {self.caption}".strip()

    def svg(self) -> str:
        buffer = io.StringIO()
        self.savefig(buffer, format="svg", metadata={"Date": None})
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.svg().encode()).decode()
        return (
            '<figure class="labkit-figure" style="margin:0 0 1.5em 0;max-width:100%">'
            f'<img src="data:image/svg+xml;base64,{data}" alt="{html.escape(self.alt)}" '
            'style="width:100%;max-width:1000px;height:auto">'
            f'<figcaption style="font-size:0.9em;color:#333;max-width:60em">{html.escape(self.caption)}'
            "</figcaption></figure>"
        )


def new_figure(run: RunData, title: str, ylabels: list[str]) -> tuple[ReportFigure, list[Axes]]:
    """A figure with one axes per y label, stacked, sharing x; `title` on top."""
    fig = ReportFigure(figsize=(_SIZE[0], _SIZE[1] * (1 + 0.7 * (len(ylabels) - 1))), layout="constrained")
    axes = fig.subplots(len(ylabels), 1, sharex=True, squeeze=False)[:, 0].tolist()
    fig.suptitle(title)
    for ax, label in zip(axes, ylabels, strict=True):
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel(x_label(run))
    fig.x_text = x_label(run)
    return fig, axes


def note_missing(fig: ReportFigure, ax: Axes, sentence: str) -> None:
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
    fig.describe("note", f"no data: {sentence}")


def _label(ax: Axes, at: float, text: str, colour: str, *, at_top: bool) -> None:
    """A mark's label, written upwards beside its line: faults at the top, remediation at the bottom."""
    ax.text(
        at,
        0.97 if at_top else 0.03,
        f" {text}",
        transform=blended_transform_factory(ax.transData, ax.transAxes),
        rotation=90,
        va="top" if at_top else "bottom",
        ha="right",
        fontsize=8,
        color=colour,
    )


def _mark_phases(fig: ReportFigure, ax: Axes, run: RunData, *, top: bool) -> None:
    """The steady-state checks shaded grey, the method left white; each named at the top of the figure."""
    for phase in run.phases:
        start, end = run.t_s(phase.start), run.t_s(phase.end)
        fill = _PHASE_FILL.get(phase.key)
        if fill is not None:
            ax.axvspan(
                start, end, color=fill, alpha=0.5, zorder=0, gid=f"phase:{phase.key}", label="_nolegend_"
            )
        if top:
            ax.text(
                (start + end) / 2,
                1.01,
                phase.name,
                transform=blended_transform_factory(ax.transData, ax.transAxes),
                ha="center",
                va="bottom",
                fontsize=8,
                color="0.35",
                clip_on=False,
            )
        fig.describe(
            "shaded", f"{phase.name} {seconds(start)} to {seconds(end)} s" + (" (grey)" if fill else "")
        )


def _mark_warm_up(fig: ReportFigure, ax: Axes, run: RunData) -> None:
    """The first rate window of Prometheus' series: rates there average over less than their window."""
    window, span = run.rate_window_s, run.window
    if window is None or span is None or not isinstance(span.get("start"), int | float):
        return
    start = run.t_s(float(span["start"]))
    ax.axvspan(
        start, start + window, facecolor="none", edgecolor="0.6", hatch="//", linewidth=0, gid="warm-up"
    )
    fig.describe("shaded", f"server rates warming up (hatched, first {window:g} s rate window)")


def _mark_faults(fig: ReportFigure, ax: Axes, run: RunData, seen: set[str]) -> None:
    """Each fault as a line (instantaneous) or a span, in its kind's colour, its marker at the top."""
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for fault in run.faults.to_dict("records"):
        start, end, kind = float(fault["start_t_s"]), float(fault["end_t_s"]), str(fault["kind"])
        colour, marker = FAULT_STYLES.get(kind, ("0.5", "o"))
        legend = f"fault: {kind}"
        gid = f"fault:{fault['fault_id']}"
        if fault["instantaneous"]:
            ax.axvline(start, color=colour, linewidth=1.5, gid=gid, label="_nolegend_")
            fig.describe(
                "marks", f"{kind} {fault['target']} at {seconds(start)} s ({colour_name(colour)} line)"
            )
        else:
            ax.axvspan(start, end, color=colour, alpha=0.15, gid=gid, label="_nolegend_")
            fig.describe(
                "marks",
                f"{kind} {fault['target']} {seconds(start)} to {seconds(end)} s ({colour_name(colour)} span)",
            )
        ax.plot(
            [start], [1.0], marker=marker, color=colour, markersize=8, linestyle="none", transform=top,
            clip_on=False, label=legend if legend not in seen else "_nolegend_", gid=f"{gid}:marker",
        )  # fmt: skip
        seen.add(legend)
        _label(ax, start, f"{kind} {fault['target']}", colour, at_top=True)


def _mark_remediation(fig: ReportFigure, ax: Axes, run: RunData, seen: set[str]) -> None:
    """Each remediation action as a vertical line: dashed when acted, dotted (hollow marker) for a dry run."""
    bottom = blended_transform_factory(ax.transData, ax.transAxes)
    for action in run.remediation_actions.to_dict("records"):
        at, dry, verb = float(action["t_s"]), bool(action["dry_run"]), str(action["action"] or "restart")
        colour, marker = REMEDIATION_STYLES.get(verb, ("black", "o"))
        legend = f"remediation: {verb}" + (" (dry run)" if dry else "")
        ax.axvline(
            at, color=colour, linestyle=":" if dry else "--", linewidth=1.5, label="_nolegend_",
            gid="remediation:dry_run" if dry else "remediation:acted",
        )  # fmt: skip
        ax.plot(
            [at], [0.0], marker=marker, color=colour, markerfacecolor="white" if dry else colour,
            markersize=7, linestyle="none", transform=bottom, clip_on=False,
            label=legend if legend not in seen else "_nolegend_",
        )  # fmt: skip
        seen.add(legend)
        said = f"would {verb}" if dry else verb
        _label(ax, at, f"{said} {action['target']}", colour, at_top=False)
        fig.describe(
            "marks", f"{said} {action['target']} at {seconds(at)} s ({'dotted' if dry else 'dashed'} line)"
        )


def state_spans(times: Iterable[float], step: float) -> list[tuple[float, float]]:
    """Sample times (one per `step`) as contiguous intervals, each to its last sample + step; a gap over
    1.5 steps starts a new interval."""
    spans: list[tuple[float, float]] = []
    for t in sorted(set(times)):
        if spans and t - spans[-1][1] <= 0.5 * step + 1e-9:
            spans[-1] = (spans[-1][0], t + step)
        else:
            spans.append((t, t + step))
    return spans


def _mark_alerts(fig: ReportFigure, ax: Axes, run: RunData, seen: set[str]) -> None:
    """Each severity's pending (light) and firing (solid) time as a band along the bottom of the axes, from
    Prometheus' ALERTS; the end of a firing band is where the alert resolved."""
    frame = run.series.get("alerts")
    if frame is None or frame.empty or not {"severity", "alertstate"} <= set(frame.columns):
        return
    step = float((run.window or {}).get("step_s") or 1.0)
    # ALERTS has samples only while an alert is active: a band that reaches the end of the collected window
    # had not resolved when the collection ended.
    window_end = (run.window or {}).get("end")
    if isinstance(window_end, int | float) and run.origin is not None:
        collected_until = float(window_end) - run.origin
    else:
        collected_until = float(frame["t_s"].astype(float).max()) + step
    for row, severity in enumerate(("page", "ticket")):
        colour = ALERT_COLOURS[severity]
        for state, alpha in (("pending", 0.35), ("firing", 0.9)):
            rows = frame[(frame["severity"].astype(str) == severity) & (frame["alertstate"] == state)]
            for start, end in state_spans(rows.loc[rows["value"] > 0, "t_s"].astype(float), step):
                legend = f"alert: {severity} {state}"
                ax.axvspan(start, end, ymin=0.04 * row, ymax=0.04 * (row + 1), color=colour, alpha=alpha,
                           linewidth=0, gid=f"alert:{severity}:{state}",
                           label=legend if legend not in seen else "_nolegend_")  # fmt: skip
                seen.add(legend)
                if state == "pending":
                    ended = ""
                elif end >= collected_until - step:
                    ended = f", still firing when the series end ({seconds(end)} s)"
                else:
                    ended = f", resolved at {seconds(end)} s"
                fig.describe(
                    "marks",
                    f"{severity} alert {state} from {seconds(start)} s{ended} "
                    f"({colour_name(colour)} band along the bottom)",
                )


def colour_name(colour: str) -> str:
    """A colour as a reader names it, for captions and alt text."""
    names = {
        "#d62728": "red", "#ff7f0e": "orange", "#9467bd": "purple", "#bcbd22": "olive", "#8c564b": "brown",
        "#e377c2": "pink", "#17becf": "cyan", "#7f7f7f": "grey", "black": "black", "#000080": "navy",
        "#5f9ea0": "teal",
    }  # fmt: skip
    return names.get(colour, colour)


def finish(fig: ReportFigure, run: RunData, *, warm_up: bool = False, alerts: bool = False) -> ReportFigure:
    """Phases, warm-up, faults, remediation, the shared x range and the legend on every axes of `fig`; with
    `alerts` (the SLI timelines), the alert states too."""
    t_range = run.t_range
    axes: Iterable[Axes] = fig.axes
    for index, ax in enumerate(axes):
        seen: set[str] = set()
        _mark_phases(fig, ax, run, top=index == 0)
        if warm_up:
            _mark_warm_up(fig, ax, run)
        _mark_faults(fig, ax, run, seen)
        _mark_remediation(fig, ax, run, seen)
        if alerts:
            _mark_alerts(fig, ax, run, seen)
        if t_range is not None:
            ax.set_xlim(*t_range)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return fig
