"""Alert measures per fault: whether the SLO burn-rate alerts fired for a run's faults, how fast, when they
resolved, which should have fired by the rules' own arithmetic and did not, and pages without a fault.

Read from a run's files: its fault windows (events.jsonl), its client samples (requests.jsonl: the error
ratio and request rate each fault caused, per SLO objective, with the client SLIs of
`labkit.measure.slo.client`) and Alertmanager's notifications (alerts.jsonl, `labkit.notifications`). The
expected time is `expected_time_to_fire_s`; SLO.md ("Measuring alerts") states the same formula for people.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from labkit.measure.recovery import FaultWindow
from labkit.measure.slo.alerts import AlertProfile, BurnRateAlert, alert_threshold
from labkit.measure.slo.client import objective_events
from labkit.measure.slo.rules import LONG_WINDOW_INTERVAL_S, alert_name
from labkit.measure.slo.spec import Objective, SloDefinition, parse_duration_s
from labkit.notifications import AlertNotification

__all__ = [
    "ALERT_MEASURE_COLUMNS",
    "AlertDelays",
    "AlertEpisode",
    "AlertMeasure",
    "AlertingMeasures",
    "FiringArithmetic",
    "WindowHistory",
    "alert_episodes",
    "expected_time_to_fire_s",
    "firing_arithmetic",
    "measure_alerting",
]

Outcome = Literal["fired", "missed", "already firing", "fired, not expected", "silent, as expected"]

ALERT_MEASURE_COLUMNS = (
    "fault_id",
    "kind",
    "target",
    "fault_start",
    "fault_end",
    "alertname",
    "severity",
    "slo",
    "objective",
    "factor",
    "long_window",
    "short_window",
    "threshold",
    "events",
    "bad_events",
    "error_ratio",
    "rate_per_s",
    "should_fire",
    "why",
    "expected_s",
    "fired_s",
    "starts_s",
    "resolved_after_end_s",
    "outcome",
)


@dataclass(frozen=True, kw_only=True)
class AlertDelays:
    """What stands between Prometheus' ratios crossing a threshold and the lab receiving the page: the next
    scrape of the counters, the next rule evaluation (both the lab's scrape_interval_s: the template
    stack/prometheus/prometheus.yml.j2 sets evaluation_interval to it) and Alertmanager's group_wait; for
    an alert reading a window that the rules record in their slower group (`long_windows`: rules.long_windows
    of the profile in force), that group's interval too (`for_alert`)."""

    scrape_interval_s: float
    evaluation_interval_s: float
    group_wait_s: float
    long_windows: frozenset[str] = frozenset()

    @property
    def total_s(self) -> float:
        return self.scrape_interval_s + self.evaluation_interval_s + self.group_wait_s

    def for_alert(self, *windows: str) -> float:
        """`total_s` for an alert pair reading `windows` (long, short), plus LONG_WINDOW_INTERVAL_S when one
        of them is recorded in the slower group."""
        return self.total_s + (LONG_WINDOW_INTERVAL_S if self.long_windows.intersection(windows) else 0.0)


@dataclass(frozen=True)
class WindowHistory:
    """What a window already held when the fault started, in seconds' worth of events at the fault's rate:
    `good_s` of good events and `bad_s` of bad ones. The default (infinite good history, no bad) is a lab
    whose windows were full of fault-free traffic."""

    good_s: float = math.inf
    bad_s: float = 0.0


def _crossing_s(window_s: float, threshold: float, error_ratio: float, history: WindowHistory) -> float:
    """When one window's error ratio reaches `threshold`, seconds into the fault (see the formula)."""
    full = window_s * threshold / error_ratio
    held = history.good_s + history.bad_s
    if error_ratio <= threshold or not math.isfinite(held):
        return full
    return max(0.0, min(full, (threshold * held - history.bad_s) / (error_ratio - threshold)))


