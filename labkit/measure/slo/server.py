"""Server-side SLIs of a window `[start, end]` from Prometheus: exact event counts, not extrapolations.

Each SLI is good / total events in the window. Prometheus' `increase(x[N s])` extrapolates to the
window's edges, so a run of 60 requests may come out as 61.3; instead the counters' raw samples are read
and each series' growth between its last sample at or before `start` and its last sample at or before
`end` is summed, counting a drop as a restart from 0 (`labkit.measure.prom.window_increase`). The `promql`
column shows the equivalent `increase()` query, for dashboards and rules.

Counts are exact when the window starts before the run's first request and ends at least one scrape
interval after its last one finished (the scrape that saw it must fall inside); a request that finished
within one scrape interval before `start` may be counted in the window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from labkit.measure.histograms import BucketQuantile, bucket_quantile, le_label
from labkit.measure.prom import CounterIncrease, PrometheusClient, TimeLike, to_unix
from labkit.measure.promql import promql_duration
from labkit.measure.slo.rules import counter_selectors
from labkit.measure.slo.spec import Objective, SloDefinition, load_slo_spec

__all__ = ["SERVER_SLI_COLUMNS", "server_quantile", "server_slis", "slo_selectors"]

SERVER_SLI_COLUMNS = (
    "slo",
    "objective",
    "indicator",
    "target",
    "threshold_s",
    "good",
    "total",
    "sli",
    "counter_resets",
    "promql",
)


def slo_selectors(slo: SloDefinition, objective: Objective) -> tuple[str, str]:
    """The (good, total) counter selectors of one SLO objective.

    Ratio SLOs: the selectors inside the spec's `sum(<selector>)` queries (`labkit.measure.slo.rules` refuses
    any other shape: a window's increase is only defined per counter series). Threshold SLOs:
    `<metric>_bucket{le="<T>"}` (T spelled as the exposition does, `3.0`) and `<metric>_count`.
    """
    if slo.indicator == "ratio":
        return counter_selectors(slo)
    assert slo.metric is not None and objective.value is not None  # validated by SloDefinition
    return f'{slo.metric}_bucket{{le="{le_label(objective.value)}"}}', f"{slo.metric}_count"


def _ratio_promql(good: str, total: str, window_s: float) -> str:
    window = promql_duration(window_s)
    return f"sum(increase({good}[{window}])) / sum(increase({total}[{window}]))"


def _client(prometheus: str | PrometheusClient, timeout_s: float) -> tuple[PrometheusClient, bool]:
    if isinstance(prometheus, PrometheusClient):
        return prometheus, False
    return PrometheusClient(prometheus, timeout_s=timeout_s), True


def _window(start: TimeLike, end: TimeLike) -> tuple[float, float]:
    start_s, end_s = to_unix(start), to_unix(end)
    if end_s <= start_s:
        raise ValueError(f"the window must end after it starts (start {start_s}, end {end_s})")
    return start_s, end_s


def server_slis(
    prometheus: str | PrometheusClient,
    start: TimeLike,
    end: TimeLike,
    spec: Sequence[SloDefinition] | None = None,
    *,
    lookback_s: float = 300.0,
    timeout_s: float = 10.0,
) -> pd.DataFrame:
    """One row per SLO objective of `spec` (default: `stack/slo.yaml`) with exact counts in the window.

    Columns (`SERVER_SLI_COLUMNS`): slo, objective (display name), indicator, target, threshold_s (NaN
    for ratio SLOs), good, total, sli (good / total; NaN when total is 0), counter_resets (drops seen:
    a service restarted inside the window; what it counted after its last scrape is lost), promql.
    """
    start_s, end_s = _window(start, end)
    slos = list(spec) if spec is not None else load_slo_spec()
    client, owned = _client(prometheus, timeout_s)
    cache: dict[str, CounterIncrease] = {}

    def increase(selector: str) -> CounterIncrease:
        if selector not in cache:
            cache[selector] = client.counter_increase(selector, start_s, end_s, lookback_s=lookback_s)
        return cache[selector]

    rows: list[dict[str, object]] = []
    try:
        for slo in slos:
            for objective in slo.objectives:
                threshold = objective.value if slo.indicator == "threshold" else None
                good_selector, total_selector = slo_selectors(slo, objective)
                good, total = increase(good_selector), increase(total_selector)
                rows.append(
                    {
                        "slo": slo.name,
                        "objective": objective.display_name,
                        "indicator": slo.indicator,
                        "target": objective.target,
                        "threshold_s": math.nan if threshold is None else threshold,
                        "good": good.value,
                        "total": total.value,
                        "sli": good.value / total.value if total.value > 0 else math.nan,
                        "counter_resets": good.resets + total.resets,
                        "promql": _ratio_promql(good_selector, total_selector, end_s - start_s),
                    }
                )
    finally:
        if owned:
            client.close()
    return pd.DataFrame(rows, columns=list(SERVER_SLI_COLUMNS))


def server_quantile(
    prometheus: str | PrometheusClient,
    start: TimeLike,
    end: TimeLike,
    *,
    metric: str = "llm_request_duration_seconds",
    quantile: float = 0.95,
    matchers: str = "",
    lookback_s: float = 300.0,
    timeout_s: float = 10.0,
) -> BucketQuantile:
    """The server's quantile of `metric` over the window, for display, with its bucket bounds.

    Interpolated as Prometheus' `histogram_quantile` does, but on the buckets' exact increases in the
    window (`bucket_quantile`), so that it describes exactly the requests `server_slis` counted.
    """
    start_s, end_s = _window(start, end)
    client, owned = _client(prometheus, timeout_s)
    try:
        buckets, _ = client.bucket_increases(metric, start_s, end_s, matchers=matchers, lookback_s=lookback_s)
    finally:
        if owned:
            client.close()
    return bucket_quantile(quantile, buckets)
