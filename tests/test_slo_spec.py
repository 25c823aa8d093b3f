"""The SLO spec (stack/slo.yaml) and the histograms must agree: every latency threshold is a bucket
boundary exactly, so that `bucket{le="T"} / count` is the exact SLI and not an interpolation."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from labkit.config import stack_dir
from labkit.measure.histograms import (
    INTER_TOKEN_LATENCY_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    TIME_TO_FIRST_TOKEN_BUCKETS,
)

BUCKETS = {
    "llm_request_duration_seconds": REQUEST_DURATION_BUCKETS,
    "llm_time_to_first_token_seconds": TIME_TO_FIRST_TOKEN_BUCKETS,
    "llm_inter_token_latency_seconds": INTER_TOKEN_LATENCY_BUCKETS,
}


def _slos() -> list[dict]:
    return list(yaml.safe_load_all((stack_dir() / "slo.yaml").read_text()))


def test_every_latency_threshold_is_a_bucket_boundary() -> None:
    checked = 0
    for slo in _slos():
        threshold = slo["spec"]["indicator"]["spec"].get("thresholdMetric")
        if threshold is None:
            continue
        metric = threshold["metricSource"]["spec"]["query"]
        for objective in slo["spec"]["objectives"]:
            assert objective["value"] in BUCKETS[metric], (slo["metadata"]["name"], objective["value"])
            checked += 1
    assert checked >= 4


def test_objectives_are_ratios_and_the_budget_counts_occurrences() -> None:
    for slo in _slos():
        assert slo["apiVersion"] == "openslo/v1" and slo["kind"] == "SLO"
        assert slo["spec"]["budgetingMethod"] == "Occurrences"
        for objective in slo["spec"]["objectives"]:
            assert 0 < objective["target"] < 1


def test_slo_md_states_the_same_numbers() -> None:
    text = (Path(__file__).resolve().parents[1] / "SLO.md").read_text()
    for slo in _slos():
        assert f"`{slo['metadata']['name']}`" in text
        for objective in slo["spec"]["objectives"]:
            assert re.search(rf"\b{objective['target'] * 100:g} ?%", text), objective
