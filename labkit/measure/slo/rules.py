"""Prometheus recording and alerting rules generated from the SLO spec: the error ratio of every objective
over each alert window, and the Workbook's multi-window, multi-burn-rate alerts on them.

`labkit up` loads them with `write_rules_file`; `labkit slo rules` prints them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from labkit.atomic import write_atomically
from labkit.measure.histograms import le_label
from labkit.measure.promql import counter_sum_selector
from labkit.measure.slo.alerts import (
    ALERT_PROFILES,
    AlertProfile,
    AlertProfileName,
    BurnRateAlert,
    alert_threshold,
)
from labkit.measure.slo.budget import time_to_exhaustion_s
from labkit.measure.slo.spec import Objective, SloDefinition, SloSpecError, load_slo_spec, parse_duration_s

__all__ = [
    "ERROR_RATIO_RECORD",
    "EVENTS_RECORD",
    "EVENTS_STEP_RECORD",
    "GOOD_STEP_RECORD",
    "LONG_WINDOW_INTERVAL_S",
    "LONG_WINDOW_S",
    "RULES_FILE_NAME",
    "alert_annotations",
    "alert_name",
    "alert_profile_record",
    "counter_selectors",
    "error_ratio_record",
    "events_record",
    "generate_rules",
    "long_windows",
    "objective_error_ratio_expr",
    "recorded_windows",
    "rules_yaml",
    "step_window",
    "write_rules_file",
]

ERROR_RATIO_RECORD = "slo:sli_error:ratio_rate{window}"  # e.g. slo:sli_error:ratio_rate5m
EVENTS_RECORD = "slo:sli_events:increase{window}"  # valid events over the window, for the minimum count
# The long windows' steps: the increase of the valid and of the good events over a short window
# (`step_window`), recorded every LONG_WINDOW_INTERVAL_S, which the long windows add up.
EVENTS_STEP_RECORD = "slo:sli_events_step:increase{window}"
GOOD_STEP_RECORD = "slo:sli_good_step:increase{window}"
RULES_FILE_NAME = "slo.yml"

# A window at least LONG_WINDOW_S long that no page reads is recorded in a group of its own evaluated every
# LONG_WINDOW_INTERVAL_S instead of at the lab's interval (1 s): each evaluation reads every sample in the
# window, and the lab profile's 48- and 144-minute ticket windows were 91 % of the samples its rules read
# each second, a cost that grew for as long as they filled (docs/reliability.md, "An hour on the real
# model"). Pages keep the lab's interval; a ticket may fire up to 30 s later, which the alert measures add
# (AlertDelays.long_windows). Every 30 s, one evaluation misses at most 1/60 of a 30-minute window.
# Evaluated every 30 s, a long window still read every sample of its counters (2,880 per series for 48m
# at the lab's 1 s scrape), and the 2026-12-05 soak measured Prometheus' RSS still growing 12 %/h while the
# windows filled. So the group first records each counter's increase over a short step window
# (`step_window`), and each long window adds up those records: 96 samples for 48m, one series each.
LONG_WINDOW_S = 1800
LONG_WINDOW_INTERVAL_S = 30
# The step window spans 1/STEP_FRACTION of the shortest long window (lab 2m, production 5m): at least
# four evaluations of the group, and at least two scrapes at the lab's slowest scrape interval (60 s) or a
# Prometheus' default (1m); it smooths the long window's edges by that much.
STEP_FRACTION = 24


def long_windows(profile: AlertProfileName) -> list[str]:
    """The windows of `profile` recorded every LONG_WINDOW_INTERVAL_S: at least LONG_WINDOW_S long and read
    by no page alert (lab: 48m and 144m; production: 2h, 1d and 3d), shortest first."""
    alerts = ALERT_PROFILES[profile].alerts
    paged = {w for a in alerts if a.severity == "page" for w in (a.long_window, a.short_window)}
    return [w for w in recorded_windows(profile) if parse_duration_s(w) >= LONG_WINDOW_S and w not in paged]


def step_window(profile: AlertProfileName) -> str | None:
    """The window of the step records that `profile`'s long windows add up (lab: 2m, production: 5m), or
    None when it has no long window."""
    slow = long_windows(profile)
    if not slow:
        return None
    step_s = parse_duration_s(slow[0]) / STEP_FRACTION
    return f"{step_s / 60:g}m" if step_s % 60 == 0 else f"{step_s:g}s"


def events_record(window: str) -> str:
    """The recorded series of the number of valid events over `window`: `slo:sli_events:increase10s`."""
    return EVENTS_RECORD.format(window=window)


def error_ratio_record(window: str) -> str:
    """The recorded series of the error ratio over `window`: `slo:sli_error:ratio_rate5m`."""
    return ERROR_RATIO_RECORD.format(window=window)


def alert_name(alert: BurnRateAlert) -> str:
    """`SloErrorBudgetBurnPage` or `SloErrorBudgetBurnTicket`; the pair is in the window labels."""
    return f"SloErrorBudgetBurn{alert.severity.capitalize()}"


def alert_profile_record(profile: AlertProfileName) -> dict[str, Any]:
    """What lab.json (and so runs and reports) records of the alert profile in force."""
    in_force = ALERT_PROFILES[profile]
    return {
        "name": in_force.name,
        "window_divisor": in_force.window_divisor,
        "window_scale": in_force.window_scale,
    }


def counter_selectors(slo: SloDefinition) -> tuple[str, str]:
    """(good, valid) counter selectors of a ratio SLO, from its queries, which must have the form
    `sum(<metric>{<matchers>})` (a sum of counters; the rules wrap the selector in increase()).
    """
    selectors = []
    for which, query in (("good", slo.good_query), ("total", slo.total_query)):
        try:
            selectors.append(counter_sum_selector(query or ""))
        except ValueError as error:
            raise SloSpecError(
                f"SLO {slo.name!r} (spec line {slo.line}): the {which} query {query!r} must have the form "
                "sum(<metric>{<label matchers>}) over a counter, so that rules can take increase() of it"
            ) from error
    return selectors[0], selectors[1]


def _error_ratio_expr(good: str, total: str, window: str) -> str:
    # Sum the increases, subtract, then divide once (never average ratios: sloth#241). (total - good) / total
    # keeps integer counts exact (72 / 500 is the double nearest 0.144; 1 - 428 / 500 is not).
    # A missing good series counts as 0 (`or vector(0)`), so that 100 % failure is a ratio of 1 and not
    # no data; no valid events in the window (`> 0` filters the divisor) records no sample: no traffic,
    # no burn, no alert.
    inc_total = f"sum(increase({total}[{window}]))"
    return _ratio_of(inc_total, f"sum(increase({good}[{window}]))")


def _ratio_of(events: str, good: str) -> str:
    return f"({events} - ({good} or vector(0))) / ({events} > 0)"


def _recorded_error_ratio_expr(good: str, slo: SloDefinition, objective: Objective, window: str) -> str:
    # The same ratio, its valid events read from the events record its group evaluated just before (rules
    # of a group run in order at one timestamp): the window's samples of the total counter are read once
    # per evaluation, not three times. sum() drops the record's labels so that `or vector(0)` matches.
    events = f"sum({events_record(window)}{_matchers(slo, objective)})"
    return _ratio_of(events, f"sum(increase({good}[{window}]))")


def _long_window_rules(
    good: str, total: str, slo: SloDefinition, objective: Objective, windows: list[str], step: str
) -> list[dict[str, Any]]:
    # Every LONG_WINDOW_INTERVAL_S the increase of each counter over `step`, then per long window the sum of
    # those steps: each event is counted step / interval times (4 for the lab's 2m), which the events record
    # divides out and the error ratio cancels, (valid - good) / valid over the sums as _error_ratio_expr
    # (counts, exact where they are integers, summed before one division).
    labels = {"slo": slo.name, "objective": objective.display_name}
    matchers = _matchers(slo, objective)
    events_step = EVENTS_STEP_RECORD.format(window=step)
    good_step = GOOD_STEP_RECORD.format(window=step)
    overlap = parse_duration_s(step) / LONG_WINDOW_INTERVAL_S
    rules: list[dict[str, Any]] = [
        {"record": events_step, "expr": f"sum(increase({total}[{step}]))", "labels": dict(labels)},
        {"record": good_step, "expr": f"sum(increase({good}[{step}]))", "labels": dict(labels)},
    ]
    for w in windows:
        events = f"sum(sum_over_time({events_step}{matchers}[{w}]))"
        rules.append({"record": events_record(w), "expr": f"{events} / {overlap:g}", "labels": dict(labels)})
        good_sum = f"sum(sum_over_time({good_step}{matchers}[{w}]))"
        ratio = _ratio_of(events, good_sum)
        rules.append({"record": error_ratio_record(w), "expr": ratio, "labels": dict(labels)})
    return rules


def _objective_selectors(slo: SloDefinition, objective: Objective) -> tuple[str, str]:
    if slo.indicator == "ratio":
        return counter_selectors(slo)
    assert slo.metric is not None and objective.value is not None  # validated by SloDefinition
    return f'{slo.metric}_bucket{{le="{le_label(objective.value)}"}}', f"{slo.metric}_count"


def objective_error_ratio_expr(slo: SloDefinition, objective: Objective, window: str) -> str:
    """The error ratio of one objective over `window`, exactly as the recording rules compute it, for a
    window they do not record: a Grafana range such as `$__range` (the dashboard's error budget)."""
    good, total = _objective_selectors(slo, objective)
    return _error_ratio_expr(good, total, window)


def _promql_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _matchers(slo: SloDefinition, objective: Objective) -> str:
    return f"{{slo={_promql_string(slo.name)},objective={_promql_string(objective.display_name)}}}"


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.3g} days"


