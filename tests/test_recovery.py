"""Recovery measures on hand-made runs (the arithmetic is in the comments)."""

from __future__ import annotations

import pandas as pd
import pytest

from labkit.measure.recovery import FaultWindow, fault_windows_from_journal, recovery_measures


def _samples(rows: list[tuple[float, float, bool]]) -> pd.DataFrame:
    """(intended_send, e2e_s, ok) per request."""
    return pd.DataFrame(rows, columns=["intended_send", "e2e_s", "ok"])


def test_a_kill_detected_recovered_and_requests_lost() -> None:
    # One request a second, 0.5 s each. Kill at t=10 (instantaneous). Requests sent at 10 and 11 fail
    # after 0.1 s; 12 succeeds.
    rows = [(float(t), 0.5, True) for t in range(5, 10)]
    rows += [(10.0, 0.1, False), (11.0, 0.1, False), (12.0, 0.5, True), (13.0, 0.5, True)]
    out = recovery_measures([FaultWindow("f1", "kill", "model", 10.0, 10.0)], _samples(rows))
    (row,) = out.to_dict("records")
    assert row["detected"] == pytest.approx(10.1)  # first bad completion
    assert row["time_to_detect_s"] == pytest.approx(0.1)
    assert row["recovered"] == pytest.approx(12.5)  # first good request sent after the last bad one
    assert row["time_to_recover_s"] == pytest.approx(2.5)  # from the kill (end == start)
    assert row["requests_lost"] == 2 and row["requests_slow"] == 0
    # In the window: the 9 s request completing at 9.5 is before the fault; 10, 11, 12, 13 are in it.
    assert row["requests_in_window"] == 4


def test_latency_fault_is_slow_not_lost_and_recovers_after_its_end() -> None:
    # Latency fault 20..30: requests take 4 s (> 3 s threshold) from 20 to 28, normal again from 30.
    rows = [(float(t), 0.5, True) for t in range(15, 20)]
    rows += [(float(t), 4.0, True) for t in range(20, 30, 2)]
    rows += [(30.0, 0.5, True), (31.0, 0.5, True)]
    out = recovery_measures([FaultWindow("lat", "latency", "model", 20.0, 30.0)], _samples(rows))
    (row,) = out.to_dict("records")
    assert row["time_to_detect_s"] == pytest.approx(4.0)  # the first slow request completes at 24
    assert row["time_to_recover_s"] == pytest.approx(0.5)  # sent at 30 (end), done at 30.5
    assert row["requests_lost"] == 0 and row["requests_slow"] == 5


def test_a_fault_users_never_noticed_has_no_detection() -> None:
    rows = [(float(t), 0.5, True) for t in range(10)]
    out = recovery_measures([FaultWindow("p", "pause", "prometheus", 3.0, 6.0)], _samples(rows))
    (row,) = out.to_dict("records")
    assert row["detected"] is None and row["time_to_recover_s"] is None
    assert row["requests_lost"] == 0 and row["requests_in_window"] == 7


def test_each_fault_answers_only_for_requests_before_the_next_one() -> None:
    # Two kills at 10 and 20; failures at 10 and 20 only.
    rows = [(float(t), 0.2, t not in (10, 20)) for t in range(5, 25)]
    windows = [FaultWindow("a", "kill", "model", 10.0, 10.0), FaultWindow("b", "kill", "wrapper", 20.0, 20.0)]
    out = recovery_measures(windows, _samples(rows))
    assert list(out["requests_lost"]) == [1, 1]
    assert list(out["recovered"]) == pytest.approx([11.2, 21.2])


def test_no_recovery_within_the_run_is_reported_as_none() -> None:
    rows = [(0.0, 0.2, True), (1.0, 0.2, False), (2.0, 0.2, False)]
    (row,) = recovery_measures([FaultWindow("k", "kill", "model", 1.0, 1.0)], _samples(rows)).to_dict(
        "records"
    )
    assert row["recovered"] is None and row["time_to_recover_s"] is None and row["requests_lost"] == 2


