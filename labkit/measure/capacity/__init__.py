"""The capacity search: the highest offered rate at which every SLO of the spec holds, found by a sweep and
a bisection over open-loop load points, each stopped early when the service is over-saturated, repeated for
an interval (docs/capacity.md).

    spec = CapacitySpec(load=LoadSpec(url=..., rate=1, duration_s=1, max_tokens=64, stream=True), point_s=20)
    result = find_capacity(spec, RunDirectory.create(Path("reports/runs"), "capacity"))
    result.max_rate_meeting_slos, result.limiting_slo
"""

from __future__ import annotations

from labkit.measure.capacity._point import (
    PointResult,
    SloOutcome,
    describe_point,
    measure_point,
    point_run_id,
)
from labkit.measure.capacity._run import (
    SATURATION,
    CapacityResult,
    CapacitySpec,
    describe_knee,
    find_capacity,
    limiting_slo,
)
from labkit.measure.capacity._saturation import PointWatch, SaturationCheck, saturation_reason
from labkit.measure.capacity._search import (
    CONFIDENCE_LEVELS,
    MAX_REPEATS,
    KneeEstimate,
    RepeatOutcome,
    SearchOutcome,
    SearchPlan,
    knee_estimate,
    search_capacity,
    t_quantile,
)

__all__ = [
    "CONFIDENCE_LEVELS",
    "MAX_REPEATS",
    "SATURATION",
    "CapacityResult",
    "CapacitySpec",
    "KneeEstimate",
    "PointResult",
    "PointWatch",
    "RepeatOutcome",
    "SaturationCheck",
    "SearchOutcome",
    "SearchPlan",
    "SloOutcome",
    "describe_knee",
    "describe_point",
    "find_capacity",
    "knee_estimate",
    "limiting_slo",
    "measure_point",
    "point_run_id",
    "saturation_reason",
    "search_capacity",
    "t_quantile",
]