def expected_time_to_fire_s(
    *,
    error_ratio: float,
    threshold: float,
    long_window_s: float,
    short_window_s: float,
    fault_s: float,
    delays: AlertDelays,
    long_history: WindowHistory | None = None,
    short_history: WindowHistory | None = None,
    windows: tuple[str, ...] = (),
) -> float | None:
    """Seconds from a fault's start to the alert's notification, by the rules' own arithmetic; None when the
    alert cannot fire for this fault.

    With error ratio e during the fault, threshold thr = factor x (1 - target) (`alert_threshold`) and long
    window W, the long window's error ratio after t seconds of fault is e t / W when the window was full of
    good events, so it reaches thr at t = W thr / e. A window holding less (a young lab, a lab idle before
    the fault: H seconds' worth of events at the fault's rate, B of them bad) has ratio (B + e t) / (H + t)
    until it is full, reaching thr at t = (thr H - B) / (e - thr). Each window w (long W, short s) crosses at
    the earlier of the two, and the alert fires when both have crossed:

        t_w = max(0, min(w thr / e, (thr H_w - B_w) / (e - thr)))
        t_fire = max(t_W, t_s)          (= W thr / e for a lab that ran fault-free for a long window)
        expected = t_fire + scrape interval + evaluation interval + Alertmanager's group_wait
                   (+ the slower group's interval when it records one of the `windows`: AlertDelays.for_alert)

    It can fire only when e >= thr and the fault lasts at least t_fire (after the fault ends the long
    window's ratio stops growing). The minimum number of events in the short window is checked by
    `firing_arithmetic`.
    """
    if not error_ratio > 0 or error_ratio < threshold or long_window_s <= 0:
        return None
    t_fire = max(
        _crossing_s(long_window_s, threshold, error_ratio, long_history or WindowHistory()),
        _crossing_s(short_window_s, threshold, error_ratio, short_history or WindowHistory()),
    )
    if fault_s < t_fire:
        return None
    return t_fire + delays.for_alert(*windows)


@dataclass(frozen=True)
class FiringArithmetic:
    """What the rules' arithmetic says of one alert pair for one fault: whether it should fire, and when
    (seconds from the fault's start to the notification), or why not, in words."""

    should_fire: bool
    expected_s: float | None
    why: str


def firing_arithmetic(
    *,
    alert: BurnRateAlert,
    target: float,
    error_ratio: float | None,
    fault_s: float,
    rate_per_s: float,
    min_events: int,
    delays: AlertDelays,
    long_history: WindowHistory | None = None,
    short_history: WindowHistory | None = None,
) -> FiringArithmetic:
    """`expected_time_to_fire_s` for `alert` with an objective of `target`, plus the minimum-events
    condition: at `rate_per_s` events per second the short window holds rate x short window events, and
    the alert needs `min_events` of them (the SLO's alert_min_events): too low a rate cannot page."""
    threshold = alert_threshold(alert.factor, target)
    if error_ratio is None or fault_s <= 0:
        return FiringArithmetic(False, None, "no events during the fault")
    in_short = rate_per_s * alert.short_window_s
    if in_short < min_events:
        return FiringArithmetic(
            False,
            None,
            f"too few events: {rate_per_s:.2g}/s x {alert.short_window} = {in_short:.0f}, "
            f"fewer than the {min_events} needed",
        )
    if error_ratio < threshold:
        return FiringArithmetic(
            False, None, f"error ratio {error_ratio:.3g} below the threshold {threshold:g}"
        )
    expected = expected_time_to_fire_s(
        error_ratio=error_ratio,
        threshold=threshold,
        long_window_s=alert.long_window_s,
        short_window_s=alert.short_window_s,
        fault_s=fault_s,
        delays=delays,
        long_history=long_history,
        short_history=short_history,
        windows=(alert.long_window, alert.short_window),
    )
    if expected is None:
        return FiringArithmetic(
            False,
            None,
            f"too short: {fault_s:.0f} s of fault, the long window needs longer at ratio {error_ratio:.3g}",
        )
    return FiringArithmetic(True, expected, f"error ratio {error_ratio:.3g} >= {threshold:g}")


