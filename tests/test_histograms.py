"""The lab's bucket sets, and quantiles read back from cumulative buckets as Prometheus interpolates them."""

from __future__ import annotations

import math

import pytest

from labkit.measure.histograms import (
    INTER_TOKEN_LATENCY_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    TIME_TO_FIRST_TOKEN_BUCKETS,
    bucket_quantile,
    cumulative_buckets,
    le_label,
)


@pytest.mark.parametrize(
    "buckets", [REQUEST_DURATION_BUCKETS, TIME_TO_FIRST_TOKEN_BUCKETS, INTER_TOKEN_LATENCY_BUCKETS]
)
def test_buckets_are_strictly_increasing_and_reach_llm_scale(buckets: tuple[float, ...]) -> None:
    assert list(buckets) == sorted(set(buckets))
    assert buckets[-1] >= 10.0  # prometheus_client's default stops at 10 s


def test_le_label_matches_the_exposition_format() -> None:
    assert le_label(1.0) == "1.0"
    assert le_label(0.5) == "0.5"
    assert le_label(2.5) == "2.5"


# ---------------------------------------------------------------------------------------------------
# bucket_quantile: Prometheus' histogram_quantile, with the bucket it interpolated in

INF = math.inf

# Cumulative counts: 2 observations <= 0.1, 6 <= 0.5, 9 <= 1.0, 10 in all.
BUCKETS = [(0.1, 2), (0.5, 6), (1.0, 9), (INF, 10)]


def test_bucket_quantile_interpolates_inside_the_bucket_that_holds_the_rank() -> None:
    # p50: rank 0.5 * 10 = 5, in (0.1, 0.5] which holds 6 - 2 = 4; 5 - 2 = 3 of them -> 0.1 + 0.4 * 3/4 = 0.4
    p50 = bucket_quantile(0.5, BUCKETS)
    assert p50.value == pytest.approx(0.4)
    assert (p50.lower, p50.upper, p50.in_inf_bucket, p50.observations) == (0.1, 0.5, False, 10)
    assert str(p50) == "p50 ~ 0.4 s (interpolated in (0.1, 0.5] s)"


def test_bucket_quantile_interpolates_inside_the_bucket_that_reaches_the_rank() -> None:
    # 10 x 0.2 s, 8 x 0.6 s, 1 x 2.2 s, 1 x 500 s as cumulative buckets (20 observations).
    buckets = {0.1: 0, 0.25: 10, 0.5: 10, 0.75: 18, 2.0: 18, 2.5: 19, 300.0: 19, INF: 20}
    p50 = bucket_quantile(0.5, buckets)  # rank 10: the (0.1, 0.25] bucket is full at 10
    assert (p50.value, p50.lower, p50.upper, p50.in_inf_bucket) == (0.25, 0.1, 0.25, False)
    p80 = bucket_quantile(0.8, buckets)  # rank 16: 6 of the 8 in (0.5, 0.75]
    assert p80.value == pytest.approx(0.5 + 0.25 * 6 / 8) and (p80.lower, p80.upper) == (0.5, 0.75)
    p95 = bucket_quantile(0.95, buckets)  # rank 19: the one observation in (2.0, 2.5]
    assert (p95.value, p95.lower, p95.upper, p95.observations) == (2.5, 2.0, 2.5, 20)


def test_bucket_quantile_starts_the_first_bucket_at_zero() -> None:
    # p10: rank 1, in (0, 0.1] which holds 2 -> 0 + 0.1 * 1/2 = 0.05
    p10 = bucket_quantile(0.1, BUCKETS)
    assert (p10.value, p10.lower, p10.upper) == (pytest.approx(0.05), 0.0, 0.1)
    first = bucket_quantile(0.5, {0.1: 4, 0.25: 4, INF: 4})
    assert (first.value, first.lower, first.upper) == (pytest.approx(0.05), 0.0, 0.1)
    assert str(first) == "p50 ~ 0.05 s (interpolated in (0, 0.1] s)"


def test_a_rank_on_a_bucket_boundary_gives_the_bound() -> None:
    # p90: rank 9 = the cumulative count at 1.0 -> 0.5 + 0.5 * 3/3 = 1.0
    p90 = bucket_quantile(0.9, BUCKETS)
    assert p90.value == pytest.approx(1.0) and (p90.lower, p90.upper, p90.in_inf_bucket) == (0.5, 1.0, False)


