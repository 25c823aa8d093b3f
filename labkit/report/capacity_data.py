"""The capacity search of one run, read for its report and headline: capacity.json as the search wrote it
(`labkit.measure.capacity.CapacityResult`), and the headline keys `max_rate_meeting_slos`, its interval
(`_low`, `_high`) and `limiting_slo`. Its table, note and figure are in `labkit.report.capacity`.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from labkit.measure.capacity import CapacityResult
from labkit.report.data import RunData
from labkit.rundir import RunDirectory, RunFile

__all__ = ["CAPACITY_HEADLINE_KEYS", "capacity_headline", "capacity_result"]

logger = logging.getLogger(__name__)

CAPACITY_HEADLINE_KEYS = (
    "max_rate_meeting_slos",
    "max_rate_meeting_slos_low",
    "max_rate_meeting_slos_high",
    "limiting_slo",
)


def capacity_result(run: RunData) -> CapacityResult | None:
    """The run's capacity.json; None when the run has none (not a capacity search) or it is unreadable
    (logged: the rest of the report renders)."""
    directory = RunDirectory(run.path)
    problems: list[str] = []
    data = directory.read_json_object(RunFile.CAPACITY, problems)
    if data is None:
        for problem in problems:
            logger.warning("%s: %s", run.path, problem)
        return None
    try:
        return CapacityResult.model_validate(data)
    except ValidationError as exc:
        logger.warning("%s/%s is not a capacity search: %s", run.path, RunFile.CAPACITY, exc)
        return None


def capacity_headline(run: RunData) -> dict[str, Any]:
    """The knee in requests per second, its interval, and the SLO that broke first (or `saturation`);
    all None when the run made no capacity search."""
    result = capacity_result(run)
    if result is None:
        return dict.fromkeys(CAPACITY_HEADLINE_KEYS)
    return {key: result.headline[key] for key in CAPACITY_HEADLINE_KEYS}