@dataclass(frozen=True)
class AlertEpisode:
    """One alert from its first firing notification to the next resolved one of the same alert (its
    fingerprint, a digest of its labels). Not keyed by startsAt: an alert that stops and fires again within
    Alertmanager's group interval is notified once, resolved with the later startsAt."""

    alertname: str
    labels: dict[str, str]
    fingerprint: str
    starts_unix: float | None  # when Prometheus' rule started firing (startsAt)
    fired_unix: float | None  # when the lab received its first firing notification
    resolved_unix: float | None  # when the lab received its resolved notification; None while firing

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def at(self) -> float:
        """When it started: startsAt, else its first notification."""
        for value in (self.starts_unix, self.fired_unix, self.resolved_unix):
            if value is not None:
                return value
        return math.nan

    def matches(self, alert: BurnRateAlert, slo: SloDefinition, objective: Objective) -> bool:
        labels = self.labels
        return (
            self.alertname == alert_name(alert)
            and labels.get("slo") == slo.name
            and labels.get("objective") == objective.display_name
            and labels.get("long_window") == alert.long_window
            and labels.get("short_window") == alert.short_window
        )


def alert_episodes(notifications: Iterable[AlertNotification]) -> list[AlertEpisode]:
    """The notifications in episodes, in start order: per alert (fingerprint), a firing notification opens
    one (repeats while it is open change nothing) and the next resolved notification closes it; a resolved
    notification with none open (the alert fired before the run) is an episode of its own."""
    open_: dict[str, AlertEpisode] = {}
    episodes: list[AlertEpisode] = []
    for note in sorted(notifications, key=lambda n: n.received_unix):
        key = note.fingerprint or repr(sorted(note.labels.items()))
        current = open_.get(key)
        if note.status == "firing":
            if current is None:
                open_[key] = AlertEpisode(
                    alertname=note.alertname,
                    labels=dict(note.labels),
                    fingerprint=key,
                    starts_unix=note.starts_unix,
                    fired_unix=note.received_unix,
                    resolved_unix=None,
                )
            continue
        opened = open_.pop(key, None)
        if opened is not None:
            episodes.append(dataclasses.replace(opened, resolved_unix=note.received_unix))
        else:
            episodes.append(
                AlertEpisode(
                    alertname=note.alertname,
                    labels=dict(note.labels),
                    fingerprint=key,
                    starts_unix=note.starts_unix,
                    fired_unix=None,
                    resolved_unix=note.received_unix,
                )
            )
    episodes.extend(open_.values())
    return sorted(episodes, key=lambda e: e.at)


