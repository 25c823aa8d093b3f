"""The lab's Grafana dashboard, generated from the metric names the services export and the SLO spec, so that
every panel queries a series that exists (a test checks it against a running lab) and every threshold is
the spec's. `python -m generators.dashboard --write` rewrites `stack/grafana/dashboards/labkit.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.config import stack_dir
from labkit.measure.histograms import GENERATION_ENDPOINT_MATCHER
from labkit.measure.slo.alerts import ALERT_PROFILES, AlertProfile, AlertProfileName, BurnRateAlert
from labkit.measure.slo.rules import error_ratio_record, objective_error_ratio_expr
from labkit.measure.slo.spec import Objective, SloDefinition, load_slo_spec

__all__ = [
    "DASHBOARD_ALERT_PROFILE",
    "DASHBOARD_FILE",
    "DASHBOARD_UID",
    "DATASOURCE_UID",
    "DATASOURCE_VARIABLE",
    "SCHEMA_VERSION",
    "DashboardQuery",
    "build_dashboard",
    "dashboard_json",
    "dashboard_queries",
    "main",
    "panel_table_markdown",
]

DASHBOARD_UID = "labkit-lab"
DASHBOARD_FILE = "grafana/dashboards/labkit.json"  # under stack/
# The datasource stack/grafana/provisioning/datasources/prometheus.yml provisions; the dashboard's
# `datasource` variable defaults to it and every panel queries through the variable.
DATASOURCE_UID = "labkit-prometheus"
DATASOURCE_VARIABLE = "datasource"
# Grafana 11.0's schema; later 11.x versions migrate it on load.
SCHEMA_VERSION = 39
# The alert profile whose windows the burn-rate panels read: the one the lab's Prometheus loads (`labkit up`
# and the compose stack's rules, generators.compose). docs/grafana.md lists the production windows.
DASHBOARD_ALERT_PROFILE: AlertProfileName = "lab"

_DATASOURCE = {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
_GENERATE = GENERATION_ENDPOINT_MATCHER  # the wrapper's generation endpoints, as its metrics label them
# Grafana: max(step + scrape interval, 4 x scrape interval), the window labkit.measure.prom uses too.
_RATE = "$__rate_interval"

_WRAPPER_DURATION = "llm_request_duration_seconds"
_WRAPPER_TTFT = "llm_time_to_first_token_seconds"
_WRAPPER_ITL = "llm_inter_token_latency_seconds"


@dataclass(frozen=True)
class DashboardQuery:
    """One PromQL expression of the dashboard and where it is: `panel "<title>" <refId>` or `annotation`."""

    where: str
    expr: str


# ---- building blocks ---------------------------------------------------------------------------------


def _target(expr: str, legend: str = "__auto", *, ref: str = "A", instant: bool = False) -> dict[str, Any]:
    return {
        "datasource": _DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
        "refId": ref,
    }


def _targets(*queries: tuple[str, str], instant: bool = False) -> list[dict[str, Any]]:
    return [
        _target(expr, legend, ref=chr(ord("A") + i), instant=instant)
        for i, (expr, legend) in enumerate(queries)
    ]


def _thresholds(base: str, *steps: tuple[float, str]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}, *({"color": c, "value": v} for v, c in steps)],
    }


_NEUTRAL = _thresholds("green")


class _Layout:
    """Places panels left to right in rows of 24 grid columns and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self._x = 0
        self._y = 0
        self._row_height = 0

    def _next_id(self) -> int:
        return len(self.panels) + 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
                "id": self._next_id(),
                "panels": [],
                "title": title,
                "type": "row",
            }
        )
        self._y += 1

    def add(self, panel: dict[str, Any], *, w: int, h: int) -> None:
        if self._x + w > 24:
            self._newline()
        panel["id"] = self._next_id()
        panel["gridPos"] = {"h": h, "w": w, "x": self._x, "y": self._y}
        self.panels.append(panel)
        self._x += w
        self._row_height = max(self._row_height, h)

    def _newline(self) -> None:
        self._y += self._row_height
        self._x = 0
        self._row_height = 0


