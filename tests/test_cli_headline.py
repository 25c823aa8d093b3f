"""What `labkit run` prints after a capacity search or a remediation A/B: the headline's finding in a line."""

from __future__ import annotations

from labkit.cli.runs import _headline_lines


def test_a_capacity_search_prints_its_knee_interval_and_limit() -> None:
    headline = {"max_rate_meeting_slos": 5.19, "max_rate_meeting_slos_low": 5.19,
                "max_rate_meeting_slos_high": 5.66, "limiting_slo": "saturation"}  # fmt: skip
    assert _headline_lines(headline) == [
        "capacity: 5.19 requests/s meet every SLO [5.19 to 5.66]; limited by saturation"
    ]


def test_a_remediation_ab_prints_each_verdict_with_its_interval() -> None:
    headline = {"ab_verdicts": {"latency": "helps", "cpu_stress": "no difference"},
                "mttr_difference_s": {"latency": -4.1, "cpu_stress": None},
                "mttr_difference_low_s": {"latency": -4.8},
                "mttr_difference_high_s": {"latency": -3.0}}  # fmt: skip
    assert _headline_lines(headline) == [
        "remediation A/B, latency: helps (time to recover -4.1 s with remediation, interval -4.8 to -3.0 s)",
        "remediation A/B, cpu_stress: no difference at this N",
    ]


def test_other_runs_print_nothing_more() -> None:
    assert _headline_lines({"availability": 1.0, "max_rate_meeting_slos": None}) == []
