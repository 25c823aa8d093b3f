"""How a chaos experiment ended: `ExperimentResult` (verdict, steady-state and method SLOs, faults, recovery
measures, remediation actions) and its summary for a terminal or a notebook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from labkit.chaos._schedule import Schedule
from labkit.measure.load import LoadResult
from labkit.measure.slo import SloReport
from labkit.rundir import RunDirectory, RunFile
from labkit.verdicts import ExperimentVerdict

__all__ = ["ExperimentResult", "Verdict", "recovery_records", "remediation_cause"]

Verdict = ExperimentVerdict  # labkit.verdicts: held, deviated, aborted, not checked


@dataclass
class ExperimentResult:
    """How an experiment ended. `faults`: one record per scheduled fault (start and end outcomes)."""

    run_dir: RunDirectory
    verdict: Verdict
    reason: str
    schedule: Schedule
    before: SloReport | None = None
    after: SloReport | None = None
    method_slo: SloReport | None = None
    load: LoadResult | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)
    # One row per fault (labkit.measure.recovery.RECOVERY_COLUMNS); None when the method did not run.
    recovery: pd.DataFrame | None = None
    # The remediation loop's actions (acted or dry-run) as journaled; empty without remediation.
    remediation_actions: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for a terminal or a notebook."""
        lines = [f"experiment {self.run_dir.run_id}: {self.verdict} - {self.reason}"]
        for phase, report in (("before", self.before), ("after", self.after)):
            if report is not None:
                lines.append(f"  steady state {phase}: SLOs {report.verdict} ({report.requests} requests)")
        if self.method_slo is not None:
            lines.append(
                f"  during the method: SLOs {self.method_slo.verdict} ({self.method_slo.requests} requests)"
            )
        measures = {r["fault_id"]: r for r in recovery_records(self.recovery)}
        for record in self.faults:
            lines.append(
                f"  fault {record['index'] + 1}: {record['describe']}: "
                f"{record.get('start_outcome', 'not started')}"
                + (f", then {record['end_outcome']}" if record.get("end_outcome") else "")
            )
            if record["fault_id"] in measures:
                lines.append(f"    {_recovery_text(measures[record['fault_id']])}")
        for action in self.remediation_actions:
            what = "would restart" if action.get("dry_run") else "restarted"
            lines.append(
                f"  remediation: {what} {action['target']} at +{action.get('offset_s', 0):.1f}s "
                f"({remediation_cause(action)})"
            )
        lines.append(f"  journal: {self.run_dir.file(RunFile.EVENTS)}")
        return "\n".join(lines)


def _recovery_text(row: dict[str, Any]) -> str:
    """One line of recovery measures for a terminal."""
    if row.get("time_to_detect_s") is None or pd.isna(row["time_to_detect_s"]):
        return f"users did not notice it ({row['requests_in_window']} requests in its window)"
    recover = row.get("time_to_recover_s")
    recovered = (
        "not recovered by the end of the method"
        if recover is None or pd.isna(recover)
        else f"recovered {recover:.2f}s after it ended"
    )
    return (
        f"detected after {row['time_to_detect_s']:.2f}s, {recovered}; "
        f"{row['requests_lost']} requests lost, {row['requests_slow']} slow"
    )


def recovery_records(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Recovery rows as plain dicts, NaN as None (JSON has no NaN)."""
    if frame is None:
        return []
    return [
        {str(k): (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def remediation_cause(action: dict[str, Any]) -> str:
    """Why a journaled remediation action acted, in words: the alert it saw, or the p95 reading."""
    alert = action.get("alert")
    if isinstance(alert, dict):
        return f"alert {alert.get('alertname')} firing since {alert.get('startsAt')}"
    return f"p95 {action['value_s']:.3f}s > {action['threshold_s']:g}s"