def _timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str,
    thresholds: dict[str, Any] = _NEUTRAL,
    show_thresholds: bool = False,
    min_value: float | None = 0,
    max_value: float | None = None,
    decimals: int | None = None,
    stacked: bool = False,
    steps: bool = False,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "color": {"mode": "palette-classic"},
        "custom": {
            "axisBorderShow": False,
            "axisPlacement": "auto",
            "drawStyle": "line",
            "fillOpacity": 25 if stacked else 10,
            "gradientMode": "none",
            "lineInterpolation": "stepAfter" if steps else "linear",
            "lineWidth": 1,
            "pointSize": 4,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
            "thresholdsStyle": {"mode": "dashed" if show_thresholds else "off"},
        },
        "thresholds": thresholds,
        "unit": unit,
    }
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "datasource": _DATASOURCE,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "calcs": ["lastNotNull", "max"],
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
        "title": title,
        "type": "timeseries",
    }


def _stat(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str,
    thresholds: dict[str, Any] = _NEUTRAL,
    decimals: int | None = None,
    mappings: list[dict[str, Any]] | None = None,
    sparkline: bool = False,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "color": {"mode": "thresholds"},
        "mappings": mappings or [],
        "thresholds": thresholds,
        "unit": unit,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "datasource": _DATASOURCE,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "colorMode": "value",
            "graphMode": "area" if sparkline else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showPercentChange": False,
            "textMode": "auto",
            "wideLayout": True,
        },
        "targets": targets,
        "title": title,
        "type": "stat",
    }


def _gauge(
    title: str, description: str, targets: list[dict[str, Any]], *, unit: str, thresholds: dict[str, Any]
) -> dict[str, Any]:
    return {
        "datasource": _DATASOURCE,
        "description": description,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "max": 1,
                "min": 0,
                "thresholds": thresholds,
                "unit": unit,
            },
            "overrides": [],
        },
        "options": {
            "minVizHeight": 75,
            "minVizWidth": 75,
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showThresholdLabels": False,
            "showThresholdMarkers": True,
            "sizing": "auto",
        },
        "targets": targets,
        "title": title,
        "type": "gauge",
    }


def _value_text(value: str, text: str, color: str) -> dict[str, Any]:
    return {"options": {value: {"color": color, "index": 0, "text": text}}, "type": "value"}


# ---- queries ---------------------------------------------------------------------------------------


def _quantile(q: float, metric: str, matchers: str = "") -> str:
    selector = f"{metric}_bucket{{{matchers}}}" if matchers else f"{metric}_bucket"
    return f"histogram_quantile({q:g}, sum by (le) (rate({selector}[{_RATE}])))"


def _ratio_slo(slos: Sequence[SloDefinition]) -> SloDefinition:
    for slo in slos:
        if slo.indicator == "ratio":
            return slo
    raise ValueError("the SLO spec has no ratio (availability) SLO for the dashboard's availability panels")


def _objectives(slos: Sequence[SloDefinition]) -> Iterator[tuple[SloDefinition, Objective]]:
    for slo in slos:
        for objective in slo.objectives:
            yield slo, objective


def _legend(slo: SloDefinition, objective: Objective) -> str:
    return f"{slo.name}: {objective.display_name}"


def _recorded_ratio(slo: SloDefinition, objective: Objective, window: str) -> str:
    matchers = f"slo={json.dumps(slo.name)},objective={json.dumps(objective.display_name)}"
    return f"{error_ratio_record(window)}{{{matchers}}}"


def _latency_thresholds(slos: Sequence[SloDefinition], metric: str) -> dict[str, Any]:
    """Dashed lines at the spec's thresholds of `metric`: orange at the tightest, red at the loosest."""
    values = sorted(
        {o.value for s in slos if s.metric == metric for o in s.objectives if o.value is not None}
    )
    colors = ["orange", *(["red"] if len(values) > 1 else [])]
    steps = [(v, colors[min(i, len(colors) - 1)]) for i, v in enumerate(values)]
    return _thresholds("green", *steps)


def _threshold_text(slos: Sequence[SloDefinition], metric: str) -> str:
    parts = [
        f"{o.target:.0%} within {o.value:g} s"
        for s in slos
        if s.metric == metric
        for o in s.objectives
        if o.value is not None
    ]
    return "; ".join(parts) if parts else "no objective in the spec"


