"""Histogram bucket sets for LLM-scale latencies, shared by every service of the lab.

prometheus_client's defaults stop at 10 s and have no boundary at typical SLO thresholds;
these sets (modelled on vLLM's) contain every threshold of the SLO spec exactly, which a test checks.
"""

from __future__ import annotations

from prometheus_client.utils import floatToGoString

__all__ = [
    "INTER_TOKEN_LATENCY_BUCKETS",
    "REQUEST_DURATION_BUCKETS",
    "TIME_TO_FIRST_TOKEN_BUCKETS",
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


def le_label(bound: float) -> str:
    """The `le` label value exactly as the exposition writes it (`1.0`, not `1`).

    Queries and rules must use this spelling or they silently match nothing (pyrra#1502).
    """
    return floatToGoString(bound)
