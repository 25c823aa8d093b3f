"""Error-budget arithmetic for occurrence-based SLOs: error ratio, burn rate, budget remaining and
consumed, time to exhaustion, goodput. Pure functions of counts; no I/O, no pandas.

Definitions (each event is one request, or one token gap for inter-token latency):

- error ratio      e = bad / valid = 1 - good / valid                (0 when there are no valid events)
- error budget     b = 1 - target                                    (the allowed error ratio)
- burn rate        r = e / b                                         (1 spends the budget exactly by the end
                                                                      of the SLO window)
- budget remaining over a window whose events are `good`/`valid`:   1 - bad / (b * valid) = 1 - r
- budget consumed by a run of duration d against a window W:         bad / (b * N_W)
  where N_W is the window's expected event count; by default the run's event rate extrapolated,
  N_W = valid * W / d, which gives r * d / W (traffic assumed uniform over the window)
- time to exhaustion at burn rate r:                                 W * remaining / r
- goodput                                                             requests meeting every SLO / duration
"""

from __future__ import annotations

import math

__all__ = [
    "SLO_WINDOW_30D_S",
    "budget_consumed",
    "burn_rate",
    "error_budget_remaining",
    "error_ratio",
    "goodput_rps",
    "time_to_exhaustion_s",
]

SLO_WINDOW_30D_S = 30 * 86400.0  # the lab's SLO window, and the one the Workbook's alert factors assume


def _check_target(target: float) -> float:
    if not 0.0 < target < 1.0:
        raise ValueError(f"objective target must lie strictly between 0 and 1, got {target!r}")
    return 1.0 - target


def _check_counts(good: int, valid: int) -> None:
    if valid < 0 or good < 0 or good > valid:
        raise ValueError(f"need 0 <= good <= valid, got good={good}, valid={valid}")


def error_ratio(good: int, valid: int) -> float:
    """bad / valid = (valid - good) / valid; 0.0 when there are no valid events (no traffic, no errors).

    Computed as a ratio of integers so that e.g. 72 / 500 is exactly the double nearest 0.144.
    """
    _check_counts(good, valid)
    return 0.0 if valid == 0 else (valid - good) / valid


def burn_rate(error_ratio: float, target: float) -> float:
    """error_ratio / (1 - target): how many times faster than sustainable the budget is being spent."""
    budget = _check_target(target)
    if not 0.0 <= error_ratio <= 1.0:
        raise ValueError(f"error ratio must lie in [0, 1], got {error_ratio!r}")
    return error_ratio / budget


def error_budget_remaining(good: int, valid: int, target: float) -> float:
    """Share of the error budget left if `good`/`valid` are all of a window's events:
    1 - bad / ((1 - target) * valid). 1.0 untouched, 0.0 spent, negative when overspent."""
    _check_counts(good, valid)
    budget = _check_target(target)
    if valid == 0:
        return 1.0
    return 1.0 - (valid - good) / (budget * valid)


def budget_consumed(
    bad: int,
    valid: int,
    target: float,
    *,
    duration_s: float,
    window_s: float = SLO_WINDOW_30D_S,
    events_per_window: float | None = None,
) -> float:
    """Share of a `window_s` error budget that a run's `bad` events spend: bad / ((1 - target) * N_W).

    N_W, the window's event count, is `events_per_window` when given; otherwise the run's rate extrapolated,
    valid / duration_s * window_s, which assumes the window's traffic is as dense as the run's. Then the
    result equals burn_rate * duration_s / window_s (e.g. 14.4x for 1 h of a 30-day window: 2 %).
    """
    budget = _check_target(target)
    if bad < 0 or valid < 0 or bad > valid:
        raise ValueError(f"need 0 <= bad <= valid, got bad={bad}, valid={valid}")
    if duration_s <= 0 or window_s <= 0:
        raise ValueError(f"durations must be positive, got duration_s={duration_s}, window_s={window_s}")
    if events_per_window is None:
        if valid == 0:
            return 0.0
        events_per_window = valid / duration_s * window_s
    if events_per_window <= 0:
        raise ValueError(f"events_per_window must be positive, got {events_per_window}")
    return bad / (budget * events_per_window)


def time_to_exhaustion_s(
    burn_rate: float, *, window_s: float = SLO_WINDOW_30D_S, budget_remaining: float = 1.0
) -> float:
    """window_s * budget_remaining / burn_rate: burn 1 spends a full 30-day budget in 30 days, 14.4 in
    50 h (~2.08 days). `math.inf` when nothing burns; 0.0 when no budget is left."""
    if burn_rate < 0:
        raise ValueError(f"burn rate must be >= 0, got {burn_rate}")
    if budget_remaining <= 0:
        return 0.0
    if burn_rate == 0:
        return math.inf
    return window_s * budget_remaining / burn_rate


def goodput_rps(good_requests: int, duration_s: float) -> float:
    """Requests that met every SLO, per second of the run."""
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    if good_requests < 0:
        raise ValueError(f"good_requests must be >= 0, got {good_requests}")
    return good_requests / duration_s