# ---- the dashboard --------------------------------------------------------------------------------


def _overview(layout: _Layout, slos: Sequence[SloDefinition]) -> None:
    availability = _ratio_slo(slos)
    objective = availability.objectives[0]
    layout.row("Overview: what users of the generation endpoints feel")
    layout.add(
        _stat(
            "Availability (time range)",
            f"Good / valid requests over the whole time range, from the SLO spec's queries "
            f"({availability.name}). Green at or above the objective, {objective.target:.2%}. "
            "An exact ratio of counter increases, never an average of ratios.",
            _targets(
                (f"1 - ({objective_error_ratio_expr(availability, objective, '$__range')})", "availability"),
                instant=True,
            ),
            unit="percentunit",
            decimals=3,
            thresholds=_thresholds("red", (objective.target, "green")),
        ),
        w=4,
        h=5,
    )
    layout.add(
        _stat(
            "Request rate",
            "Requests per second to the generation endpoints (/generate, /v1/chat/completions, "
            "/v1/completions), every outcome.",
            _targets((f"sum(rate(llm_requests_total{{{_GENERATE}}}[{_RATE}]))", "requests/s")),
            unit="reqps",
            sparkline=True,
        ),
        w=4,
        h=5,
    )
    layout.add(
        _stat(
            "Error ratio",
            f"Bad / valid requests now (over {_RATE}); orange above the error budget "
            f"({objective.error_budget:.2%}), red above 10x it.",
            _targets((objective_error_ratio_expr(availability, objective, _RATE), "error ratio")),
            unit="percentunit",
            decimals=2,
            thresholds=_thresholds(
                "green", (objective.error_budget, "orange"), (min(1.0, 10 * objective.error_budget), "red")
            ),
            sparkline=True,
        ),
        w=4,
        h=5,
    )
    layout.add(
        _stat(
            "Latency p95",
            "95th percentile of the end-to-end duration of successful requests, interpolated in the "
            f"histogram's buckets (display only: SLIs are exact bucket ratios). Objectives: "
            f"{_threshold_text(slos, _WRAPPER_DURATION)}.",
            _targets((_quantile(0.95, _WRAPPER_DURATION, _GENERATE), "p95")),
            unit="s",
            decimals=2,
            thresholds=_latency_thresholds(slos, _WRAPPER_DURATION),
            sparkline=True,
        ),
        w=4,
        h=5,
    )
    layout.add(
        _stat(
            "In flight",
            "Admitted requests not yet finished (streams until their last line), from the wrapper's gauge.",
            _targets(("sum(llm_requests_in_flight)", "in flight")),
            unit="short",
            decimals=0,
            sparkline=True,
        ),
        w=4,
        h=5,
    )
    layout.add(
        _stat(
            "GPU",
            "Whether NVML answers and reports a GPU to the lab exporter. Without one there are no GPU series "
            "at all, never a made-up reading.",
            _targets(("max(lab_gpu_available)", "GPU")),
            unit="none",
            mappings=[
                _value_text("0", "no GPU (NVML)", "text"),
                _value_text("1", "NVML answers", "green"),
            ],
            thresholds=_thresholds("text"),
        ),
        w=4,
        h=5,
    )


