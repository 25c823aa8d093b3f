"""PromQL as text: the `sum(<selector>)` shape of counter queries, durations, `increase()` rewrites and
the metric names an expression reads. Pure string work, no client: labkit.measure.prom, labkit.measure.slo and
generators.dashboard build or check their queries with it.
"""

from __future__ import annotations

import math
import re

__all__ = ["counter_sum_selector", "increase_query", "metric_name", "metric_names", "promql_duration"]

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


# Tokens of PromQL that matter for finding metric names. Strings go first (they may hold anything),
# label matchers `{...}` and ranges/subqueries `[...]` are skipped whole, numbers are consumed before
# identifiers so that the `e` of `1e-3` or the `m` of a duration is never read as a name, and a dashboard's
# template variables (`$__rate_interval`, `${lab}`) are skipped too.
_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<matchers>\{(?:[^{}"'`]|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)*\})
    |(?P<range>\[[^\]]*\])
    |(?P<variable>\$\{[^}]*\}|\$\w+)
    |(?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:[a-zA-Z]+\d*)*)
    |(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
    |(?P<other>\S)""",
    re.VERBOSE,
)
# Words that are never metric names where they stand: binary operators and modifiers.
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "atan2", "offset", "inf", "nan"})
# Modifiers followed by a parenthesised list of label names.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
# Aggregation operators may be followed by `by (...)`/`without (...)` before their parenthesis.
_AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: `rate(a_total[5m]) / on(x) b` -> {a_total, b}.

    A small lexer, not a parser (promtool checks syntax): names of functions and aggregations, label
    names in `by`/`without`/`on`/`ignoring`/`group_*` lists, keywords, strings, label matchers, ranges,
    numbers, durations and Grafana variables (`offset $__range`) are not metric names. A selector
    without a name (`{__name__="x"}`) names `x`.
    """
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr)]
    names: set[str] = set()
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if kind == "matchers":
            names.update(re.findall(r"""__name__\s*=\s*["'`]([a-zA-Z_:][a-zA-Z0-9_:]*)["'`]""", text))
        elif kind == "name":
            lowered = text.lower()
            if lowered in _LABEL_LIST_KEYWORDS:
                if following == "(":
                    index = _after_closing_parenthesis(tokens, index + 1)
                    continue
            elif following != "(" and lowered not in _KEYWORDS and lowered not in _AGGREGATIONS:
                names.add(text)
        index += 1
    return names


def _after_closing_parenthesis(tokens: list[tuple[str | None, str]], opening: int) -> int:
    depth = 0
    for index in range(opening, len(tokens)):
        if tokens[index][1] == "(":
            depth += 1
        elif tokens[index][1] == ")":
            depth -= 1
            if depth == 0:
                return index + 1
    return len(tokens)
