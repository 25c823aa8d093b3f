"""Multi-window, multi-burn-rate alerts (SRE Workbook, "Alerting on SLOs"; Sloth's defaults) for a
30-day SLO, evaluated from error ratios per window, and the window scaling that short lab runs need.

An alert fires when the error ratio reaches factor * (1 - target) over BOTH its long and its short window:
the long window makes it significant, the short one makes it stop soon after the burn stops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from labkit.measure.slo.budget import SLO_WINDOW_30D_S
from labkit.measure.slo.spec import Objective, parse_duration_s

__all__ = [
    "ALERT_PROFILES",
    "ALERT_WINDOWS",
    "LAB_WINDOW_DIVISOR",
    "WORKBOOK_ALERTS",
    "AlertProfile",
    "AlertProfileName",
    "AlertState",
    "BurnRateAlert",
    "WindowScaling",
    "alert_profile",
    "alert_threshold",
    "evaluate_alerts",
    "format_duration",
    "scale_alert_windows",
]

# Every window a Workbook alert below reads, shortest first; the production profile records each one.
ALERT_WINDOWS: tuple[str, ...] = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


@dataclass(frozen=True)
class BurnRateAlert:
    """One (long window, short window, burn factor) pair; `budget_consumed` is the share of a 30-day
    budget that `factor` spends over `long_window` (factor * long / 30 d)."""

    severity: Literal["page", "ticket"]
    factor: float
    long_window: str
    short_window: str
    budget_consumed: float

    @property
    def long_window_s(self) -> float:
        return parse_duration_s(self.long_window)

    @property
    def short_window_s(self) -> float:
        return parse_duration_s(self.short_window)


WORKBOOK_ALERTS: tuple[BurnRateAlert, ...] = (
    BurnRateAlert("page", 14.4, "1h", "5m", 0.02),
    BurnRateAlert("page", 6.0, "6h", "30m", 0.05),
    BurnRateAlert("ticket", 3.0, "1d", "2h", 0.10),
    BurnRateAlert("ticket", 1.0, "3d", "6h", 0.10),
)


# The lab profile divides every window (and the SLO period) by this: 30 days -> 1 day, the 1h/5m page ->
# 2m/10s, so that a minute-long fault can page. SLO.md ("Alert profiles") explains the choice.
LAB_WINDOW_DIVISOR = 30

AlertProfileName = Literal["production", "lab"]


def format_duration(seconds: float) -> str:
    """A whole number of seconds as a Prometheus duration in its largest exact unit: 120 -> `2m`,
    8640 -> `144m`, 10 -> `10s`."""
    if seconds <= 0 or seconds != int(seconds):
        raise ValueError(f"an alert window must be a positive whole number of seconds, got {seconds!r}")
    whole = int(seconds)
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % length == 0:
            return f"{whole // length}{unit}"
    return f"{whole}s"


@dataclass(frozen=True)
class AlertProfile:
    """The alert pairs in force: the Workbook's against a 30-day period (`production`), or the same factors
    with every window divided by `window_divisor` (`lab`). Recorded in the rules, lab.json and reports."""

    name: AlertProfileName
    window_divisor: int
    alerts: tuple[BurnRateAlert, ...]

    @property
    def window_scale(self) -> float:
        return 1.0 / self.window_divisor

    def period_s(self, slo_window_s: float) -> float:
        """The SLO period the alerts' budget arithmetic refers to, scaled like the windows."""
        return slo_window_s / self.window_divisor

    def describe(self) -> str:
        return f"alert profile {self.name}: windows scaled by 1/{self.window_divisor}"


def _scaled(alert: BurnRateAlert, divisor: int) -> BurnRateAlert:
    return BurnRateAlert(
        alert.severity,
        alert.factor,
        format_duration(alert.long_window_s / divisor),
        format_duration(alert.short_window_s / divisor),
        alert.budget_consumed,  # factor * long / period: both scaled alike
    )


ALERT_PROFILES: dict[AlertProfileName, AlertProfile] = {
    "production": AlertProfile("production", 1, WORKBOOK_ALERTS),
    "lab": AlertProfile(
        "lab", LAB_WINDOW_DIVISOR, tuple(_scaled(a, LAB_WINDOW_DIVISOR) for a in WORKBOOK_ALERTS)
    ),
}