def _traffic(layout: _Layout, slos: Sequence[SloDefinition]) -> None:
    availability = _ratio_slo(slos)
    page = _fast_page(ALERT_PROFILES[DASHBOARD_ALERT_PROFILE])
    objective = availability.objectives[0]
    layout.row("Traffic and errors")
    layout.add(
        _timeseries(
            "Requests by status code",
            "Requests per second to the generation endpoints by outcome. 499: the client left early; 429: "
            "shed on /v1; a stream that failed after its 200 header counts as 502 or 504.",
            _targets(
                (
                    f"sum by (status_code) (rate(llm_requests_total{{{_GENERATE}}}[{_RATE}]))",
                    "{{status_code}}",
                )
            ),
            unit="reqps",
            stacked=True,
        ),
        w=12,
        h=8,
    )
    layout.add(
        _timeseries(
            "Error ratio vs error budget",
            f"Bad / valid requests (availability SLO: valid excludes 4xx and 499) over {_RATE}. "
            f"The dashed line is the error budget, 1 - {objective.target:g}: above it the budget burns "
            "faster than the SLO allows.",
            _targets((objective_error_ratio_expr(availability, objective, _RATE), "error ratio")),
            unit="percentunit",
            thresholds=_thresholds("green", (objective.error_budget, "red")),
            show_thresholds=True,
            max_value=None,
        ),
        w=12,
        h=8,
    )
    layout.add(
        _timeseries(
            "Rejections and backend errors",
            "Requests the wrapper turned away with 503 before generating (in-flight bound, model server "
            "busy), and failed calls to the model server by kind.",
            _targets(
                (f"sum by (reason) (rate(llm_requests_rejected_total[{_RATE}]))", "rejected: {{reason}}"),
                (f"sum by (kind) (rate(llm_backend_errors_total[{_RATE}]))", "backend error: {{kind}}"),
            ),
            unit="reqps",
        ),
        w=12,
        h=8,
    )
    layout.add(
        _timeseries(
            "Availability vs objective",
            f"1 - the recorded error ratio of the {availability.name} SLO over {page.short_window} and "
            f"{page.long_window}, the windows of the page alert (the recording rules of "
            f"labkit.measure.slo.rules, {ALERT_PROFILES[DASHBOARD_ALERT_PROFILE].describe()}). "
            f"Dashed: the objective, {objective.target:.2%}. "
            "No line where there was no valid request in the window.",
            _targets(
                *(
                    (f"1 - {_recorded_ratio(availability, objective, w)}", f"availability ({w})")
                    for w in (page.short_window, page.long_window)
                )
            ),
            unit="percentunit",
            thresholds=_thresholds("red", (objective.target, "green")),
            show_thresholds=True,
            min_value=None,
            max_value=1,
        ),
        w=12,
        h=8,
    )


def _latency_quantiles(
    slos: Sequence[SloDefinition],
    title: str,
    what: str,
    metric: str,
    quantiles: Sequence[float],
    matchers: str = "",
) -> dict[str, Any]:
    """A panel of `metric`'s quantiles with the spec's thresholds of it drawn dashed."""
    thresholds = _threshold_text(slos, metric)
    plural = "s" if ";" in thresholds else ""
    return _timeseries(
        title,
        f"{what} Dashed: the spec's threshold{plural} ({thresholds}).",
        _targets(*((_quantile(q, metric, matchers), f"p{q * 100:g}") for q in quantiles)),
        unit="s",
        thresholds=_latency_thresholds(slos, metric),
        show_thresholds=True,
    )


def _latency(layout: _Layout, slos: Sequence[SloDefinition]) -> None:
    layout.row("Latency (quantiles interpolated in histogram buckets: for display; SLIs are exact)")
    panels = [
        _latency_quantiles(
            slos, "End-to-end latency p50 / p95 / p99",
            "Duration of successful generation requests (every endpoint), arrival to last byte.",
            _WRAPPER_DURATION, (0.5, 0.95, 0.99), _GENERATE,
        ),
        _latency_quantiles(
            slos, "Time to first token p50 / p95",
            "Arrival to the first generated token at the wrapper.", _WRAPPER_TTFT, (0.5, 0.95),
        ),
        _latency_quantiles(
            slos, "Inter-token latency p50 / p95",
            "Gaps between consecutive streamed chunks after the first.", _WRAPPER_ITL, (0.5, 0.95),
        ),
    ]  # fmt: skip
    for panel in panels:
        layout.add(panel, w=8, h=8)


