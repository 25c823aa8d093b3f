"""`labkit watch`: a running lab on the terminal, redrawn every few seconds until Ctrl-C. Each reading asks
the lab's control API for its services (state, restarts) and its Prometheus for the traffic of the last
`WATCH_WINDOW_S` (requests/s, p95 latency, 5xx share, in flight), the wrapper's active faults and the
firing alerts; a rich table shows the latest reading beside a sparkline of the recent ones.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from labkit.chaos import p95_latency_query
from labkit.errors import LabkitError
from labkit.lab.backend import Backend
from labkit.lab.contract import ServiceStatus
from labkit.measure.histograms import GENERATION_ENDPOINT_MATCHER
from labkit.measure.prom import PrometheusClient
from labkit.report.tables import MISSING

__all__ = [
    "DEFAULT_WATCH_INTERVAL_S",
    "SIGNALS",
    "WATCH_WINDOW_S",
    "LabReading",
    "LabWatch",
    "read_lab",
    "sparkline",
    "watch_lab",
]

DEFAULT_WATCH_INTERVAL_S = 2.0
WATCH_WINDOW_S = 10  # the rate window of every traffic signal, seconds
_HISTORY = 40  # readings kept for the sparklines
_TICKS = "▁▂▃▄▅▆▇█"
_STATE_STYLES = {
    "ready": "green", "starting": "yellow", "unready": "yellow", "restarting": "yellow", "paused": "magenta",
    "failed": "red", "stopped": "red", "external": "dim",
}  # fmt: skip

_REQUESTS = f"llm_requests_total{{{GENERATION_ENDPOINT_MATCHER}}}"
# Each traffic signal: (its name on screen, its unit, its PromQL).
SIGNALS: dict[str, tuple[str, str, str]] = {
    "rate": ("requests/s", "/s", f"sum(rate({_REQUESTS}[{WATCH_WINDOW_S}s]))"),
    "p95": ("p95 latency", "s", p95_latency_query(WATCH_WINDOW_S)),
    "errors": (
        "5xx share",
        "%",
        f'100 * sum(rate(llm_requests_total{{{GENERATION_ENDPOINT_MATCHER},status_code=~"5.."}}'
        f"[{WATCH_WINDOW_S}s])) / sum(rate({_REQUESTS}[{WATCH_WINDOW_S}s]))",
    ),
    "in_flight": ("in flight", "", "sum(llm_requests_in_flight)"),
}
_FAULTS_QUERY = "llm_faults_active > 0"
_ALERTS_QUERY = 'ALERTS{alertstate="firing"}'


@dataclass(frozen=True)
class LabReading:
    """One look at the lab: its services (None with `services_error` when the control API did not answer),
    the traffic signals (None: no traffic or no answer; `prometheus_error` says which), active faults and
    firing alerts, at unix time `at`."""

    at: float
    services: list[ServiceStatus] | None = None
    services_error: str | None = None
    signals: dict[str, float | None] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    prometheus_error: str | None = None


def _value(result: list[dict[str, object]]) -> float | None:
    if not result:
        return None
    value = result[0].get("value")
    number = float(value[1]) if isinstance(value, list) and len(value) == 2 else math.nan
    return None if math.isnan(number) or math.isinf(number) else number


def read_lab(
    backend: Backend, prometheus: PrometheusClient, *, clock: Callable[[], float] = time.time
) -> LabReading:
    """Read the lab once (what cannot be read is said in the reading, never raised)."""
    services, services_error = None, None
    try:
        services = backend.status()
    except LabkitError as exc:
        services_error = str(exc)
    signals: dict[str, float | None] = {}
    faults, alerts, prometheus_error = [], [], None
    try:
        for key, (_, _, query) in SIGNALS.items():
            signals[key] = _value(prometheus.instant(query))
        faults = sorted(
            {f"{s['metric'].get('kind', '?')} (wrapper)" for s in prometheus.instant(_FAULTS_QUERY)}
        )
        alerts = sorted(
            {
                f"{s['metric'].get('alertname', '?')} ({s['metric'].get('severity', 'no severity')})"
                for s in prometheus.instant(_ALERTS_QUERY)
            }
        )
    except LabkitError as exc:
        prometheus_error = str(exc)
    paused = [f"{s.name} paused" for s in services or [] if s.state == "paused"]
    return LabReading(
        at=clock(),
        services=services,
        services_error=services_error,
        signals=signals,
        faults=faults + paused,
        alerts=alerts,
        prometheus_error=prometheus_error,
    )


def sparkline(values: list[float | None]) -> str:
    """The values as block characters from the smallest to the largest seen (a space where there was none)."""
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    low, high = min(known), max(known)
    span = high - low
    return "".join(
        " " if v is None else _TICKS[0 if span == 0 else round((v - low) / span * (len(_TICKS) - 1))]
        for v in values
    )


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return MISSING
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:.2f}{unit}" if unit else f"{value:.0f}"


@dataclass
class LabWatch:
    """The readings so far (the last `_HISTORY`) and their picture."""

    title: str
    history: deque[LabReading] = field(default_factory=lambda: deque(maxlen=_HISTORY))

    def add(self, reading: LabReading) -> None:
        self.history.append(reading)

    def render(self) -> Group:
        """The latest reading: a table of services, one of signals with sparklines, the faults and alerts."""
        latest = self.history[-1]
        services = Table(title="services", title_justify="left", expand=False)
        for column in ("service", "state", "restarts", "pid"):
            services.add_column(column, justify="right" if column in ("restarts", "pid") else "left")
        for s in latest.services or []:
            style = _STATE_STYLES.get(s.state, "")
            services.add_row(
                s.name,
                Text(s.state, style=style),
                MISSING if s.restarts is None else str(s.restarts),
                MISSING if s.pid is None else str(s.pid),
            )
        signals = Table(title=f"traffic (last {WATCH_WINDOW_S} s)", title_justify="left")
        for column in ("signal", "now", f"last {len(self.history)} readings"):
            signals.add_column(column)
        for key, (name, unit, _) in SIGNALS.items():
            values = [r.signals.get(key) for r in self.history]
            signals.add_row(name, _number(latest.signals.get(key), unit), sparkline(values))
        lines: list[Text | Table] = [
            Text(f"{self.title} · {time.strftime('%H:%M:%S', time.localtime(latest.at))}", style="bold"),
            services,
            signals,
            Text(f"active faults: {', '.join(latest.faults) or 'none'}"),
            Text(f"firing alerts: {', '.join(latest.alerts) or 'none'}"),
        ]
        if latest.services_error:
            lines.append(Text(f"services: {latest.services_error}", style="red"))
        if latest.prometheus_error:
            lines.append(Text(f"prometheus: {latest.prometheus_error}", style="red"))
        lines.append(Text("Ctrl-C to stop", style="dim"))
        return Group(*lines)


def _ticks(interval_s: float, count: int | None) -> Iterator[int]:
    n = 0
    while count is None or n < count:
        if n:
            time.sleep(interval_s)
        yield n
        n += 1


def watch_lab(
    backend: Backend,
    *,
    interval_s: float = DEFAULT_WATCH_INTERVAL_S,
    count: int | None = None,
    console: Console | None = None,
) -> LabWatch:
    """Show the lab of `backend` every `interval_s` until Ctrl-C (or `count` readings); the readings."""
    config = backend.saved_config()  # LabNotRunningError when no lab runs: said before the screen starts
    view = LabWatch(title=f"lab {backend.lab.root} ({config.engine}, {config.backend})")
    console = console or Console()
    with PrometheusClient(config.prometheus_url, timeout_s=min(3.0, max(0.5, interval_s))) as prometheus:
        view.add(read_lab(backend, prometheus))
        with Live(view.render(), console=console, auto_refresh=False, transient=False) as live:
            try:
                for n in _ticks(interval_s, count):
                    if n:
                        view.add(read_lab(backend, prometheus))
                    live.update(view.render(), refresh=True)
            except KeyboardInterrupt:
                pass
    return view