@dataclass(frozen=True)
class AlertMeasure:
    """One alert pair of one objective for one fault: the arithmetic and what happened (seconds)."""

    fault: FaultWindow
    fault_end: float  # the end the alerts see: an instantaneous fault's recovery, else its end
    alert: BurnRateAlert
    slo: str
    objective: str
    threshold: float
    events: int
    bad_events: int
    rate_per_s: float
    arithmetic: FiringArithmetic
    episode: AlertEpisode | None
    ongoing: AlertEpisode | None = (
        None  # the same alert, firing since before the fault (it cannot fire again)
    )

    @property
    def error_ratio(self) -> float | None:
        return self.bad_events / self.events if self.events else None

    @property
    def fired_s(self) -> float | None:
        """From the fault's start to the first firing notification."""
        fired = self.episode.fired_unix if self.episode else None
        return None if fired is None else fired - self.fault.start

    @property
    def starts_s(self) -> float | None:
        """From the fault's start to the alert's startsAt (Prometheus' own time, without Alertmanager)."""
        starts = self.episode.starts_unix if self.episode else None
        return None if starts is None else starts - self.fault.start

    @property
    def resolved_after_end_s(self) -> float | None:
        """From the fault's end (as the alerts see it) to the resolved notification."""
        resolved = self.episode.resolved_unix if self.episode else None
        return None if resolved is None else resolved - self.fault_end

    @property
    def outcome(self) -> Outcome:
        fired = self.episode is not None and self.episode.fired_unix is not None
        if not fired and self.ongoing is not None:
            return "already firing"
        if self.arithmetic.should_fire:
            return "fired" if fired else "missed"
        return "fired, not expected" if fired else "silent, as expected"

    def row(self) -> dict[str, Any]:
        return {
            "fault_id": self.fault.fault_id,
            "kind": self.fault.kind,
            "target": self.fault.target,
            "fault_start": self.fault.start,
            "fault_end": self.fault_end,
            "alertname": alert_name(self.alert),
            "severity": self.alert.severity,
            "slo": self.slo,
            "objective": self.objective,
            "factor": self.alert.factor,
            "long_window": self.alert.long_window,
            "short_window": self.alert.short_window,
            "threshold": self.threshold,
            "events": self.events,
            "bad_events": self.bad_events,
            "error_ratio": self.error_ratio,
            "rate_per_s": self.rate_per_s,
            "should_fire": self.arithmetic.should_fire,
            "why": self.arithmetic.why,
            "expected_s": self.arithmetic.expected_s,
            "fired_s": self.fired_s,
            "starts_s": self.starts_s,
            "resolved_after_end_s": self.resolved_after_end_s,
            "outcome": self.outcome,
        }


@dataclass(frozen=True)
class AlertingMeasures:
    """Every alert measure of a run, the pages without a fault, and the profile and delays they used."""

    profile: AlertProfile
    delays: AlertDelays
    measures: tuple[AlertMeasure, ...]
    episodes: tuple[AlertEpisode, ...]
    false_pages: tuple[AlertEpisode, ...]
    faults: tuple[FaultWindow, ...] = field(default=())

    @property
    def false_page_count(self) -> int:
        return len(self.false_pages)

    @property
    def time_to_page_s(self) -> float | None:
        """From the start of the first fault that should page (by the arithmetic) to the first page
        notification the lab received for it; None when no fault should page or none paged."""
        for fault in self.faults:
            pages = [
                m for m in self.measures if m.fault.fault_id == fault.fault_id and m.alert.severity == "page"
            ]
            if any(m.arithmetic.should_fire for m in pages):
                fired = [m.fired_s for m in pages if m.fired_s is not None]
                return min(fired) if fired else None
        return None

    @property
    def missed(self) -> list[AlertMeasure]:
        return [m for m in self.measures if m.outcome == "missed"]

    def frame(self) -> pd.DataFrame:
        """One row per measure (ALERT_MEASURE_COLUMNS), in fault order."""
        return pd.DataFrame([m.row() for m in self.measures], columns=list(ALERT_MEASURE_COLUMNS))


def _during_a_fault(episode: AlertEpisode, spans: Sequence[tuple[float, float]], delays: AlertDelays) -> bool:
    """Whether the episode started in some fault's [start, end + its short window + the delays]."""
    try:
        short = parse_duration_s(episode.labels.get("short_window", "0s"))
    except ValueError:
        short = 0.0
    windows = (episode.labels.get("long_window", ""), episode.labels.get("short_window", ""))
    return any(start <= episode.at <= end + short + delays.for_alert(*windows) for start, end in spans)


def _history(events: pd.DataFrame | None, start: float, window_s: float, rate: float) -> WindowHistory:
    """The good and bad events in the `window_s` before `start`, in seconds at `rate`."""
    if events is None or rate <= 0:
        return WindowHistory()
    before = _events_in(events, start - window_s, start - 1e-9)
    bad = int((~before["good"].astype(bool)).sum())
    return WindowHistory(good_s=(len(before) - bad) / rate, bad_s=bad / rate)


