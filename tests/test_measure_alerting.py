"""Alert measures per fault (labkit.measure.alerting) on synthetic runs: requests at a known rate with a known
error ratio during a fault, and Alertmanager notifications at chosen times."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import pytest

from labkit.measure.alerting import (
    AlertDelays,
    WindowHistory,
    alert_episodes,
    expected_time_to_fire_s,
    firing_arithmetic,
    measure_alerting,
)
from labkit.measure.recovery import FaultWindow
from labkit.measure.slo import load_slo_spec
from labkit.measure.slo.alerts import ALERT_PROFILES, AlertProfile
from labkit.notifications import AlertNotification

T0 = 1_800_000_000.0
DELAYS = AlertDelays(scrape_interval_s=1.0, evaluation_interval_s=1.0, group_wait_s=1.0)
LAB = ALERT_PROFILES["lab"]
FAST_PAGE = LAB.alerts[0]  # 14.4x over 2m and 10s
ONLY_FAST_PAGE = AlertProfile("lab", LAB.window_divisor, (FAST_PAGE,))
OBJECTIVE = "99% of valid requests succeed"


def _availability():
    return [s for s in load_slo_spec() if s.name == "availability"]


def _samples(*, until: float, rate: float, storm: tuple[float, float], every: int = 2) -> pd.DataFrame:
    """Requests from T0 to `until` at `rate`/s; inside `storm` one in `every` fails with a 500."""
    rows = []
    count = int((until - T0) * rate)
    for i in range(count):
        sent = T0 + i / rate
        failed = storm[0] <= sent < storm[1] and i % every == 0
        rows.append(
            {
                "intended_send": sent,
                "status": 500 if failed else 200,
                "ok": not failed,
                "e2e_s": 0.01,
                "ttft_s": 0.005,
                "itl_s": [],
            }
        )
    return pd.DataFrame(rows)


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def _note(status: str, starts: float, received: float, *, severity: str = "page", fp: str = "fp1"):
    labels = {
        "alertname": f"SloErrorBudgetBurn{severity.capitalize()}",
        "severity": severity,
        "slo": "availability",
        "objective": OBJECTIVE,
        "long_window": FAST_PAGE.long_window,
        "short_window": FAST_PAGE.short_window,
        "alert_profile": "lab",
    }
    return AlertNotification(
        alertname=labels["alertname"],
        status=status,
        labels=labels,
        startsAt=_iso(starts),
        endsAt=_iso(received) if status == "resolved" else "0001-01-01T00:00:00Z",
        fingerprint=fp,
        received_at=_iso(received),
        received_unix=received,
    )


def _measure(notes, *, storm_s: float, baseline_s: float = 200.0, rate: float = 4.0, profile=ONLY_FAST_PAGE):
    start = T0 + baseline_s
    end = start + storm_s
    fault = FaultWindow("f1", "error", "model", start, end)
    return measure_alerting(
        notifications=notes,
        faults=[fault],
        samples=_samples(until=end + 60, rate=rate, storm=(start, end)),
        slos=_availability(),
        profile=profile,
        delays=DELAYS,
    )


def test_the_formula_is_the_long_window_times_the_threshold_over_the_error_ratio_plus_the_delays():
    def expected(**given):
        return expected_time_to_fire_s(
            threshold=0.144, long_window_s=120, short_window_s=10, delays=DELAYS, **given
        )

    assert expected(error_ratio=0.5, fault_s=60) == pytest.approx(120 * 0.144 / 0.5 + 3.0)
    # below the threshold, or a fault shorter than the long window needs: it cannot fire
    assert expected(error_ratio=0.1, fault_s=600) is None
    assert expected(error_ratio=0.5, fault_s=30) is None
    # a young lab: 20 s of good events in the long window fill with errors sooner
    young = expected(error_ratio=0.5, fault_s=60, long_history=WindowHistory(good_s=20))
    assert young == pytest.approx(0.144 * 20 / (0.5 - 0.144) + 3.0)
    # errors already in the long window (a storm just before): only the short window has to cross
    after_storm = WindowHistory(good_s=100, bad_s=20)
    assert expected(error_ratio=1.0, fault_s=3, long_history=after_storm) == pytest.approx(10 * 0.144 + 3.0)


def test_a_storm_pages_at_the_expected_time_and_resolves_after_it():
    start = T0 + 200
    notes = [_note("firing", start + 35.0, start + 36.2), _note("resolved", start + 35.0, start + 60 + 12.5)]
    result = _measure(notes, storm_s=60)
    (measure,) = result.measures
    assert measure.arithmetic.should_fire
    assert measure.error_ratio == pytest.approx(0.5)
    assert measure.rate_per_s == pytest.approx(4.0)
    assert measure.arithmetic.expected_s == pytest.approx(120 * 0.144 / 0.5 + 3.0)
    assert measure.fired_s == pytest.approx(36.2)
    assert measure.starts_s == pytest.approx(35.0)
    assert measure.resolved_after_end_s == pytest.approx(12.5)
    assert measure.outcome == "fired"
    assert result.time_to_page_s == pytest.approx(36.2)
    assert result.false_page_count == 0
    row = result.frame().iloc[0]
    assert row["outcome"] == "fired" and row["kind"] == "error" and row["severity"] == "page"


def test_a_fault_too_short_to_page_is_not_missed():
    result = _measure([], storm_s=10)
    (measure,) = result.measures
    assert not measure.arithmetic.should_fire
    assert measure.arithmetic.why.startswith("too short")
    assert measure.outcome == "silent, as expected"
    assert result.missed == [] and result.time_to_page_s is None


def test_a_page_that_should_have_fired_and_did_not_is_missed():
    result = _measure([], storm_s=60)
    (measure,) = result.measures
    assert measure.arithmetic.should_fire and measure.outcome == "missed"
    assert result.missed == [measure]
    assert result.time_to_page_s is None


def test_a_page_in_the_fault_free_baseline_is_a_false_page():
    baseline = [
        _note("firing", T0 + 50, T0 + 51, fp="early"),
        _note("resolved", T0 + 50, T0 + 70, fp="early"),
    ]
    result = _measure(baseline, storm_s=10)
    assert result.false_page_count == 1
    assert result.false_pages[0].fingerprint == "early"
    # a ticket outside every fault is not a page
    ticket = [_note("firing", T0 + 50, T0 + 51, severity="ticket", fp="t")]
    assert _measure(ticket, storm_s=10).false_page_count == 0


def test_a_page_just_after_the_fault_within_its_short_window_is_the_fault_s():
    end = T0 + 260
    late = [_note("firing", end + 5, end + 6)]
    result = _measure(late, storm_s=60)
    assert result.false_page_count == 0
    assert result.measures[0].fired_s == pytest.approx(66.0)


def test_too_few_events_in_the_short_window_cannot_page():
    # 1 request/s: 10 events in the lab's 10 s short window, fewer than the 20 the spec asks for
    result = _measure([], storm_s=120, rate=1.0)
    (measure,) = result.measures
    assert not measure.arithmetic.should_fire
    assert "too few events" in measure.arithmetic.why and "20" in measure.arithmetic.why
    assert measure.outcome == "silent, as expected"


def test_a_young_lab_pages_sooner_and_every_alert_pair_is_measured():
    result = _measure([], storm_s=30, baseline_s=20, profile=LAB)
    assert len(result.measures) == len(LAB.alerts)
    fast = result.measures[0]
    assert fast.arithmetic.expected_s == pytest.approx(0.144 * 20 / (0.5 - 0.144) + 3.0, rel=0.02)


def test_an_instantaneous_fault_is_measured_until_users_saw_it_recover():
    start = T0 + 200
    fault = FaultWindow("k1", "kill", "model", start, start)
    samples = _samples(until=start + 60, rate=4.0, storm=(start, start + 4), every=1)
    result = measure_alerting(
        notifications=[],
        faults=[fault],
        samples=samples,
        slos=_availability(),
        profile=ONLY_FAST_PAGE,
        delays=DELAYS,
        recovered={"k1": start + 4.0},
    )
    (measure,) = result.measures
    assert measure.fault_end == start + 4.0
    assert (measure.events, measure.bad_events) == (16, 16)  # 4 s at 4/s, every one failed
    assert measure.arithmetic.why.startswith("too short")


def test_repeated_notifications_of_one_alert_are_one_episode():
    notes = [
        _note("firing", T0 + 1, T0 + 2),
        _note("firing", T0 + 1, T0 + 7),
        _note("resolved", T0 + 1, T0 + 9),
    ]
    (episode,) = alert_episodes(notes)
    assert episode.fired_unix == T0 + 2 and episode.resolved_unix == T0 + 9
    assert math.isclose(episode.at, T0 + 1)


def test_a_short_outage_right_after_a_storm_is_expected_to_page_again():
    # the storm's errors are still in the 2 min long window: 3 s of failures cross the 10 s short window
    storm = FaultWindow("f1", "error", "model", T0 + 200, T0 + 260)
    kill = FaultWindow("k1", "kill", "model", T0 + 290, T0 + 290)
    samples = _samples(until=T0 + 350, rate=4.0, storm=(T0 + 200, T0 + 260))
    outage = (samples["intended_send"] >= T0 + 290) & (samples["intended_send"] < T0 + 293)
    samples.loc[outage, ["status", "ok"]] = [502, False]
    result = measure_alerting(
        notifications=[],
        faults=[storm, kill],
        samples=samples,
        slos=_availability(),
        profile=ONLY_FAST_PAGE,
        delays=DELAYS,
        recovered={"k1": T0 + 293.0},
    )
    _, kill_page = result.measures
    assert kill_page.arithmetic.should_fire
    assert kill_page.arithmetic.expected_s == pytest.approx(10 * 0.144 / 1.0 + 3.0)
    assert result.time_to_page_s is None  # the storm should have paged first, and nothing did


def test_an_alert_firing_since_before_the_fault_is_already_firing_not_missed():
    start = T0 + 200
    ongoing = [_note("firing", start - 20, start - 19)]
    result = _measure(ongoing, storm_s=60)
    (measure,) = result.measures
    assert measure.arithmetic.should_fire and measure.outcome == "already firing"
    assert result.missed == []


def test_an_alert_that_flapped_within_the_group_interval_resolves_its_episode():
    # Seen in a real run: the rule fired at 44 s, stopped at 45 s, fired again at 46 s; Alertmanager had
    # notified the first firing only, and its resolved notification carries the second startsAt.
    notes = [
        _note("firing", 1044.0, 1044.6),
        _note("resolved", 1046.0, 1069.6),
        _note("firing", 1090.0, 1090.5),
    ]
    first, second = alert_episodes(notes)
    assert (first.starts_unix, first.fired_unix, first.resolved_unix) == (1044.0, 1044.6, 1069.6)
    assert (second.fired_unix, second.resolved_unix) == (1090.5, None)


def test_a_ticket_reading_a_window_of_the_slower_group_is_expected_that_group_s_interval_later():
    # The lab profile's rules record 48m and 144m every 30 s (rules.long_windows): its tickets on them may
    # fire up to 30 s later than at the lab's interval; pages read no such window and keep their delays.
    delays = AlertDelays(
        scrape_interval_s=1.0, evaluation_interval_s=1.0, group_wait_s=1.0, long_windows=frozenset({"48m"})
    )
    ticket = next(a for a in LAB.alerts if a.long_window == "48m")
    assert delays.for_alert(ticket.long_window, ticket.short_window) == 3.0 + 30.0
    assert delays.for_alert(FAST_PAGE.long_window, FAST_PAGE.short_window) == 3.0
    arithmetic = firing_arithmetic(
        alert=ticket, target=0.99, error_ratio=1.0, fault_s=3600, rate_per_s=10, min_events=20, delays=delays
    )
    assert arithmetic.expected_s == pytest.approx(48 * 60 * 0.03 + 33.0)