def alert_profile(name: str) -> AlertProfile:
    """The profile called `name` (production or lab); any other name is an error saying which exist."""
    if name not in ALERT_PROFILES:
        raise ValueError(f"unknown alert profile {name!r}; use one of {', '.join(ALERT_PROFILES)}")
    return ALERT_PROFILES[name]  # type: ignore[index]


def alert_threshold(factor: float, target: float) -> float:
    """The error ratio at which an alert of `factor` fires: factor * (1 - target), rounded to 12 significant
    digits so that 14.4 * (1 - 0.99) is 0.144 and not 0.14400000000000013 (a sustained 14.4x burn must
    fire; Python and the generated PromQL use this same number)."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"objective target must lie strictly between 0 and 1, got {target!r}")
    return float(f"{factor * (1.0 - target):.12g}")


@dataclass(frozen=True)
class AlertState:
    """An alert pair evaluated once: the error ratios and burn rates of both windows, and whether it fires."""

    severity: Literal["page", "ticket"]
    factor: float
    long_window: str
    short_window: str
    threshold: float  # error ratio at which it fires, factor * (1 - target)
    long_error_ratio: float
    short_error_ratio: float
    long_burn_rate: float
    short_burn_rate: float
    firing: bool


def evaluate_alerts(
    error_ratio_by_window: Mapping[str, float],
    objective: Objective | float,
    *,
    alerts: Sequence[BurnRateAlert] = WORKBOOK_ALERTS,
) -> list[AlertState]:
    """Evaluate each alert pair: it fires when the error ratio is >= factor * (1 - target) over both its
    long and its short window. `error_ratio_by_window` maps window names ("1h", "5m", ...) to error ratios;
    a window an alert needs and the mapping lacks is an error, never a silent "not firing". NaN (no events)
    never fires."""
    target = objective.target if isinstance(objective, Objective) else objective
    budget = 1.0 - target
    needed = {w for a in alerts for w in (a.long_window, a.short_window)}
    missing = sorted(needed - set(error_ratio_by_window), key=parse_duration_s)
    if missing:
        raise ValueError(f"error ratios are missing for window(s) {', '.join(missing)}")
    states = []
    for alert in alerts:
        threshold = alert_threshold(alert.factor, target)
        long_ratio = error_ratio_by_window[alert.long_window]
        short_ratio = error_ratio_by_window[alert.short_window]
        states.append(
            AlertState(
                severity=alert.severity,
                factor=alert.factor,
                long_window=alert.long_window,
                short_window=alert.short_window,
                threshold=threshold,
                long_error_ratio=long_ratio,
                short_error_ratio=short_ratio,
                long_burn_rate=long_ratio / budget,
                short_burn_rate=short_ratio / budget,
                firing=bool(long_ratio >= threshold and short_ratio >= threshold),
            )
        )
    return states


@dataclass(frozen=True)
class WindowScaling:
    """Alert windows shrunk by `scale` = run duration / SLO window, so that a minutes-long lab run can be
    judged with the Workbook's factors. Always reported alongside the alerts it produced."""

    scale: float
    run_duration_s: float
    slo_window_s: float
    windows_s: dict[str, float]  # nominal window name -> scaled length in seconds

    def describe(self) -> str:
        windows = ", ".join(f"{name} -> {seconds:.3g} s" for name, seconds in self.windows_s.items())
        return (
            f"alert windows scaled by run / SLO window = {self.run_duration_s:g} s / "
            f"{self.slo_window_s:g} s = {self.scale:.3g}: {windows}"
        )


def scale_alert_windows(
    run_duration_s: float,
    *,
    slo_window_s: float = SLO_WINDOW_30D_S,
    windows: Sequence[str] = ALERT_WINDOWS,
) -> WindowScaling:
    """Scale every alert window by run_duration_s / slo_window_s (2-min run: 1 h -> 0.17 s, 3 d -> 12 s)."""
    if run_duration_s <= 0 or slo_window_s <= 0:
        raise ValueError(f"durations must be positive, got run {run_duration_s} s, window {slo_window_s} s")
    scale = run_duration_s / slo_window_s
    return WindowScaling(
        scale=scale,
        run_duration_s=run_duration_s,
        slo_window_s=slo_window_s,
        windows_s={name: parse_duration_s(name) * scale for name in windows},
    )