def test_windows_from_the_journal_pair_start_and_end() -> None:
    events = [
        {"kind": "load_started", "wall_time": 0.0},
        {"kind": "fault_start", "fault_id": "2", "fault_kind": "pause", "target": "model", "wall_time": 5.0,
         "duration_s": 3},
        {"kind": "fault_start", "fault_id": "1", "fault_kind": "kill", "target": "model", "wall_time": 1.0},
        # The experiment journals an instantaneous fault's end when its call returns: a kill 0.4 ms later,
        # a restart once the service is back. Its window is still its start (users felt what follows).
        {"kind": "fault_end", "fault_id": "1", "wall_time": 1.0004},
        {"kind": "fault_start", "fault_id": "3", "fault_kind": "restart", "target": "wrapper",
         "wall_time": 9.0},
        {"kind": "fault_end", "fault_id": "3", "wall_time": 11.5},
        {"kind": "fault_start", "fault_id": "4", "fault_kind": "latency", "target": "wrapper",
         "wall_time": 20.0, "duration_s": 10},
        {"kind": "fault_end", "fault_id": "4", "wall_time": 26.0},
    ]  # fmt: skip
    windows = fault_windows_from_journal(events)
    assert [(w.fault_id, w.kind, w.start, w.end) for w in windows] == [
        ("1", "kill", 1.0, 1.0),
        ("2", "pause", 5.0, 8.0),  # no end journaled (the experiment died): its planned end
        ("3", "restart", 9.0, 9.0),
        ("4", "latency", 20.0, 26.0),  # a lasting fault ends when it was reverted
    ]


def test_the_last_request_of_a_run_counts_at_unix_time_magnitudes() -> None:
    # A horizon of `last send + 1e-9` vanished at 1.7e9 s (the float step there is ~2.4e-7), dropping the
    # run's last request from the last fault's window.
    t = 1.7e9
    samples = pd.DataFrame({"intended_send": [t + 1, t + 2], "e2e_s": [0.1, 0.1], "ok": [False, False]})
    (row,) = recovery_measures([FaultWindow("f1", "kill", "model", t, t)], samples).to_dict("records")
    assert row["requests_lost"] == 2 and row["requests_in_window"] == 2


def test_a_request_in_flight_when_the_next_fault_strikes_is_that_faults() -> None:
    # An error storm from 10 to 20 s, users fine again from 20 s; a kill at 30 s fails a request sent at
    # 29.97 s and still in flight. It is the kill's lost request: the storm recovered at 20.1 s.
    rows = [
        (12.0, 0.1, False),
        (19.5, 0.1, False),
        (20.0, 0.1, True),
        (25.0, 0.1, True),
        (29.97, 0.05, False),
    ]
    rows += [(30.2, 0.1, False), (31.0, 0.1, True)]
    windows = [
        FaultWindow("storm", "error", "model", 10.0, 20.0),
        FaultWindow("kill", "kill", "model", 30.0, 30.0),
    ]
    out = recovery_measures(windows, _samples(rows)).set_index("fault_id")
    assert out.loc["storm", "recovered"] == pytest.approx(20.1)
    assert out.loc["storm", "requests_lost"] == 2
    assert out.loc["kill", "requests_lost"] == 2
    assert out.loc["kill", "time_to_detect_s"] == pytest.approx(0.02)
    assert out.loc["kill", "recovered"] == pytest.approx(31.1)


def test_budget_burned_is_the_faults_bad_requests_over_the_runs_error_budget() -> None:
    # 20 requests, a 10 % error budget allows 2 bad ones. A kill loses 2 and a latency fault slows 1 of
    # its own: 2 / 2 = 1.0 and 1 / 2 = 0.5; without an error budget the column is None.
    rows = [(float(t), 0.5, True) for t in range(20)]
    rows[10] = (10.0, 0.1, False)
    rows[11] = (11.0, 0.1, False)
    rows[15] = (15.0, 4.0, True)
    windows = [
        FaultWindow("f1", "kill", "model", 10.0, 10.0),
        FaultWindow("f2", "latency", "model", 15.0, 16.0),
    ]
    out = recovery_measures(windows, _samples(rows), error_budget=0.1)
    assert list(out["budget_burned"]) == pytest.approx([1.0, 0.5])
    assert recovery_measures(windows, _samples(rows))["budget_burned"].isna().all()
    quiet = recovery_measures(
        [FaultWindow("f", "latency", "model", 3.0, 4.0)], _samples(rows[:5]), error_budget=0.1
    )
    assert list(quiet["budget_burned"]) == [0.0]


def test_the_default_error_budget_is_the_specs_tightest() -> None:
    from labkit.measure.recovery import default_error_budget
    from labkit.measure.slo import load_slo_spec

    slos = load_slo_spec()
    targets = [o.target for slo in slos for o in slo.objectives]
    assert default_error_budget(slos) == pytest.approx(1 - max(targets))
    assert default_error_budget([]) is None
