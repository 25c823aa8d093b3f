"""The remediation A/B: the same fault and load run many times with remediation off and on, per fault kind
each arm's measures with their spread and count, the differences (on - off) with a bootstrap interval, and a
verdict from a stated test (`AbTest`: `helps`, `hurts`, `no difference`; labkit.verdicts).

The test's measure is the time to recover counted from the fault's start (`time_to_recover_from_start_s`),
the same instant in both arms: remediation's whole effect is to end the fault earlier, and the recovery
measures' own time to recover counts from the fault's end, which would hide it. A fault no request noticed
counts 0 s (users saw nothing); one not recovered by the end of its run counts up to that end, a lower bound
(`censored`), and a verdict the censoring could reverse is not given. SLO.md, "The remediation A/B".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from labkit.measure.resilience import (
    BOOTSTRAP_RESAMPLES,
    RESILIENCE_MEASURES,
    Difference,
    bootstrap_difference,
    spread,
)
from labkit.verdicts import AbVerdict

__all__ = [
    "AB_MEASURES",
    "AB_TEST_MEASURE",
    "DEFAULT_MIN_EFFECT_S",
    "MIN_RUNS_PER_ARM",
    "AbArm",
    "AbDecision",
    "AbTest",
    "ab_rows",
    "ab_verdict",
    "analyze_arms",
]

# The test's measure: from the fault's start to the first good request after it (SLO.md).
AB_TEST_MEASURE = "time_to_recover_from_start_s"
# What the A/B reports per kind and arm, with units; less is better for every one.
AB_MEASURES: dict[str, str] = {
    "time_to_detect_s": RESILIENCE_MEASURES["time_to_detect_s"],
    AB_TEST_MEASURE: "s",
    "requests_lost": RESILIENCE_MEASURES["requests_lost"],
    "budget_burned": RESILIENCE_MEASURES["budget_burned"],
}
# A percentile bootstrap of 2 values per arm has 3 distinct resampled means a side and an interval as narrow
# as the values themselves: below 3 runs an arm never carries a verdict.
MIN_RUNS_PER_ARM = 3
# An interval must clear zero by this much (seconds) before a difference of the time to recover counts: a
# small-N percentile bootstrap underestimates the spread, and a second is below what a run can resolve
# (Prometheus scrapes and the remediation loop reads every second).
DEFAULT_MIN_EFFECT_S = 1.0


def ab_rows(recovery: pd.DataFrame, *, run_end: float | None) -> pd.DataFrame:
    """`recovery` (rows of labkit.measure.recovery.RECOVERY_COLUMNS, one run) with the A/B's columns:
    `noticed` (some request went bad), `censored` (noticed, not recovered by `run_end`) and
    `time_to_recover_from_start_s`: recovered - start; 0 for a fault nobody noticed (with 0 requests lost and
    0 budget burned); run_end - start when censored (a lower bound; None without `run_end`)."""
    frame = recovery.copy()
    if frame.empty:
        return frame.assign(noticed=pd.Series(dtype=bool), censored=pd.Series(dtype=bool)).assign(
            **{AB_TEST_MEASURE: pd.Series(dtype=float)}
        )
    noticed = frame["time_to_detect_s"].notna()
    recovered = frame["recovered"].astype(float)
    start = frame["start"].astype(float)
    censored = noticed & recovered.isna()
    horizon = math.nan if run_end is None else float(run_end)
    from_start = (recovered - start).where(~censored, horizon - start).where(noticed, 0.0)
    frame["noticed"] = noticed
    frame["censored"] = censored
    frame[AB_TEST_MEASURE] = from_start.clip(lower=0.0)
    frame.loc[~noticed, "requests_lost"] = 0
    if "budget_burned" in frame:
        burned = frame["budget_burned"].astype(float)
        frame["budget_burned"] = burned.where(noticed | burned.isna(), 0.0)
    return frame


@dataclass(frozen=True)
class AbTest:
    """The stated test: per fault kind, the percentile bootstrap interval (`confidence`, `resamples`,
    `seed`) of mean(on) - mean(off) of the time to recover from the fault's start. `helps` when the whole
    interval lies below -`min_effect_s`, `hurts` when it lies above +`min_effect_s`, else `no difference`;
    never with fewer than `min_runs` runs in either arm, nor when the censored (lower-bound) values could
    reverse the verdict."""

    confidence: float = 0.95
    resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = 0
    min_runs: int = MIN_RUNS_PER_ARM
    min_effect_s: float = DEFAULT_MIN_EFFECT_S

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1, not {self.confidence}")
        if self.min_runs < 2:
            raise ValueError(
                f"min_runs must be 2 or more (never a verdict from one run), not {self.min_runs}"
            )
        if not (math.isfinite(self.min_effect_s) and self.min_effect_s >= 0):
            raise ValueError(f"min_effect_s must be 0 or more, not {self.min_effect_s}")

    def describe(self) -> str:
        """The test in one paragraph, as the report and remediation_ab.json state it."""
        return (
            f"Per fault kind: the difference on - off of the mean time to recover, counted from the fault's "
            f"start (a fault no request noticed counts 0 s; one not recovered by the end of its run counts "
            f"to that end, a lower bound), with its {self.confidence:.0%} percentile bootstrap interval "
            f"({self.resamples} resamples of each arm, seed {self.seed}). helps: the whole interval lies "
            f"below -{self.min_effect_s:g} s; hurts: above +{self.min_effect_s:g} s; otherwise no difference "
            f"at this N. No verdict with fewer than {self.min_runs} runs in an arm, nor when lower-bound "
            "values in the arm that would have to be shorter could reverse it."
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "measure": AB_TEST_MEASURE, "description": self.describe()}


@dataclass(frozen=True)
class AbDecision:
    """A verdict, the difference it was read from, and why, in one sentence."""

    verdict: AbVerdict
    difference: Difference
    why: str


def _seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:+.2f} s"


def ab_verdict(
    off: Iterable[Any],
    on: Iterable[Any],
    *,
    test: AbTest = AbTest(),
    censored_off: int = 0,
    censored_on: int = 0,
) -> AbDecision:
    """The verdict of `test` on the times to recover (from the fault's start) of the runs without (`off`)
    and with (`on`) remediation; `censored_*`: how many values of each arm are lower bounds."""
    difference = bootstrap_difference(
        off, on, confidence=test.confidence, resamples=test.resamples, seed=test.seed
    )
    n_off, n_on = difference.n_a, difference.n_b
    if min(n_off, n_on) < test.min_runs:
        return AbDecision(
            "no difference",
            difference,
            f"{n_off} run(s) off and {n_on} on: a verdict needs at least {test.min_runs} in each arm",
        )
    low, high = difference.low, difference.high
    assert low is not None and high is not None  # both arms have values
    interval = f"interval {_seconds(low)} to {_seconds(high)}"
    margin = test.min_effect_s
    if high < -margin:
        if censored_on:
            return AbDecision(
                "no difference",
                difference,
                f"{interval} lies below -{margin:g} s, but {censored_on} run(s) with remediation did not "
                "recover by their end (lower bounds): their true times could close the gap",
            )
        return AbDecision("helps", difference, f"{interval} lies wholly below -{margin:g} s")
    if low > margin:
        if censored_off:
            return AbDecision(
                "no difference",
                difference,
                f"{interval} lies above +{margin:g} s, but {censored_off} run(s) without remediation did "
                "not recover by their end (lower bounds): their true times could close the gap",
            )
        return AbDecision("hurts", difference, f"{interval} lies wholly above +{margin:g} s")
    return AbDecision("no difference", difference, f"{interval} is not wholly beyond ±{margin:g} s of zero")


@dataclass
class AbArm:
    """One experiment of the A/B: its place in the run order (1-based), the fault kind, whether remediation
    acted (`remediation`; off: the same loop in dry run), its run directory relative to the A/B's, the
    experiment's verdict, the restarts remediation made, when its method ended, and its A/B rows
    (`ab_rows`, one per fault)."""

    order: int
    kind: str
    remediation: bool
    run_dir: str
    verdict: str | None = None
    remediation_actions: int = 0
    run_end: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def arm(self) -> str:
        return "on" if self.remediation else "off"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "arm": self.arm}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AbArm:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


def _clean(value: Any) -> Any:
    """A JSON value: NaN and numpy scalars as plain Python (None for NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


def arm_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """`ab_rows` output as JSON-ready dicts."""
    return [{str(k): _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _values(arms: Sequence[AbArm], measure: str) -> list[Any]:
    return [row.get(measure) for arm in arms for row in arm.rows]


def analyze_arms(arms: Sequence[AbArm], test: AbTest = AbTest()) -> dict[str, Any]:
    """Per fault kind of `arms`: per arm (off, on) the runs, the spread of each of AB_MEASURES, the faults
    nobody noticed and the censored ones; per measure the difference on - off with its interval; the
    verdict of `test` with why. Keyed by kind, in the order the kinds first ran."""
    kinds = list(dict.fromkeys(arm.kind for arm in arms))
    out: dict[str, Any] = {}
    for kind in kinds:
        sides = {side: [a for a in arms if a.kind == kind and a.arm == side] for side in ("off", "on")}
        per_arm: dict[str, dict[str, Any]] = {
            side: {
                "runs": len(group),
                "faults": sum(len(a.rows) for a in group),
                "unnoticed": sum(not r.get("noticed") for a in group for r in a.rows),
                "censored": sum(bool(r.get("censored")) for a in group for r in a.rows),
                "remediation_actions": sum(a.remediation_actions for a in group),
                "measures": {m: spread(_values(group, m)).as_dict() for m in AB_MEASURES},
            }
            for side, group in sides.items()
        }
        differences = {
            m: bootstrap_difference(
                _values(sides["off"], m),
                _values(sides["on"], m),
                confidence=test.confidence,
                resamples=test.resamples,
                seed=test.seed,
            ).as_dict()
            for m in AB_MEASURES
        }
        decision = ab_verdict(
            _values(sides["off"], AB_TEST_MEASURE),
            _values(sides["on"], AB_TEST_MEASURE),
            test=test,
            censored_off=per_arm["off"]["censored"],
            censored_on=per_arm["on"]["censored"],
        )
        out[kind] = {
            "arms": per_arm,
            "differences": differences,
            "verdict": decision.verdict,
            "why": decision.why,
        }
    return out