def test_the_inf_bucket_gives_the_highest_finite_bound_flagged_and_says_so() -> None:
    # p95: rank 9.5 > 9, so it lies in (1.0, +Inf]; Prometheus prints 1.0, a value never measured:
    # the flag and the bounds say it is only a lower bound, and so does str().
    p95 = bucket_quantile(0.95, BUCKETS)
    assert p95.in_inf_bucket
    assert p95.value == 1.0 and p95.lower == 1.0 and math.isinf(p95.upper)
    assert p95.observations == 10
    assert str(p95) == "p95 > 1 s (above the highest bucket bound)"
    p99 = bucket_quantile(0.99, [(0.1, 0), (0.25, 10), (300.0, 19), (INF, 20)])
    assert p99.in_inf_bucket and p99.value == 300.0 and p99.lower == 300.0 and p99.upper == INF


def test_bucket_quantile_without_observations_or_inf_bucket_is_nan() -> None:
    empty = bucket_quantile(0.5, [(0.1, 0), (INF, 0)])
    assert math.isnan(empty.value) and math.isnan(empty.lower) and math.isnan(empty.upper)
    assert empty.observations == 0 and not empty.in_inf_bucket
    assert str(empty) == "p50 unknown (no observations)"
    assert math.isnan(bucket_quantile(0.95, {0.1: 0, INF: 0}).value)
    no_inf = bucket_quantile(0.95, {0.1: 1, 0.25: 2})
    assert math.isnan(no_inf.value) and math.isnan(no_inf.observations)
    assert str(no_inf) == "p95 unknown (no +Inf bucket, so no total count)"
    assert math.isnan(bucket_quantile(0.95, []).lower)


def test_a_quantile_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"quantile must be within \[0, 1\]"):
        bucket_quantile(1.5, BUCKETS)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bucket_quantile(-0.1, {INF: 1})


def test_bucket_quantile_merges_equal_bounds_and_forces_monotonic_counts() -> None:
    # "1" and "1.0" are the same bound spelled twice (pyrra#1502): their counts add up, as in Prometheus.
    merged = bucket_quantile(0.5, [(float("1"), 1), (float("1.0"), 1), (INF, 4)])
    assert (merged.lower, merged.upper) == (0.0, 1.0)
    # rate() jitter can make a higher bucket smaller; the envelope keeps the search meaningful.
    jitter = bucket_quantile(0.5, {0.1: 2.0, 0.25: 1.9, 0.5: 4.0, INF: 4.0})
    assert (jitter.lower, jitter.upper) == (0.0, 0.1)


def test_q_zero_is_the_lower_bound_of_the_first_non_empty_bucket() -> None:
    p0 = bucket_quantile(0.0, [(0.1, 0), (0.5, 3), (INF, 3)])
    assert p0.value == pytest.approx(0.1) and (p0.lower, p0.upper, p0.in_inf_bucket) == (0.1, 0.5, False)
    only_inf = bucket_quantile(0.0, [(0.1, 0), (INF, 3)])
    assert only_inf.in_inf_bucket and only_inf.value == 0.1


def test_a_bucket_at_or_below_zero_has_no_lower_bound() -> None:
    low = bucket_quantile(0.1, [(-1.0, 5), (1.0, 10), (INF, 10)])
    assert (low.value, low.lower, low.upper) == (-1.0, -INF, -1.0)
    assert str(low) == "p10 <= -1 s (in the lowest bucket, which has no lower bound)"


def test_cumulative_buckets_count_like_prometheus() -> None:
    # 0.1 == bound 0.1 counts in le="0.1"; 2.0 only in +Inf; NaN is skipped.
    assert cumulative_buckets([0.1, 0.05, 0.3, 2.0, math.nan], [0.1, 0.5, 1.0]) == [
        (0.1, 2),
        (0.5, 3),
        (1.0, 3),
        (INF, 4),
    ]


def test_a_quantile_of_counted_samples_lies_in_their_bucket() -> None:
    values = [0.01 * i for i in range(1, 101)]  # 0.01 .. 1.00; the exact p95 is 0.95
    estimate = bucket_quantile(0.95, cumulative_buckets(values, [0.25, 0.5, 0.75, 1.0]))
    assert not estimate.in_inf_bucket
    assert estimate.lower < 0.95 <= estimate.upper == 1.0
    # rank 95; 75 values <= 0.75, 25 in (0.75, 1.0]: 0.75 + 0.25 * 20/25 = 0.95
    assert estimate.value == pytest.approx(0.95)
