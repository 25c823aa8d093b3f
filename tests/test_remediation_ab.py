"""labkit.measure.remediation_ab: the A/B's rows (unnoticed, censored), its test's verdicts on hand-made
arms (helps, hurts, no difference, too few runs, censored values) and the per-kind analysis."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from labkit.measure.remediation_ab import (
    AB_MEASURES,
    AB_TEST_MEASURE,
    AbArm,
    AbTest,
    ab_rows,
    ab_verdict,
    analyze_arms,
)
from labkit.verdicts import AB_VERDICT_TEXT, MEANING, tone

TEST = AbTest(resamples=2000, seed=3)


def _recovery(**fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "fault_id": "f1",
        "kind": "latency",
        "target": "model",
        "start": 100.0,
        "end": 110.0,
        "detected": None,
        "recovered": None,
        "time_to_detect_s": None,
        "time_to_recover_s": None,
        "requests_lost": 0,
        "requests_slow": 0,
        "requests_in_window": 40,
        "budget_burned": 0.0,
    }
    return {**row, **fields}


def test_rows_count_from_the_fault_s_start_zero_when_unnoticed_and_the_run_s_end_when_censored() -> None:
    recovery = pd.DataFrame(
        [
            _recovery(detected=101.0, recovered=106.0, time_to_detect_s=1.0, time_to_recover_s=0.0,
                      requests_lost=2, budget_burned=0.5),
            _recovery(),  # nobody noticed it
            _recovery(detected=101.0, time_to_detect_s=1.0, requests_lost=4, budget_burned=1.5),
        ]
    )  # fmt: skip
    rows = ab_rows(recovery, run_end=125.0)
    assert rows[AB_TEST_MEASURE].tolist() == [6.0, 0.0, 25.0]
    assert rows["noticed"].tolist() == [True, False, True]
    assert rows["censored"].tolist() == [False, False, True]
    assert rows["requests_lost"].tolist() == [2, 0, 4]
    # the remediated fault ended at the restart (106 < its planned 110): the measure does not depend on it
    assert math.isnan(ab_rows(recovery, run_end=None)[AB_TEST_MEASURE].iloc[2])


def test_a_clearly_shorter_recovery_with_remediation_helps() -> None:
    decision = ab_verdict([14.1, 13.8, 14.4, 14.0], [5.2, 6.0, 4.8, 5.5], test=TEST)
    assert decision.verdict == "helps", decision.why
    assert decision.difference.high is not None and decision.difference.high < -TEST.min_effect_s
    assert "wholly below" in decision.why


def test_a_clearly_longer_recovery_with_remediation_hurts() -> None:
    decision = ab_verdict([5.0, 5.5, 4.8], [9.0, 9.6, 8.7], test=TEST)
    assert decision.verdict == "hurts", decision.why


def test_overlapping_arms_make_no_difference() -> None:
    decision = ab_verdict([8.0, 12.0, 9.5, 11.0], [9.0, 11.5, 8.5, 12.5], test=TEST)
    assert decision.verdict == "no difference"
    assert decision.difference.low is not None and decision.difference.low < 0 < decision.difference.high


def test_an_interval_that_excludes_zero_by_less_than_the_minimum_effect_makes_no_difference() -> None:
    # cpu_stress-like: a restart cannot cure it; the arms differ by a few tenths of a second, steadily
    decision = ab_verdict([10.0, 10.1, 10.2, 10.1], [9.6, 9.7, 9.6, 9.8], test=TEST)
    assert decision.difference.excludes_zero
    assert decision.verdict == "no difference", decision.why


@pytest.mark.parametrize(("off", "on"), [([14.0], [5.0]), ([14.0, 14.2], [5.0, 5.1]), ([], [5.0, 5.1, 5.3])])
def test_too_few_runs_never_give_a_verdict_however_clear(off: list[float], on: list[float]) -> None:
    decision = ab_verdict(off, on, test=TEST)
    assert decision.verdict == "no difference"
    assert "at least 3" in decision.why


def test_censored_values_in_the_arm_that_must_be_shorter_withhold_the_verdict() -> None:
    helps = ab_verdict([14.0, 14.1, 14.2], [5.0, 5.1, 5.3], test=TEST, censored_on=1)
    assert helps.verdict == "no difference" and "lower bounds" in helps.why
    # censored values in the other arm only make the verdict more certain
    assert ab_verdict([14.0, 14.1, 14.2], [5.0, 5.1, 5.3], test=TEST, censored_off=3).verdict == "helps"
    hurts = ab_verdict([5.0, 5.1, 5.3], [14.0, 14.1, 14.2], test=TEST, censored_off=1)
    assert hurts.verdict == "no difference"


def test_the_test_refuses_settings_that_allow_a_verdict_from_one_run() -> None:
    with pytest.raises(ValueError, match="never a verdict from one run"):
        AbTest(min_runs=1)
    with pytest.raises(ValueError, match="min_effect_s"):
        AbTest(min_effect_s=-1)
    assert "below -1 s" in TEST.describe() and "at least" not in TEST.describe()


def _arm(order: int, on: bool, from_start: float | None, **fields: object) -> AbArm:
    row = {
        "kind": "latency",
        "noticed": from_start != 0,
        "censored": False,
        "time_to_detect_s": None if from_start == 0 else 1.0,
        AB_TEST_MEASURE: from_start,
        "requests_lost": 0,
        "budget_burned": 0.5 if on else 2.0,
        **fields,
    }
    return AbArm(order=order, kind="latency", remediation=on, run_dir=f"arms/{order:02d}", rows=[row])


def test_the_analysis_gives_each_arm_s_spreads_the_differences_and_the_verdict() -> None:
    arms = [_arm(i + 1, i % 2 == 1, value) for i, value in enumerate([14.0, 5.0, 14.5, 6.0, 13.5, 5.5])]
    result = analyze_arms(arms, TEST)["latency"]
    assert result["verdict"] == "helps"
    assert result["arms"]["off"]["runs"] == 3 and result["arms"]["on"]["runs"] == 3
    assert result["arms"]["off"]["measures"][AB_TEST_MEASURE]["median"] == 14.0
    assert result["arms"]["on"]["measures"][AB_TEST_MEASURE]["n"] == 3
    assert set(result["differences"]) == set(AB_MEASURES)
    assert result["differences"]["budget_burned"]["difference"] == pytest.approx(-1.5)
    assert result["differences"][AB_TEST_MEASURE]["difference"] == pytest.approx(5.5 - 14.0)


def test_unnoticed_faults_count_zero_and_are_counted() -> None:
    arms = [_arm(i + 1, i % 2 == 1, 0.0) for i in range(6)]
    result = analyze_arms(arms, TEST)["latency"]
    assert result["verdict"] == "no difference"
    assert result["arms"]["on"]["unnoticed"] == 3
    assert result["arms"]["on"]["measures"]["time_to_detect_s"]["n"] == 0


def test_the_words_are_declared_with_their_meaning_and_tone() -> None:
    assert AB_VERDICT_TEXT["no difference"] == "no difference at this N"
    assert all(MEANING[word] for word in AB_VERDICT_TEXT)
    assert (tone("helps"), tone("hurts"), tone("no difference")) == ("good", "bad", "neutral")
