"""Recovery measures of many faults, summarised per fault kind: each measure's median and spread with the
number of faults behind it (`Spread`, `summarize_by_kind`), and the difference between two groups of runs
(remediation off and on) with a bootstrap interval (`bootstrap_difference`). The A/B scenario and the
scorecard both read their figures from here; the measures themselves are labkit.measure.recovery's.

The spread is the interquartile range (25th to 75th percentile, linear interpolation): with one fault it is
that fault's value, and the count says how much to trust it. The bootstrap is the percentile bootstrap of
the difference of means (each group resampled with replacement on its own, seeded), written here with numpy
rather than taking scipy for one function (docs/decisions.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "RESILIENCE_MEASURES",
    "Difference",
    "Spread",
    "bootstrap_difference",
    "spread",
    "summarize_by_kind",
]

# What the scorecard and the A/B report per fault kind (columns of labkit.measure.recovery.RECOVERY_COLUMNS),
# with their unit; for all of them less is better.
RESILIENCE_MEASURES: dict[str, str] = {
    "time_to_detect_s": "s",
    "time_to_recover_s": "s",
    "requests_lost": "requests",
    "budget_burned": "share of the run's error budget",
}
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Spread:
    """A measure over `n` values: median, and the interquartile range `low`..`high` (None when n = 0)."""

    n: int
    median: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    """`value` as a finite float; None for None, booleans, text and NaN or infinity."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _finite(values: Iterable[Any]) -> np.ndarray:
    return np.asarray([n for n in map(_number, values) if n is not None], dtype=float)


def spread(values: Iterable[Any]) -> Spread:
    """Median and interquartile range of the finite numbers of `values` (None and NaN are left out and not
    counted)."""
    data = _finite(values)
    if data.size == 0:
        return Spread(0, None, None, None)
    low, median, high = np.percentile(data, [25, 50, 75])
    return Spread(int(data.size), float(median), float(low), float(high))


def summarize_by_kind(
    recovery: pd.DataFrame,
    measures: Sequence[str] = tuple(RESILIENCE_MEASURES),
    *,
    run_column: str | None = None,
) -> pd.DataFrame:
    """One row per fault kind of `recovery` (rows of RECOVERY_COLUMNS, from one run or many), with `faults`
    (how many rows of that kind) and, per measure, `<measure>_n`, `_median`, `_low`, `_high`. A measure
    that is None for a fault (no bad request: nothing to detect or recover) is
    left out of that measure's count.

    With `run_column` (a column naming each row's run), also `runs` (how many runs had a fault of that
    kind) and, per measure, `<measure>_runs` (how many runs gave it a value): faults of one run share its
    conditions, so the runs say how far a figure generalises."""
    with_runs = run_column is not None
    parts = ("n", "runs", "median", "low", "high") if with_runs else ("n", "median", "low", "high")
    columns = ["kind", "faults", *(["runs"] if with_runs else [])] + [
        f"{m}_{part}" for m in measures for part in parts
    ]
    if recovery.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for kind, group in recovery.groupby("kind", sort=True):
        row: dict[str, Any] = {"kind": kind, "faults": len(group)}
        if run_column is not None:
            row["runs"] = int(group[run_column].nunique())
        for measure in measures:
            values = group[measure] if measure in group else pd.Series([None] * len(group), index=group.index)
            for part, value in spread(values).as_dict().items():
                row[f"{measure}_{part}"] = value
            if run_column is not None:
                has_value = values.map(lambda v: _number(v) is not None).astype(bool)
                row[f"{measure}_runs"] = int(group.loc[has_value, run_column].nunique())
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class Difference:
    """`b - a` of the means of two groups, with the percentile bootstrap interval at `confidence`; None
    figures when a group has no value."""

    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    difference: float | None
    low: float | None
    high: float | None
    confidence: float
    resamples: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of zero."""
        return self.low is not None and self.high is not None and (self.high < 0 or self.low > 0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_difference(
    a: Iterable[Any],
    b: Iterable[Any],
    *,
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Difference:
    """The difference of means `mean(b) - mean(a)` and its percentile bootstrap interval: `resamples` times,
    each group is resampled with replacement on its own (numpy's seeded generator) and the difference of the
    resampled means kept; the interval is the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of
    those. With one value in a group that group never varies; with none, every figure is None."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be 1 or more, not {resamples}")
    xa, xb = _finite(a), _finite(b)
    if xa.size == 0 or xb.size == 0:
        mean_a = float(xa.mean()) if xa.size else None
        mean_b = float(xb.mean()) if xb.size else None
        return Difference(int(xa.size), int(xb.size), mean_a, mean_b, None, None, None, confidence, resamples)
    rng = np.random.default_rng(seed)
    means_a = rng.choice(xa, size=(resamples, xa.size), replace=True).mean(axis=1)
    means_b = rng.choice(xb, size=(resamples, xb.size), replace=True).mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means_b - means_a, [tail, 1 - tail])
    return Difference(
        int(xa.size),
        int(xb.size),
        float(xa.mean()),
        float(xb.mean()),
        float(xb.mean() - xa.mean()),
        float(low),
        float(high),
        confidence,
        resamples,
    )
