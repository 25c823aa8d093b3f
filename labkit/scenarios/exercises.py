"""The workshop's exercises check themselves: an answer cell left empty stops "run all" with one short line
(`require_answer`: `ExerciseNotDone`, shown in Jupyter without a traceback), a prediction is set beside
what was measured, with how close it came (`compare_prediction`), and an SLO an attendee writes is checked as
`labkit slo validate` checks it, with the pages its rules would send (`check_slo`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from labkit.atomic import write_atomically
from labkit.errors import LabkitError

__all__ = [
    "CLOSE_WITHIN",
    "ExerciseNotDone",
    "PredictionCheck",
    "SloCheck",
    "check_slo",
    "compare_prediction",
    "require_answer",
]

T = TypeVar("T")

# A prediction within this share of the measurement counts as close (a p95 moves by more between runs).
CLOSE_WITHIN = 0.25


class ExerciseNotDone(LabkitError):
    """An exercise's answer is still empty: the notebook stops here until the attendee writes one."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines instead of the traceback: the message is the whole story.
        return [f"ExerciseNotDone: {self}"]


def require_answer(value: T | None, *, name: str, what: str) -> T:
    """`value` when the attendee has written it; ExerciseNotDone naming the variable `name` and `what` to
    write in it while it is still None."""
    if value is None:
        raise ExerciseNotDone(
            f"the exercise is waiting for you: set `{name}` to {what} in the cell above, then run on "
            "(Run > Run Selected Cell and All Below)"
        )
    return value


@dataclass(frozen=True)
class PredictionCheck:
    """A prediction beside its measurement: `ratio` is measured / predicted (None when either is missing)."""

    what: str
    predicted: float
    measured: float | None
    unit: str = "s"
    missing: str = "nothing was measured (the run's report says why)"

    @property
    def ratio(self) -> float | None:
        if self.measured is None or self.predicted <= 0:
            return None
        return self.measured / self.predicted

    @property
    def close(self) -> bool:
        return self.ratio is not None and abs(self.ratio - 1) <= CLOSE_WITHIN

    def __str__(self) -> str:
        said = f"{self.what}: you predicted {self.predicted:.3g} {self.unit}"
        if self.measured is None:
            return f"{said}; {self.missing}"
        said += f", the lab measured {self.measured:.3g} {self.unit}"
        ratio = self.ratio
        if ratio is None:
            return f"{said}; a prediction of 0 or less cannot be compared"
        off = abs(ratio - 1)
        if off <= CLOSE_WITHIN:
            return f"{said}: close, within {off:.0%} of the measurement"
        direction = "too low" if ratio > 1 else "too high"
        factor = ratio if ratio > 1 else 1 / ratio
        return f"{said}: {direction}, off by a factor of {factor:.2g}"


def compare_prediction(
    predicted: float, measured: float | None, *, what: str, unit: str = "s", missing: str | None = None
) -> PredictionCheck:
    """The prediction beside the measurement (`print` it for a sentence saying how close it came); `missing`
    says what a measurement of None means (e.g. no request was slow: nothing to recover from)."""
    check = PredictionCheck(what=what, predicted=float(predicted), measured=measured, unit=unit)
    return check if missing is None else replace(check, missing=missing)


@dataclass(frozen=True)
class SloCheck:
    """An SLO file that validated: its SLOs' names, the alerting rules it produces (`labkit slo rules`' text
    for the lab's alert profile) and, per page or ticket, its threshold and windows (as the rules write
    them, "2m", and in seconds)."""

    path: Path
    slos: list[str]
    rules: str
    alerts: list[dict[str, Any]]

    def __str__(self) -> str:
        lines = [f"{self.path}: {len(self.slos)} SLO(s) valid ({', '.join(self.slos)}); their alerts:"]
        for alert in self.alerts:
            lines.append(
                f"  {alert['alert']} ({alert['severity']}) for {alert['slo']}: error ratio >= "
                f"{alert['threshold']:g} over {alert['long_window']} and {alert['short_window']}"
            )
        if not self.alerts:
            lines.append("  none (an SLO budgeted in Timeslices records error ratios only)")
        return "\n".join(lines)


def check_slo(text: str, path: Path) -> SloCheck:
    """Write the SLO spec `text` (YAML, as stack/slo.yaml) to `path` and check it as `labkit slo validate`
    does: a mistake stops the notebook with its FILE:LINE message and no traceback (ExerciseNotDone)."""
    from labkit.measure.slo.alerts import alert_threshold
    from labkit.measure.slo.rules import generate_rules, rules_yaml
    from labkit.measure.slo.spec import SloSpecError, load_slo_spec

    write_atomically(path, text)
    try:
        slos = load_slo_spec(path)
        rules = generate_rules(slos, profile="lab")
    except SloSpecError as exc:
        raise ExerciseNotDone(f"your SLO does not validate yet, fix it and run again: {exc}") from None
    targets = {(slo.name, o.display_name): o.target for slo in slos for o in slo.objectives}
    alerts = [
        {
            "alert": rule["alert"],
            "severity": labels["severity"],
            "slo": labels["slo"],
            "long_window": labels["long_window"],
            "short_window": labels["short_window"],
            "long_window_s": _seconds(labels["long_window"]),
            "short_window_s": _seconds(labels["short_window"]),
            # the rule's own number (labkit.measure.slo.alerts): burn factor x (1 - target)
            "threshold": alert_threshold(
                float(labels["burn_factor"]), targets[labels["slo"], labels["objective"]]
            ),
        }
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
        for labels in [rule["labels"]]
    ]
    return SloCheck(path, [slo.name for slo in slos], rules_yaml(slos, profile="lab"), alerts)


def _seconds(window: str) -> float:
    """A rule's window as its labels write it (Prometheus' "10s", "2m", "1h") in seconds."""
    return float(window[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[window[-1]]
