"""PromQL as text: the `sum(<selector>)` shape of counter queries, durations, and `increase()` rewrites.
Pure string work, no client: labkit.prom and labkit.slo both build their queries with it.
"""

from __future__ import annotations

import math
import re

__all__ = ["counter_sum_selector", "increase_query", "metric_name", "promql_duration"]

_METRIC_NAME_PATTERN = r"[a-zA-Z_:][a-zA-Z0-9_:]*"

# `sum(<metric>{<matchers>})`: a metric name, optional matchers (quoted strings may hold braces).
_COUNTER_SUM = re.compile(
    rf"""^\s*sum\s*\(\s*
    (?P<metric>{_METRIC_NAME_PATTERN})\s*
    (?P<matchers>\{{(?:[^{{}}"']|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')*\}})?
    \s*\)\s*$""",
    re.VERBOSE,
)

_METRIC_NAME = re.compile(_METRIC_NAME_PATTERN)


def promql_duration(seconds: float) -> str:
    """A PromQL duration: `4s`, or milliseconds (`1500ms`) where seconds would round."""
    millis = max(1, math.ceil(seconds * 1000 - 1e-6))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def counter_sum_selector(query: str) -> str:
    """The selector inside `sum(<selector>)`, the only shape of counter query labkit rewrites.

    The SLO spec's ratio queries are sums of counters over all time; a window needs the counter's
    *increase*, which is only well defined per series, so the sum must be the outermost and only
    operation: `sum(metric{matchers})`. Anything else (a `by` clause, a rate, arithmetic) is refused.
    Space between the metric and its matchers is dropped; the matchers are kept as written.
    """
    match = _COUNTER_SUM.match(query)
    if match is None:
        raise ValueError(
            f"query {query!r} is not of the form sum(<counter>{{<matchers>}}); "
            'write it as e.g. sum(llm_requests_total{endpoint="/generate"})'
        )
    return match.group("metric") + (match.group("matchers") or "")


def metric_name(selector: str) -> str:
    """`llm_requests_total{...}` -> `llm_requests_total`."""
    match = _METRIC_NAME.match(selector)
    if match is None:
        raise ValueError(f"not a selector: {selector!r}")
    return match.group(0)


def increase_query(query: str, window_s: float) -> str:
    """`sum(<selector>)` -> `sum(increase(<selector>[<window>]))` (the form the alert rules use)."""
    return f"sum(increase({counter_sum_selector(query)}[{promql_duration(window_s)}]))"