def _saturation(layout: _Layout) -> None:
    layout.row("Saturation and throughput")
    layout.add(
        _timeseries(
            "In-flight requests and the model server's queue",
            "The wrapper's admitted requests, the model server's requests holding a generation slot, and "
            "those waiting for one (a real Ollama exports none of the model_* series).",
            _targets(
                ("sum(llm_requests_in_flight)", "wrapper: in flight"),
                ("sum(model_requests_running)", "model: running"),
                ("sum(model_queue_depth)", "model: queued"),
            ),
            unit="short",
            decimals=0,
        ),
        w=12,
        h=8,
    )
    layout.add(
        _timeseries(
            "Tokens per second",
            "Tokens generated and prompt tokens evaluated, as the model server counted them for each "
            "request (its final chunk or usage) and the wrapper adds them up.",
            _targets(
                (f"sum(rate(llm_output_tokens_total[{_RATE}]))", "output tokens/s"),
                (f"sum(rate(llm_prompt_tokens_total[{_RATE}]))", "prompt tokens/s"),
            ),
            unit="short",
        ),
        w=12,
        h=8,
    )


def _services(layout: _Layout) -> None:
    layout.row("Lab services (the lab exporter)")
    layout.add(
        _timeseries(
            "Restarts per service",
            "lab_service_restarts_total: every restart counted once, by the restart policy or on request, "
            "kills from outside the lab included. A step up is a restart (also annotated).",
            _targets(("sum by (service) (lab_service_restarts_total)", "{{service}}")),
            unit="short",
            decimals=0,
            steps=True,
        ),
        w=6,
        h=8,
    )
    layout.add(
        _timeseries(
            "Services up",
            "1 when the service answers its readiness check, 0 when not.",
            _targets(("max by (service) (lab_service_up)", "{{service}}")),
            unit="none",
            decimals=0,
            max_value=1,
            steps=True,
        ),
        w=6,
        h=8,
    )
    layout.add(
        _timeseries(
            "CPU per service",
            "CPU seconds per second (cores) of each service's current process tree; the counter restarts "
            "with the process, which rate() accounts for.",
            _targets((f"sum by (service) (rate(lab_service_cpu_seconds_total[{_RATE}]))", "{{service}}")),
            unit="short",
        ),
        w=6,
        h=8,
    )
    layout.add(
        _timeseries(
            "Resident memory per service",
            "Resident memory of each service's current process tree.",
            _targets(("sum by (service) (lab_service_resident_memory_bytes)", "{{service}}")),
            unit="bytes",
        ),
        w=6,
        h=8,
    )


def _gpu(layout: _Layout) -> None:
    no_gpu = (
        " Empty on a machine where NVML reports no GPU: the exporter then exports lab_gpu_available 0 and "
        "no GPU series."
    )
    layout.row("GPU (NVML, through the lab exporter)")
    layout.add(
        _timeseries(
            "GPU utilization",
            "Share of the last sample period in which a kernel ran, per GPU." + no_gpu,
            _targets(("lab_gpu_utilization_ratio", "GPU {{gpu}} {{name}}")),
            unit="percentunit",
            max_value=1,
        ),
        w=10,
        h=8,
    )
    layout.add(
        _timeseries(
            "GPU memory",
            "Memory in use and in all, per GPU." + no_gpu,
            _targets(
                ("lab_gpu_memory_used_bytes", "used: GPU {{gpu}}"),
                ("lab_gpu_memory_total_bytes", "total: GPU {{gpu}}"),
            ),
            unit="bytes",
        ),
        w=8,
        h=8,
    )
    layout.add(
        _gauge(
            "GPU memory used",
            "Used / total memory per GPU now." + no_gpu,
            _targets(("lab_gpu_memory_used_bytes / lab_gpu_memory_total_bytes", "GPU {{gpu}}")),
            unit="percentunit",
            thresholds=_thresholds("green", (0.8, "orange"), (0.95, "red")),
        ),
        w=6,
        h=8,
    )