def _events_in(events: pd.DataFrame, start: float, end: float) -> pd.DataFrame:
    times = events["time"].to_numpy(float)
    return events[(times >= start) & (times <= end)]


def measure_alerting(
    *,
    notifications: Sequence[AlertNotification],
    faults: Sequence[FaultWindow],
    samples: pd.DataFrame,
    slos: Sequence[SloDefinition],
    profile: AlertProfile,
    delays: AlertDelays,
    recovered: Mapping[str, float | None] | None = None,
) -> AlertingMeasures:
    """Measure every alert pair of `profile` for every objective of `slos` (Occurrences budgeting: the
    rules alert on no other) against every fault.

    - A fault's window as alerts see it: [start, end]; an instantaneous fault (a kill) ends when users saw
      the service back (`recovered[fault_id]`, the recovery measures' time), else at its start.
    - Its error ratio and rate: the objective's events (`objective_events`) completing inside that window;
      its history: the objective's events in the long window before the fault, in seconds at that rate.
    - Its alert: the first episode of that alert pair whose startsAt lies in [start, end + short window +
      the delays]; a page episode in no fault's such window (e.g. in the fault-free baseline) is a page
      without a fault (`false_pages`).
    """
    recovered = recovered or {}
    episodes = alert_episodes(notifications)
    measures: list[AlertMeasure] = []
    claimed: set[int] = set()
    spans: list[tuple[float, float]] = []
    for fault in faults:
        end = fault.end
        if fault.instantaneous:
            end = max(fault.start, recovered.get(fault.fault_id) or fault.start)
        spans.append((fault.start, end))
        for slo in slos:
            if slo.budgeting_method != "Occurrences":
                continue
            for objective in slo.objectives:
                events = objective_events(samples, slo, objective) if not samples.empty else None
                during = _events_in(events, fault.start, end) if events is not None else None
                count = 0 if during is None else len(during)
                bad = 0 if during is None else int((~during["good"].astype(bool)).sum())
                span = end - fault.start
                rate = count / span if span > 0 else 0.0
                for alert in profile.alerts:
                    arithmetic = firing_arithmetic(
                        alert=alert,
                        target=objective.target,
                        error_ratio=bad / count if count else None,
                        fault_s=span,
                        rate_per_s=rate,
                        min_events=slo.alert_min_events,
                        delays=delays,
                        long_history=_history(events, fault.start, alert.long_window_s, rate),
                        short_history=_history(events, fault.start, alert.short_window_s, rate),
                    )
                    lag_s = delays.for_alert(alert.long_window, alert.short_window)
                    until = end + alert.short_window_s + lag_s
                    episode = None
                    for index, candidate in enumerate(episodes):
                        if candidate.matches(alert, slo, objective) and fault.start <= candidate.at <= until:
                            episode = candidate
                            claimed.add(index)
                            break
                    ongoing = next(
                        (
                            e
                            for e in episodes
                            if e.matches(alert, slo, objective)
                            and e.at < fault.start
                            and (e.resolved_unix is None or e.resolved_unix > fault.start)
                        ),
                        None,
                    )
                    measures.append(
                        AlertMeasure(
                            fault=fault,
                            fault_end=end,
                            alert=alert,
                            slo=slo.name,
                            objective=objective.display_name,
                            threshold=alert_threshold(alert.factor, objective.target),
                            events=count,
                            bad_events=bad,
                            rate_per_s=rate,
                            arithmetic=arithmetic,
                            episode=episode,
                            ongoing=ongoing,
                        )
                    )
    false_pages = tuple(
        e
        for index, e in enumerate(episodes)
        if e.severity == "page" and index not in claimed and not _during_a_fault(e, spans, delays)
    )
    return AlertingMeasures(
        profile=profile,
        delays=delays,
        measures=tuple(measures),
        episodes=tuple(episodes),
        false_pages=false_pages,
        faults=tuple(faults),
    )