def alert_annotations(
    slo: SloDefinition, objective: Objective, alert: BurnRateAlert, *, profile: AlertProfile | None = None
) -> dict[str, str]:
    """The summary and description of one alert pair (static text: no templates to render)."""
    profile = profile or ALERT_PROFILES["production"]
    period_s = profile.period_s(slo.window_s)
    threshold = alert_threshold(alert.factor, objective.target)
    lasts = time_to_exhaustion_s(alert.factor, window_s=period_s)
    return {
        "summary": (
            f"{slo.display_name}: {objective.display_name} — error budget burning at "
            f">= {alert.factor:g}x over {alert.long_window} and {alert.short_window}"
        ),
        "description": (
            f"The error ratio of SLO {slo.name} ({objective.display_name}, target {objective.target:g}) "
            f"is at least {threshold:g} = {alert.factor:g} x its error budget {objective.error_budget:.3g} "
            f"over both the last {alert.long_window} and the last {alert.short_window}, with at least "
            f"{slo.alert_min_events} valid events in the last {alert.short_window}. "
            f"At {alert.factor:g}x the {period_s / 86400:g}-day budget lasts {_days(lasts)}; "
            f"{alert.budget_consumed:.0%} of it is spent in {alert.long_window} "
            f"({profile.describe()})."
        ),
    }