def _budget(layout: _Layout, slos: Sequence[SloDefinition]) -> None:
    layout.row("SLOs: error budget and burn rate (every objective of stack/slo.yaml)")
    layout.add(
        _stat(
            "Error budget remaining (time range)",
            "Per objective, 1 - error ratio / (1 - target) over the whole time range: 100 % = no bad "
            "event, 0 % = the range's error ratio is exactly the budget, negative = overspent. Set the "
            "time range to the SLO window (30 days) for the budget of the window; a lab run's range tells "
            "what its error ratio would leave of any window if it lasted.",
            _targets(
                *(
                    (
                        f"1 - ({objective_error_ratio_expr(slo, o, '$__range')}) / {o.error_budget:.12g}",
                        _legend(slo, o),
                    )
                    for slo, o in _objectives(slos)
                ),
                instant=True,
            ),
            unit="percentunit",
            decimals=1,
            thresholds=_thresholds("red", (0.0, "orange"), (0.25, "green")),
        ),
        w=8,
        h=10,
    )
    profile = ALERT_PROFILES[DASHBOARD_ALERT_PROFILE]
    page = _fast_page(profile)
    factors = sorted({a.factor for a in profile.alerts if a.severity == "page"})
    dashed = " and ".join(f"{f:g}" for f in factors)
    for window, description in (
        (
            page.short_window,
            f"the page alert's short window: with {page.long_window} it pages at {page.factor:g}x",
        ),
        (
            page.long_window,
            f"the page alert's long window: with {page.short_window} it pages at {page.factor:g}x",
        ),
    ):
        layout.add(
            _timeseries(
                f"Burn rate over {window}",
                f"Error ratio over {window} / (1 - target), per objective, from the recorded "
                f"{error_ratio_record(window)} ({description}; {profile.describe()}, as the lab's "
                "Prometheus loads). 1 = the budget lasts exactly the SLO window; dashed: the page factors "
                f"{dashed}.",
                _targets(
                    *(
                        (f"{_recorded_ratio(slo, o, window)} / {o.error_budget:.12g}", _legend(slo, o))
                        for slo, o in _objectives(slos)
                    )
                ),
                unit="suffix:x",
                thresholds=_thresholds(
                    "green", (1.0, "yellow"), *zip(factors, ("orange", "red"), strict=True)
                ),
                show_thresholds=True,
            ),
            w=8,
            h=10,
        )


def _fast_page(profile: AlertProfile) -> BurnRateAlert:
    """The profile's page with the shortest long window (the Workbook's 1h/5m at 14.4x; 2m/10s in the lab):
    the first to fire on a fast burn."""
    return min((a for a in profile.alerts if a.severity == "page"), key=lambda a: a.long_window_s)


def _chaos(layout: _Layout) -> None:
    layout.row("Chaos and remediation")
    layout.add(
        _timeseries(
            "Faults active",
            "llm_faults_active by kind: the wrapper's faults (latency, error, stream_cut: 0 or 1) and the "
            "lab manager's (pause: services paused, cpu_stress). kill, restart and unload are instantaneous: "
            "see the restart annotations and counters.",
            _targets(("sum by (kind) (llm_faults_active)", "{{kind}}")),
            unit="short",
            decimals=0,
            steps=True,
        ),
        w=12,
        h=8,
    )
    layout.add(
        _timeseries(
            "Remediation actions",
            "lab_remediation_actions_total: actions automated remediation took, by action, target and "
            "reason (cumulative; no series before the first action).",
            _targets(
                (
                    "sum by (action, target, reason) (lab_remediation_actions_total)",
                    "{{action}} {{target}}: {{reason}}",
                )
            ),
            unit="short",
            decimals=0,
            steps=True,
        ),
        w=12,
        h=8,
    )


def _annotations() -> list[dict[str, Any]]:
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }

    def prometheus(name: str, expr: str, title: str, tags: str, color: str) -> dict[str, Any]:
        return {
            "datasource": _DATASOURCE,
            "enable": True,
            "expr": expr,
            "hide": False,
            "iconColor": color,
            "name": name,
            "step": "5s",
            "tagKeys": tags,
            "textFormat": "",
            "titleFormat": title,
            "useValueForTime": False,
        }

    return [
        builtin,
        prometheus(
            "Faults active", "sum by (kind) (llm_faults_active) > 0", "fault: {{kind}}", "kind", "red"
        ),
        prometheus(
            "Restarts",
            f"sum by (service) (changes(lab_service_restarts_total[{_RATE}])) > 0",
            "restart: {{service}}",
            "service",
            "orange",
        ),
        # The counter has no series before the first action and is born at 1, which changes() cannot see:
        # a series that did not exist one window ago is an action too.
        prometheus(
            "Remediation actions",
            f"sum by (action, target, reason) (changes(lab_remediation_actions_total[{_RATE}]) > 0 "
            f"or (lab_remediation_actions_total unless lab_remediation_actions_total offset {_RATE}))",
            "remediation: {{action}} {{target}}",
            "action,target,reason",
            "purple",
        ),
    ]


