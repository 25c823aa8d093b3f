"""PromQL text helpers: the `sum(<selector>)` counter shape, metric names, durations, increase() rewrites."""

from __future__ import annotations

import pytest

from labkit.measure.promql import (
    counter_sum_selector,
    increase_query,
    metric_name,
    metric_names,
    promql_duration,
)


def test_counter_sum_selector_accepts_the_spec_shape_only() -> None:
    assert (
        counter_sum_selector(' sum( llm_requests_total {endpoint="/generate",status_code=~"2.."} ) ')
        == 'llm_requests_total{endpoint="/generate",status_code=~"2.."}'
    )
    assert counter_sum_selector("sum(up)") == "up"
    assert counter_sum_selector('sum(x{path="/a}b"})') == 'x{path="/a}b"}'  # a brace inside a string
    for bad in ("rate(x[5m])", "sum by (a) (x)", "sum(x) / sum(y)", "sum(rate(x[1m]))", "x"):
        with pytest.raises(ValueError, match=r"sum\(<counter>"):
            counter_sum_selector(bad)


def test_counter_sum_selector_keeps_quoted_label_values_as_written() -> None:
    # Only the space between the metric and its matchers goes; a label value is never rewritten.
    assert counter_sum_selector('sum(x {path="a {b"})') == 'x{path="a {b"}'
    assert counter_sum_selector('sum(x{path=\'}{\', code="2\\""})') == 'x{path=\'}{\', code="2\\""}'
    assert counter_sum_selector('sum(x { a = "b" })') == 'x{ a = "b" }'


def test_counter_sum_selector_refuses_unbalanced_or_empty_queries_with_an_example() -> None:
    for bad in ("", "sum()", 'sum(x{a="b"}', 'sum(x{a="b})', "sum(x{a={}})", "sum(x}"):
        with pytest.raises(ValueError, match=r"is not of the form sum\(<counter>.*write it as e\.g\. sum\("):
            counter_sum_selector(bad)


def test_metric_name_is_the_selector_up_to_its_matchers() -> None:
    assert metric_name('llm_requests_total{endpoint="/generate"}') == "llm_requests_total"
    assert metric_name("lab:slo_ratio") == "lab:slo_ratio"
    with pytest.raises(ValueError, match="not a selector"):
        metric_name('{__name__="x"}')


def test_increase_query_wraps_the_selector() -> None:
    assert increase_query('sum(a{b="c"})', 30) == 'sum(increase(a{b="c"}[30s]))'
    assert increase_query("sum(a)", 1.25) == "sum(increase(a[1250ms]))"
    with pytest.raises(ValueError, match=r"sum\(<counter>"):
        increase_query("rate(a[1m])", 30)


def test_promql_duration_is_whole_seconds_or_milliseconds() -> None:
    assert promql_duration(4.0) == "4s" and promql_duration(0.5) == "500ms"
    assert promql_duration(1.0004) == "1001ms"  # rounded up, never down to a shorter window
    assert promql_duration(0) == "1ms"  # PromQL has no empty duration


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.95, sum by (le) (rate(llm_request_seconds_bucket{endpoint="/g"}[5m])))',
            {"llm_request_seconds_bucket"},
        ),
        (
            "sum(rate(a_total[1m])) / on(slo, objective) group_left(extra) b:ratio offset 5m",
            {"a_total", "b:ratio"},
        ),
        ("count without (service) (up) > bool 0 and ALERTS", {"up", "ALERTS"}),
        ("1e-3 * foo + 0x1F - .5e2 / inf", {"foo"}),  # the e of 1e-3 is no name
        ('label_replace(x, "dst", "$1", "src", "(.*)") unless y @ start()', {"x", "y"}),
        ('{__name__="by_name", a="}"}', {"by_name"}),
        ("max_over_time(x[5m:1m]) or z offset $__rate_interval", {"x", "z"}),  # Grafana variables
        ("rate(y[${window}]) * $scale", {"y"}),
        ("sum by (kind) (llm_faults_active) > 0", {"llm_faults_active"}),
        ("vector(0) + time()", set()),
    ],
)
def test_metric_names_are_the_series_an_expression_reads(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
