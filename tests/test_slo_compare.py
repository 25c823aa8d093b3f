"""labkit.measure.slo.compare on hand-made client samples and server SLIs: each difference gets its reason."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from labkit.measure.histograms import REQUEST_DURATION_BUCKETS, BucketQuantile, bucket_quantile
from labkit.measure.slo.compare import COMPARISON_COLUMNS, exact_quantile, explain_client_server
from labkit.measure.slo.server import SERVER_SLI_COLUMNS
from labkit.measure.slo.spec import SloDefinition, load_slo_spec

START, END = 1_000.0, 1_100.0


@pytest.fixture(scope="module")
def spec() -> list[SloDefinition]:
    return load_slo_spec()


def _sample(i: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_id": i,
        "intended_send": START + 1 + i,
        "actual_send": START + 1 + i,
        "queue_delay_s": 0.0,
        "ttft_s": 0.1,
        "itl_s": [0.01, 0.01],
        "e2e_s": 0.2,
        "output_tokens": 3,
        "status": 200,
        "ok": True,
        "error_kind": None,
    }
    row.update(fields)
    return row


def _server(
    spec: list[SloDefinition], counts: Mapping[str, tuple[float, float]], resets: int = 0
) -> pd.DataFrame:
    rows = []
    for slo in spec:
        for objective in slo.objectives:
            good, total = counts[slo.name]
            rows.append(
                {
                    "slo": slo.name,
                    "objective": objective.display_name,
                    "indicator": slo.indicator,
                    "target": objective.target,
                    "threshold_s": objective.value if slo.indicator == "threshold" else math.nan,
                    "good": good,
                    "total": total,
                    "sli": good / total if total else math.nan,
                    "counter_resets": resets,
                    "promql": "",
                }
            )
    return pd.DataFrame(rows, columns=list(SERVER_SLI_COLUMNS))


def _quantile(value: float, lower: float, upper: float, n: float = 10) -> BucketQuantile:
    return BucketQuantile(0.95, value, lower, upper, math.isinf(upper), n)


def _quantiles(**overrides: BucketQuantile) -> dict[str, BucketQuantile]:
    quantiles = {
        "llm_request_duration_seconds": _quantile(0.24, 0.1, 0.25),
        "llm_time_to_first_token_seconds": _quantile(0.1, 0.08, 0.1),
        "llm_inter_token_latency_seconds": _quantile(0.01, 0.005, 0.01, 20),
    }
    quantiles.update(overrides)
    return quantiles


AGREEING = {
    "availability": (10, 10),
    "time-to-first-token": (10, 10),
    "latency": (10, 10),
    "inter-token-latency": (20, 20),
}


def _compare(spec: list[SloDefinition], samples: list[dict[str, Any]], **kwargs: Any) -> pd.DataFrame:
    server = kwargs.pop("server", _server(spec, AGREEING))
    quantiles = kwargs.pop("quantiles", _quantiles())
    frame = explain_client_server(pd.DataFrame(samples), server, quantiles, START, END, spec, **kwargs)
    return frame.set_index("objective")


def test_agreement_is_said_and_every_objective_has_a_row(spec: list[SloDefinition]) -> None:
    plain = explain_client_server(
        pd.DataFrame([_sample(i) for i in range(10)]), _server(spec, AGREEING), _quantiles(), START, END, spec
    )
    assert list(plain.columns) == list(COMPARISON_COLUMNS)
    result = plain.set_index("objective")
    assert len(result) == sum(len(slo.objectives) for slo in spec)
    availability = result.loc["99% of valid requests succeed"]
    assert availability["difference"] == 0
    assert availability["explanation"] == "Client and server agree: 10 of 10 valid requests succeeded."
    assert pd.isna(availability["client_quantile_in_server_bucket"]) and math.isnan(availability["quantile"])
    latency = result.loc["95% of requests within 3 s"]
    assert latency["explanation"].startswith(
        "Client and server agree: 10 of 10 successful requests within 3 s."
    )
    assert "interpolated inside the bucket (0.1, 0.25] s" in latency["explanation"]
    assert "exact p95 (0.2 s) lies inside it" in latency["explanation"]
    assert latency["client_quantile_in_server_bucket"]
    assert (latency["client_quantile_s"], latency["server_bucket_upper_s"]) == (0.2, 0.25)


def test_requests_that_never_reached_the_server_explain_a_lower_client_availability(
    spec: list[SloDefinition],
) -> None:
    refused = {"status": 0, "ok": False, "error_kind": "connect", "ttft_s": None, "itl_s": [], "e2e_s": 0.001}
    samples = [_sample(i) for i in range(8)] + [_sample(8 + i, **refused) for i in range(2)]
    server = _server(spec, {**AGREEING, "availability": (8, 8), "latency": (8, 8)})
    row = _compare(spec, samples, server=server).loc["99% of valid requests succeed"]
    assert (row["client_good"], row["client_total"], row["server_good"], row["server_total"]) == (8, 10, 8, 8)
    assert row["difference"] == pytest.approx(0.8 - 1.0)
    text = str(row["explanation"])
    assert "The client counted 8 good of 10 valid requests, the server 8 of 8." in text
    assert "2 requests got no HTTP response (status 0 (2 connect))" in text
    assert "lower only the client's SLI" in text
    assert "not explained" not in text


def test_client_errors_are_not_valid_on_either_side(spec: list[SloDefinition]) -> None:
    bad_request = {"status": 422, "ok": False, "error_kind": "http_4xx", "ttft_s": None, "itl_s": []}
    samples = [_sample(i) for i in range(10)] + [_sample(10, **bad_request)]
    row = _compare(spec, samples).loc["99% of valid requests succeed"]
    assert (row["client_total"], row["difference"]) == (10, 0)


def test_requests_in_flight_at_the_window_end_are_named(spec: list[SloDefinition]) -> None:
    late = _sample(9, intended_send=END - 0.1, e2e_s=0.5)  # finishes 0.4 s after the end
    samples = [_sample(i) for i in range(9)] + [late]
    server = _server(spec, {**AGREEING, "availability": (9, 9)})
    text = str(_compare(spec, samples, server=server).loc["99% of valid requests succeed", "explanation"])
    assert "1 request of the client's fell outside the window: 1 finished after its end" in text
    assert "not explained" not in text


def test_a_difference_nothing_in_the_samples_explains_says_where_to_look(spec: list[SloDefinition]) -> None:
    server = _server(spec, {**AGREEING, "availability": (12, 12)})
    text = str(
        _compare(spec, [_sample(i) for i in range(10)], server=server).loc[
            "99% of valid requests succeed", "explanation"
        ]
    )
    assert "2 more requests on the server's side are not explained by the samples" in text
    assert "another client" in text


def test_the_same_requests_judged_differently_are_called_out(spec: list[SloDefinition]) -> None:
    samples = [_sample(i) for i in range(9)] + [_sample(9, ok=False, error_kind="stream_cut")]
    server = _server(spec, {**AGREEING, "latency": (9, 9)})
    text = str(_compare(spec, samples, server=server).loc["99% of valid requests succeed", "explanation"])
    assert "Both sides saw 10 requests but judged 1 of them differently" in text


def test_a_restart_in_the_window_is_named(spec: list[SloDefinition]) -> None:
    server = _server(spec, {**AGREEING, "availability": (9, 9)}, resets=2)
    text = str(
        _compare(spec, [_sample(i) for i in range(10)], server=server).loc[
            "99% of valid requests succeed", "explanation"
        ]
    )
    assert "A service restarted in the window (2 counter resets)" in text


def test_client_time_includes_send_lag_and_network(spec: list[SloDefinition]) -> None:
    # The server saw all 10 within 3 s; the client, timing from the intended send, saw 2 take longer.
    samples = [_sample(i, queue_delay_s=0.002) for i in range(8)]
    samples += [_sample(8 + i, e2e_s=3.2, queue_delay_s=0.3) for i in range(2)]
    quantiles = _quantiles(llm_request_duration_seconds=_quantile(2.9, 2.5, 3.0))
    row = _compare(spec, samples, quantiles=quantiles).loc["95% of requests within 3 s"]
    assert (row["client_good"], row["server_good"]) == (8, 10) and row["difference"] == pytest.approx(-0.2)
    text = str(row["explanation"])
    assert "The client counted 8 of 10 successful requests within 3 s, the server 10 of 10." in text
    assert "queue_delay_s: mean 61.6 ms, max 300.0 ms" in text
    assert "the server times from the request's arrival" in text
    # The client's p95 (3.2 s) is above the server's bucket (2.5, 3.0]: by 200 ms, the send lag and network.
    assert not row["client_quantile_in_server_bucket"]
    assert "lies above it by 200.0 ms" in text and "send lag up to 300.0 ms" in text


def test_a_quantile_in_the_inf_bucket_is_only_a_lower_bound(spec: list[SloDefinition]) -> None:
    samples = [_sample(i, e2e_s=400.0) for i in range(10)]
    quantiles = _quantiles(llm_request_duration_seconds=bucket_quantile(0.95, {300.0: 0, math.inf: 10}))
    row = _compare(spec, samples, quantiles=quantiles).loc["95% of requests within 3 s"]
    assert row["server_bucket_upper_s"] == math.inf and row["client_quantile_in_server_bucket"]
    assert "lies above its highest bucket bound (300 s)" in str(row["explanation"])
    assert "only a lower bound" in str(row["explanation"]) and "400 s" in str(row["explanation"])


def test_first_tokens_of_failed_requests_are_counted_by_the_server_only(spec: list[SloDefinition]) -> None:
    samples = [_sample(i) for i in range(9)] + [_sample(9, ok=False, error_kind="stream_error")]
    server = _server(spec, {**AGREEING, "availability": (9, 10), "latency": (9, 9)})
    row = _compare(spec, samples, server=server).loc["95% of first tokens within 1.5 s"]
    assert (row["client_total"], row["server_total"]) == (9, 10)
    assert "also the 1 request that failed later" in str(row["explanation"])


def test_inter_token_gaps_are_timed_in_different_places(spec: list[SloDefinition]) -> None:
    server = _server(spec, {**AGREEING, "inter-token-latency": (19, 22)})
    text = str(
        _compare(spec, [_sample(i) for i in range(10)], server=server).loc[
            "95% of token gaps within 50 ms", "explanation"
        ]
    )
    assert "between the backend's chunks" in text and "Network buffering can merge lines" in text


def test_a_server_without_observations_says_so(spec: list[SloDefinition]) -> None:
    quantiles = _quantiles(llm_request_duration_seconds=bucket_quantile(0.95, {0.1: 0, math.inf: 0}))
    server = _server(spec, {**AGREEING, "latency": (0, 0)})
    row = _compare(spec, [_sample(i) for i in range(3)], server=server, quantiles=quantiles).loc[
        "95% of requests within 3 s"
    ]
    assert pd.isna(row["server_sli"]) and pd.isna(row["difference"])
    assert "no observations to interpolate a p95 from" in str(row["explanation"])


def test_missing_server_data_is_an_error(spec: list[SloDefinition]) -> None:
    with pytest.raises(ValueError, match="no row for SLO"):
        _compare(spec, [_sample(0)], server=_server(spec, AGREEING).iloc[1:])
    quantiles = _quantiles()
    del quantiles["llm_time_to_first_token_seconds"]
    with pytest.raises(ValueError, match="no server quantile"):
        _compare(spec, [_sample(0)], quantiles=quantiles)


def test_exact_quantile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(20, 0, -1)]  # 1..20, unsorted
    assert exact_quantile(values, 0.95) == 19.0  # rank ceil(0.95 * 20) = 19
    assert exact_quantile(values, 0.5) == 10.0
    assert exact_quantile(values, 1.0) == 20.0 and exact_quantile(values, 0.0) == 1.0
    assert exact_quantile([1.0, math.nan, 2.0], 0.5) == 1.0
    assert math.isnan(exact_quantile([], 0.95))
    with pytest.raises(ValueError):
        exact_quantile(values, 95)


def test_the_exact_quantile_lies_in_the_bucket_prometheus_interpolates_in() -> None:
    # The property the client-vs-server comparison relies on, over many seeded random runs.
    rng = np.random.default_rng(7)
    bounds = [*REQUEST_DURATION_BUCKETS, math.inf]
    for _ in range(300):
        values = rng.lognormal(
            mean=rng.uniform(-4, 1), sigma=rng.uniform(0.05, 1.5), size=rng.integers(1, 200)
        )
        counts = [0] * len(bounds)
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
        cumulative = np.cumsum(counts)
        for q in (0.5, 0.9, 0.95, 0.99):
            server = bucket_quantile(q, list(zip(bounds, cumulative, strict=True)))
            exact = exact_quantile(values, q)
            assert server.lower < exact <= server.upper, (q, exact, server)
