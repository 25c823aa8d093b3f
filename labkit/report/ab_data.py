"""The remediation A/B of one run, read for its report and headline: remediation_ab.json (written by the
`remediation_ab` scenario, labkit.measure.remediation_ab's figures) and the headline numbers `ab_verdicts`
and the MTTR difference with its interval. Tables and the figure of it are in `labkit.report.remediation_ab`.
"""

from __future__ import annotations

from typing import Any

from labkit.measure.remediation_ab import AB_TEST_MEASURE
from labkit.report.data import RunData
from labkit.rundir import RunDirectory, RunFile

__all__ = ["AB_HEADLINE_KEYS", "ab_headline", "ab_record"]

# run.json's headline of an A/B: per fault kind its verdict, and the difference on - off of the mean time to
# recover (from the fault's start) with its interval, seconds.
AB_HEADLINE_KEYS = ("ab_verdicts", "mttr_difference_s", "mttr_difference_low_s", "mttr_difference_high_s")


def ab_record(run: RunData) -> dict[str, Any] | None:
    """remediation_ab.json as a dict; None when the run has none (not an A/B) or it cannot be read (the
    problem is logged by RunDirectory's reader into `problems`, which the report does not need here)."""
    record = RunDirectory(run.path).read_json_object(RunFile.REMEDIATION_AB, [])
    kinds = None if record is None else record.get("kinds")
    return record if isinstance(kinds, dict) else None


def ab_headline(run: RunData) -> dict[str, Any]:
    """The A/B in run.json's headline: `ab_verdicts` {kind: helps | hurts | no difference} and
    `mttr_difference_s`, `_low_s`, `_high_s` {kind: seconds}; every key None for a run that is not an A/B."""
    record = ab_record(run)
    if record is None:
        return dict.fromkeys(AB_HEADLINE_KEYS)
    kinds: dict[str, Any] = record["kinds"]
    differences = {
        kind: (result.get("differences") or {}).get(AB_TEST_MEASURE) or {} for kind, result in kinds.items()
    }
    return {
        "ab_verdicts": {kind: result.get("verdict") for kind, result in kinds.items()},
        "mttr_difference_s": {kind: d.get("difference") for kind, d in differences.items()},
        "mttr_difference_low_s": {kind: d.get("low") for kind, d in differences.items()},
        "mttr_difference_high_s": {kind: d.get("high") for kind, d in differences.items()},
    }
