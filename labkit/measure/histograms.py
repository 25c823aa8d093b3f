"""The lab's latency histograms: the bucket sets every service uses, and quantiles read back from buckets.

prometheus_client's defaults stop at 10 s and have no boundary at typical SLO thresholds; these sets
(modelled on vLLM's) contain every threshold of the SLO spec exactly, which a test checks. `bucket_quantile`
is Prometheus' `histogram_quantile` with the bucket it interpolated in, shared by `prom` and `slo`.
Also here: the wrapper's generation endpoints (the `endpoint` label every SLI selects) and the bucket sets
the OpenTelemetry GenAI semantic conventions prescribe for their `gen_ai.*` metrics.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.utils import floatToGoString

__all__ = [
    "GENERATION_ENDPOINTS",
    "GENERATION_ENDPOINT_MATCHER",
    "GEN_AI_REQUEST_DURATION_BUCKETS",
    "GEN_AI_TIME_PER_OUTPUT_TOKEN_BUCKETS",
    "GEN_AI_TIME_TO_FIRST_TOKEN_BUCKETS",
    "GEN_AI_TOKEN_USAGE_BUCKETS",
    "INTER_TOKEN_LATENCY_BUCKETS",
    "REQUEST_DURATION_BUCKETS",
    "TIME_TO_FIRST_TOKEN_BUCKETS",
    "BucketQuantile",
    "bucket_quantile",
    "cumulative_buckets",
    "le_label",
]

# End-to-end request duration, seconds. Fine steps below 0.1 s for the sim engine and the
# wrapper's own overhead; LLM-scale steps up to 5 min for long generations under load.
REQUEST_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0,
    7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

# Time to first token, seconds.
TIME_TO_FIRST_TOKEN_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5,
    2.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip

# Gap between consecutive streamed chunks after the first, seconds.
INTER_TOKEN_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


# The wrapper's endpoints that generate text, as its metrics' `endpoint` label spells them: its own API and
# the OpenAI-compatible one. Every SLI selector (SLO spec, rules, dashboards, smoke, prom) matches them all.
GENERATION_ENDPOINTS: tuple[str, ...] = ("/generate", "/v1/chat/completions", "/v1/completions")
GENERATION_ENDPOINT_MATCHER = 'endpoint=~"' + "|".join(GENERATION_ENDPOINTS) + '"'

# OpenTelemetry semantic conventions for GenAI metrics (docs/gen-ai/gen-ai-metrics.md, semconv 1.37 to 1.41:
# the same boundaries since 1.27), each metric's ExplicitBucketBoundaries advice, copied exactly so that
# dashboards built on the convention read the same buckets. They hold no SLO threshold: SLOs read llm_*.
GEN_AI_REQUEST_DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
GEN_AI_TIME_TO_FIRST_TOKEN_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
GEN_AI_TIME_PER_OUTPUT_TOKEN_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
GEN_AI_TOKEN_USAGE_BUCKETS: tuple[float, ...] = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip


def le_label(bound: float) -> str:
    """The `le` label value exactly as the exposition writes it (`1.0`, not `1`).

    Queries and rules must use this spelling or they silently match nothing (pyrra#1502).
    """
    return floatToGoString(bound)


@dataclass(frozen=True)
class BucketQuantile:
    """A quantile interpolated from histogram buckets, with the bucket `(lower, upper]` it lies in.

    `lower <= value <= upper`, with the natural lower bound 0 for the first bucket. A quantile in the
    `+Inf` bucket (`in_inf_bucket`) is reported as Prometheus does — the largest finite bound, which is
    only a lower bound of the truth — with `upper` = inf; `str()` says so instead of printing it as a
    measurement. No observations: every number is NaN. For display only: SLIs are exact threshold ratios
    `bucket{le="T"} / count`, never quantiles. `str()` reads values in seconds, every labkit histogram's unit.
    """

    quantile: float
    value: float
    lower: float
    upper: float
    in_inf_bucket: bool
    observations: float

    def __str__(self) -> str:
        name = f"p{self.quantile * 100:g}"
        if math.isnan(self.observations):
            return f"{name} unknown (no +Inf bucket, so no total count)"
        if math.isnan(self.value):
            return f"{name} unknown (no observations)"
        if self.in_inf_bucket:
            return f"{name} > {self.lower:g} s (above the highest bucket bound)"
        if math.isinf(self.lower):
            return f"{name} <= {self.upper:g} s (in the lowest bucket, which has no lower bound)"
        return f"{name} ~ {self.value:.4g} s (interpolated in ({self.lower:g}, {self.upper:g}] s)"


def bucket_quantile(
    quantile: float, buckets: Mapping[float, float] | Iterable[tuple[float, float]]
) -> BucketQuantile:
    """Prometheus' `histogram_quantile` on cumulative `(le, count)` buckets, plus the bucket bounds.

    Mirrors promql/quantile.go's bucketQuantile: buckets sorted by bound, equal bounds merged,
    counts made monotonic, rank = q * count(+Inf), the first bucket whose count reaches the rank,
    linear interpolation inside it; the `+Inf` bucket gives the second-highest bound. One exception:
    q = 0 with empty lowest buckets gives the lower bound of the first bucket that holds an observation,
    where Prometheus divides 0 by 0 and answers NaN.
    """
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be within [0, 1], got {quantile}")
    pairs = buckets.items() if isinstance(buckets, Mapping) else buckets
    merged: dict[float, float] = {}
    for bound, count in pairs:
        merged[float(bound)] = merged.get(float(bound), 0.0) + float(count)
    nan = math.nan
    ordered = sorted(merged.items())
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return BucketQuantile(quantile, nan, nan, nan, False, nan)
    bounds = [b for b, _ in ordered]
    counts: list[float] = []
    for _, count in ordered:  # the envelope: rate() jitter can make a higher bucket look smaller
        counts.append(max(count, counts[-1]) if counts else count)
    observations = counts[-1]
    if not observations > 0:
        return BucketQuantile(quantile, nan, nan, nan, False, observations)
    rank = quantile * observations
    # The first bucket whose cumulative count reaches the rank; len - 1 (the +Inf bucket) if none does.
    # Rank 0 (q = 0, the smallest observation) is in the first bucket that holds something.
    last = len(counts) - 1
    index = (
        bisect.bisect_right(counts, 0.0, hi=last) if rank == 0 else bisect.bisect_left(counts, rank, hi=last)
    )
    if index == last:
        return BucketQuantile(quantile, bounds[-2], bounds[-2], math.inf, True, observations)
    if index == 0 and bounds[0] <= 0:
        return BucketQuantile(quantile, bounds[0], -math.inf, bounds[0], False, observations)
    lower = bounds[index - 1] if index > 0 else 0.0
    below = counts[index - 1] if index > 0 else 0.0
    value = lower + (bounds[index] - lower) * ((rank - below) / (counts[index] - below))
    return BucketQuantile(quantile, value, lower, bounds[index], False, observations)


def cumulative_buckets(values: Iterable[float], bounds: Sequence[float]) -> list[tuple[float, int]]:
    """Cumulative `(le, count)` pairs the way a Prometheus histogram counts `values`, +Inf bucket included.

    A value equal to a bound counts in that bound's bucket (le = "less than or equal"); NaN is skipped.
    """
    edges = sorted(bounds)
    counts = [0] * (len(edges) + 1)
    for value in values:
        if math.isnan(value):
            continue
        counts[bisect.bisect_left(edges, value)] += 1
    result: list[tuple[float, int]] = []
    running = 0
    for edge, count in zip([*edges, math.inf], counts, strict=True):
        running += count
        result.append((edge, running))
    return result
