"""The alert data of one run, read for its report and headline: Alertmanager's notifications (alerts.jsonl),
the alert profile in force, the delays, and the alert measures per fault (`labkit.measure.alerting`), with the
headline numbers `time_to_page_s` and `false_pages`. Figures and tables of them are in `labkit.report.alerts`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pydantic import ValidationError

from labkit.config import LabConfig
from labkit.errors import LabkitError
from labkit.measure.alerting import AlertDelays, AlertingMeasures, measure_alerting
from labkit.measure.slo import load_slo_spec
from labkit.measure.slo.alerts import ALERT_PROFILES, AlertProfile
from labkit.measure.slo.rules import long_windows
from labkit.notifications import AlertNotification
from labkit.report.data import RunData
from labkit.rundir import RunDirectory, RunFile

__all__ = [
    "alert_delays",
    "alert_measures",
    "alert_notifications",
    "alert_profile_of",
    "alerting_headline",
]

logger = logging.getLogger(__name__)


def alert_notifications(run: RunData) -> list[AlertNotification] | None:
    """The run's alerts.jsonl as notifications; None when the run has none (no Alertmanager, older run).
    A line that is not a notification is skipped and logged."""
    directory = RunDirectory(run.path)
    if not directory.file(RunFile.ALERTS).exists():
        return None
    notes = []
    for line in directory.read_jsonl(RunFile.ALERTS, []):
        try:
            notes.append(AlertNotification.model_validate(line))
        except ValidationError as exc:
            logger.warning("%s: a line of %s is not a notification: %s", run.path, RunFile.ALERTS, exc)
    return notes


def alert_profile_of(run: RunData, notes: list[AlertNotification] | None = None) -> AlertProfile | None:
    """The alert profile in force: lab.json's record (rules.alert_profile_record), else the label the
    notifications carry; None when neither says."""
    recorded = run.lab.get("alert_profile")
    names = [recorded.get("name")] if isinstance(recorded, dict) else []
    names += [n.labels.get("alert_profile") for n in notes or []]
    for name in names:
        if name in ALERT_PROFILES:
            return ALERT_PROFILES[name]
    return None


def alert_delays(run: RunData, profile: AlertProfile | None = None) -> AlertDelays:
    """The lab's scrape (= rule evaluation) interval from lab.json, else LabConfig's default; Alertmanager's
    group_wait from lab.json (0 when the run did not record it: the expected times then omit it); the
    windows that the rules of `profile` (default: the run's, `alert_profile_of`) record in their slower
    group."""
    default = float(LabConfig.model_fields["scrape_interval_s"].default)
    scrape = run.lab.get("scrape_interval_s")
    scrape = float(scrape) if isinstance(scrape, int | float) and scrape > 0 else default
    wait = run.lab.get("alertmanager_group_wait_s")
    profile = profile or alert_profile_of(run)
    return AlertDelays(
        scrape_interval_s=scrape,
        evaluation_interval_s=scrape,
        group_wait_s=float(wait) if isinstance(wait, int | float) and wait >= 0 else 0.0,
        long_windows=frozenset(long_windows(profile.name)) if profile is not None else frozenset(),
    )


def alert_measures(run: RunData) -> AlertingMeasures | None:
    """The run's alert measures (labkit.measure.alerting), or None without alerts.jsonl or a profile."""
    notes = alert_notifications(run)
    profile = alert_profile_of(run, notes)
    if notes is None or profile is None:
        return None
    try:
        slos = load_slo_spec()
    except LabkitError as exc:
        logger.warning("no SLO spec to measure the alerts of %s against: %s", run.path, exc)
        return None
    recovery = run.recovery
    recovered = (
        {str(r["fault_id"]): _number(r["recovered"]) for r in recovery.to_dict("records")}
        if not recovery.empty
        else {}
    )
    return measure_alerting(
        notifications=notes,
        faults=run.fault_windows,
        samples=run.all_samples,
        slos=slos,
        profile=profile,
        delays=alert_delays(run, profile),
        recovered=recovered,
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def alerting_headline(run: RunData) -> dict[str, Any]:
    """`time_to_page_s` (from the first fault that should page to its first page, seconds) and
    `false_pages` (pages outside every fault); both None when the run has no alert data."""
    measures = alert_measures(run)
    if measures is None:
        return {"time_to_page_s": None, "false_pages": None}
    return {"time_to_page_s": measures.time_to_page_s, "false_pages": measures.false_page_count}