def build_dashboard(slos: Sequence[SloDefinition] | None = None) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, for `slos` (default: the spec in stack/slo.yaml)."""
    if slos is None:
        slos = load_slo_spec()
    layout = _Layout()
    _overview(layout, slos)
    _traffic(layout, slos)
    _latency(layout, slos)
    _saturation(layout)
    _services(layout)
    _gpu(layout)
    _budget(layout, slos)
    _chaos(layout)
    return {
        "annotations": {"list": _annotations()},
        "description": (
            "labkit, the LLM Reliability Lab: what users of the generation endpoints feel (traffic, errors, "
            "latency, TTFT), the lab's services (restarts, CPU, memory, GPU), the SLOs' burn rates and error "
            "budget, and the chaos faults and remediation actions drawn as annotations. "
            "Generated by generators.dashboard"
        ),
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": layout.panels,
        "refresh": "5s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["labkit", "llm", "slo"],
        "templating": {
            "list": [
                {
                    "current": {"selected": False, "text": "Prometheus (labkit)", "value": DATASOURCE_UID},
                    "hide": 0,
                    "includeAll": False,
                    "label": "Prometheus",
                    "multi": False,
                    "name": DATASOURCE_VARIABLE,
                    "options": [],
                    "query": "prometheus",
                    "refresh": 1,
                    "regex": "",
                    "skipUrlSync": False,
                    "type": "datasource",
                }
            ]
        },
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m"]},
        "timezone": "browser",
        "title": "labkit: LLM Reliability Lab",
        "uid": DASHBOARD_UID,
        "version": 1,
        "weekStart": "",
    }


def dashboard_json(slos: Sequence[SloDefinition] | None = None) -> str:
    """The dashboard file's text: stable key order and indentation, so that regenerating is a no-op."""
    return json.dumps(build_dashboard(slos), indent=2, ensure_ascii=False) + "\n"


def dashboard_queries(dashboard: dict[str, Any]) -> list[DashboardQuery]:
    """Every PromQL expression of `dashboard`: each panel target's and each Prometheus annotation's."""
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append(DashboardQuery(f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            queries.append(DashboardQuery(f"annotation {annotation['name']!r}", annotation["expr"]))
    return queries


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def panel_table_markdown(dashboard: dict[str, Any]) -> str:
    """One Markdown table row per panel (row, panel, type and unit, description, PromQL), for docs/grafana.md;
    then one per annotation."""
    lines = ["| row | panel | type, unit | what it shows | PromQL |", "|---|---|---|---|---|"]
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"].split(":")[0].split(" (")[0]
            continue
        exprs = "<br>".join(f"`{_cell(t['expr'])}`" for t in panel["targets"])
        kind = f"{panel['type']}, `{panel['fieldConfig']['defaults']['unit']}`"
        lines.append(f"| {row} | **{panel['title']}** | {kind} | {_cell(panel['description'])} | {exprs} |")
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            lines.append(
                f"| annotations | **{annotation['name']}** | annotation, {annotation['iconColor']} | "
                f"a region while the expression is above 0, titled `{_cell(annotation['titleFormat'])}` | "
                f"`{_cell(annotation['expr'])}` |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m generators.dashboard",
        description="Print the lab's Grafana dashboard (JSON), or write it into stack/ with --write.",
    )
    parser.add_argument(
        "--write", action="store_true", help=f"write it to stack/{DASHBOARD_FILE} instead of printing it"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the table of panels and their PromQL (docs/grafana.md)"
    )
    parser.add_argument("--spec", type=Path, help="the SLO spec (default stack/slo.yaml)")
    args = parser.parse_args(argv)
    slos = load_slo_spec(args.spec)
    if args.markdown:
        sys.stdout.write(panel_table_markdown(build_dashboard(slos)))
        return 0
    text = dashboard_json(slos)
    if args.write:
        path = stack_dir() / DASHBOARD_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {path}\n")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
