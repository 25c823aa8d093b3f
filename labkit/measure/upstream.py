"""An upstream's own metrics: the key series of the serving stacks the lab can front (vLLM, SGLang, TGI,
llama.cpp's server), each as PromQL over the lab's Prometheus job `upstream` that picks whichever of their
metric names exists (`or`).

Prometheus keeps these names as exported, colons included (`vllm:num_requests_waiting`: the colon is legal in
a metric name, and a selector takes it as is). But the exporter may not send the colon: Prometheus asks for
OpenMetrics first, and prometheus_client (vLLM's and SGLang's exporter) then writes the samples of
`vllm:num_requests_waiting` as `vllm_num_requests_waiting` (prometheus/client_python#1177, open), so each
colon name is also tried with underscores. A stack without a series (TGI has no KV-cache gauge; neither TGI
nor llama.cpp's server has a time-to-first-token histogram) leaves that series empty: nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from labkit.lab.prometheus_config import UPSTREAM_JOB

__all__ = [
    "UPSTREAM_SERIES",
    "UPSTREAM_SERVERS",
    "UpstreamSeries",
    "upstream_metric_names",
    "upstream_names_query",
    "upstream_queries",
]

UPSTREAM_SERVERS = ("vLLM", "SGLang", "TGI", "llama.cpp server")
_SELECTOR = f'{{job="{UPSTREAM_JOB}"}}'


@dataclass(frozen=True)
class UpstreamSeries:
    """One key series of an upstream: what it measures, in which unit, and each stack's metric names in the
    order they are preferred (the newer name first)."""

    name: str  # the run's series (prometheus/<name>.csv)
    what: str
    unit: str
    kind: Literal["count", "ratio", "histogram_p95"]
    metrics: dict[str, tuple[str, ...]]  # server -> metric names; a histogram's base name

    @property
    def names(self) -> tuple[str, ...]:
        """Every metric name in the order the query tries them, each colon name followed by its underscore
        twin (what prometheus_client sends over OpenMetrics)."""
        return tuple(
            alias
            for names in self.metrics.values()
            for name in names
            for alias in dict.fromkeys((name, name.replace(":", "_")))
        )


UPSTREAM_SERIES: tuple[UpstreamSeries, ...] = (
    UpstreamSeries(
        "upstream_queue",
        "requests waiting in the upstream's queue",
        "requests",
        "count",
        {
            "vLLM": ("vllm:num_requests_waiting",),
            "SGLang": ("sglang:num_queue_reqs",),
            "TGI": ("tgi_queue_size",),
            "llama.cpp server": ("llamacpp:requests_deferred",),
        },
    ),
    UpstreamSeries(
        "upstream_running",
        "requests the upstream is generating for",
        "requests",
        "count",
        {
            "vLLM": ("vllm:num_requests_running",),
            "SGLang": ("sglang:num_running_reqs",),
            "TGI": ("tgi_batch_current_size",),
            "llama.cpp server": ("llamacpp:requests_processing",),
        },
    ),
    UpstreamSeries(
        "upstream_kv_cache",
        "KV-cache in use",
        "ratio 0-1",
        "ratio",
        {
            # vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc (V1 engine); 0-1 despite "perc".
            "vLLM": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
            "SGLang": ("sglang:token_usage",),
            "llama.cpp server": ("llamacpp:kv_cache_usage_ratio",),
        },
    ),
    UpstreamSeries(
        "upstream_ttft_p95",
        "the upstream's own p95 time to first token",
        "seconds",
        "histogram_p95",
        {
            "vLLM": ("vllm:time_to_first_token_seconds",),
            "SGLang": ("sglang:time_to_first_token_seconds",),
        },
    ),
)


def _query(series: UpstreamSeries, rate_window: str) -> str:
    """`first or second or ...`: after the aggregation every alternative has no labels, so `or` keeps the
    first name that has data and adds the others only where it has none."""
    if series.kind == "histogram_p95":
        parts = [
            f"histogram_quantile(0.95, sum by (le) (rate({name}_bucket{_SELECTOR}[{rate_window}])))"
            for name in series.names
        ]
    else:
        # Requests add up over an upstream's ranks and replicas; a cache in use is as full as the fullest.
        aggregate = "sum" if series.kind == "count" else "max"
        parts = [f"{aggregate}({name}{_SELECTOR})" for name in series.names]
    return " or ".join(parts)


def upstream_queries(rate_window: str) -> dict[str, str]:
    """The PromQL of every key series by its name; `rate_window` (a PromQL duration) for the TTFT rate."""
    return {series.name: _query(series, rate_window) for series in UPSTREAM_SERIES}


def upstream_metric_names() -> tuple[str, ...]:
    """Every metric name the key series read (a histogram's as its `_bucket` series)."""
    return tuple(
        f"{name}_bucket" if series.kind == "histogram_p95" else name
        for series in UPSTREAM_SERIES
        for name in series.names
    )


def upstream_names_query() -> str:
    """PromQL naming which of the key metrics the upstream exports: one series per `__name__` found."""
    alternatives = "|".join(upstream_metric_names())  # names hold only [a-zA-Z0-9_:]: nothing to escape
    return f'count by (__name__) ({{__name__=~"{alternatives}",job="{UPSTREAM_JOB}"}})'
