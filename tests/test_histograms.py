from __future__ import annotations

import pytest

from labkit.histograms import (
    INTER_TOKEN_LATENCY_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    TIME_TO_FIRST_TOKEN_BUCKETS,
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