def recorded_windows(profile: AlertProfileName) -> list[str]:
    """The windows the rules record for `profile`: those its alerts read, shortest first, and no other.

    A window's rules are evaluated at the lab's evaluation interval (1 s; the `long_windows` every 30 s,
    from recorded steps) over every sample in the window, so a window no alert reads costs CPU and memory
    that grow with the lab's history: the lab
    profile once also recorded the production windows up to 3 days, and its rule evaluations took twice
    as long after 10 minutes (docs/reliability.md, "An hour on the real model").
    """
    alerts = ALERT_PROFILES[profile].alerts
    return sorted({w for a in alerts for w in (a.long_window, a.short_window)}, key=parse_duration_s)


def generate_rules(
    slos: Sequence[SloDefinition], *, profile: AlertProfileName = "production"
) -> dict[str, Any]:
    """The rules as a Prometheus rule-file mapping: one group per SLO with a recording rule per objective and
    window (valid events, then the error ratio that reads them), then the alerting rules of the profile (in
    one group, so each evaluation alerts on freshly recorded ratios); the `long_windows` are recorded in a
    second group per SLO, `slo-<name>-long-windows`, every LONG_WINDOW_INTERVAL_S, as sums of the step
    increases that group records first (`step_window`). Every alert carries
    `alert_profile` and `window_scale`."""
    in_force = ALERT_PROFILES[profile]
    alerts = in_force.alerts
    slow = long_windows(profile)
    step = step_window(profile)
    windows = [w for w in recorded_windows(profile) if w not in slow]
    groups = []
    for slo in slos:
        rules: list[dict[str, Any]] = []
        long_rules: list[dict[str, Any]] = []
        for objective in slo.objectives:
            good, total = _objective_selectors(slo, objective)
            labels = {"slo": slo.name, "objective": objective.display_name}
            for w in windows:
                rules.append(
                    {
                        "record": events_record(w),
                        "expr": f"sum(increase({total}[{w}]))",
                        "labels": dict(labels),
                    }
                )
                rules.append(
                    {
                        "record": error_ratio_record(w),
                        "expr": _recorded_error_ratio_expr(good, slo, objective, w),
                        "labels": dict(labels),
                    }
                )
            if step is not None:
                long_rules += _long_window_rules(good, total, slo, objective, slow, step)
        # A Timeslices objective's budget is counted in slices, which these occurrence burn rates do not
        # measure: its error ratios are recorded, it gets no alerts (rules_yaml's header says so).
        for objective in slo.objectives if slo.budgeting_method == "Occurrences" else ():
            matchers = _matchers(slo, objective)
            for alert in alerts:
                threshold = alert_threshold(alert.factor, objective.target)
                rules.append(
                    {
                        "alert": alert_name(alert),
                        "expr": (
                            f"{error_ratio_record(alert.long_window)}{matchers} >= {threshold!r} and "
                            f"{error_ratio_record(alert.short_window)}{matchers} >= {threshold!r} and "
                            f"{events_record(alert.short_window)}{matchers} >= {slo.alert_min_events}"
                        ),
                        "labels": {
                            "severity": alert.severity,
                            "slo": slo.name,
                            "objective": objective.display_name,
                            "long_window": alert.long_window,
                            "short_window": alert.short_window,
                            "burn_factor": f"{alert.factor:g}",
                            "alert_profile": in_force.name,
                            "window_scale": f"1/{in_force.window_divisor}",
                        },
                        "annotations": alert_annotations(slo, objective, alert, profile=in_force),
                    }
                )
        groups.append({"name": f"slo-{slo.name}", "rules": rules})
        if long_rules:
            groups.append(
                {
                    "name": f"slo-{slo.name}-long-windows",
                    "interval": f"{LONG_WINDOW_INTERVAL_S}s",
                    "rules": long_rules,
                }
            )
    return {"groups": groups}


def rules_yaml(
    slos: Sequence[SloDefinition] | None = None,
    *,
    spec_path: Path | None = None,
    profile: AlertProfileName = "production",
) -> str:
    """The rule file's text for `slos` (default: the spec at `spec_path`, default stack/slo.yaml)."""
    if slos is None:
        slos = load_slo_spec(spec_path)
    in_force = ALERT_PROFILES[profile]
    header = (
        "# Generated by labkit from the SLO spec (labkit slo rules); edit the spec, not this file.\n"
        "# slo:sli_error:ratio_rate<w> = error ratio over <w>, slo:sli_events:increase<w> = valid events;\n"
        "# alerts: the SRE Workbook's multi-window multi-burn-rate pairs for a 30-day SLO,\n"
        f"# {in_force.describe()}.\n"
    )
    sliced = [slo.name for slo in slos if slo.budgeting_method == "Timeslices"]
    if sliced:
        header += f"# No alerts for {', '.join(sliced)}: Timeslices budgeting (error ratios recorded only).\n"
    body = yaml.safe_dump(
        generate_rules(slos, profile=profile), sort_keys=False, allow_unicode=True, width=1_000_000
    )
    return header + body


def write_rules_file(
    rules_dir: Path, spec_path: Path | None = None, *, profile: AlertProfileName = "production"
) -> Path:
    """Write `<rules_dir>/slo.yml` (atomically) from the spec for Prometheus' `rule_files`; return it."""
    text = rules_yaml(spec_path=spec_path, profile=profile)
    rules_dir.mkdir(parents=True, exist_ok=True)
    path = rules_dir / RULES_FILE_NAME
    write_atomically(path, text)
    return path
