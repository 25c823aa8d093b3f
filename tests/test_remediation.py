"""The remediation policy's decisions, driven by a scripted signal and a manual clock.

The backend here only records what it was asked to do: the decision logic is what is under test
(the real restart through the supervisor is exercised by the integration tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labkit.chaos import (
    RemediationPolicy,
    Remediator,
    alert_refusal,
    lab_alert_names,
    p95_latency_query,
)
from labkit.errors import ConfigError
from labkit.measure.slo.rules import write_rules_file
from labkit.notifications import AlertNotification


class RecordingBackend:
    def __init__(self, fail: bool = False) -> None:
        self.restarts: list[str] = []
        self.reasons: list[str] = []  # lab_remediation_actions_total's reason label of each restart
        self.fail = fail

    def restart(self, service: str, *, remediation_reason: str | None = None) -> None:
        if self.fail:
            raise RuntimeError("supervisor refused")
        assert remediation_reason  # every remediation action says why, for its metric
        self.restarts.append(service)
        self.reasons.append(remediation_reason)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _remediator(
    values: list[float | None], **policy: Any
) -> tuple[Remediator, RecordingBackend, Clock, list]:
    feed = iter(values)
    backend, clock, journal = RecordingBackend(), Clock(), []
    rem = Remediator(
        policy=RemediationPolicy(**policy),
        signal=lambda: next(feed),
        backend=backend,
        journal=lambda kind, **fields: journal.append((kind, fields)),
        clock=clock,
    )
    return rem, backend, clock, journal


def _steps(rem: Remediator, clock: Clock, n: int, dt: float) -> list[str]:
    out = []
    for _ in range(n):
        out.append(rem.step().outcome)
        clock.now += dt
    return out


def test_acts_only_after_k_consecutive_breaches() -> None:
    rem, backend, clock, _ = _remediator([5, 5, 1, 5, 5, 5], threshold_s=3, breaches_to_act=3)
    assert _steps(rem, clock, 6, 5) == ["breach", "breach", "ok", "breach", "breach", "acted"]
    assert backend.restarts == ["wrapper"] and backend.reasons == ["p95_above_3s"]


def test_cooldown_then_cap_bound_a_fault_that_never_ends() -> None:
    # The signal breaches forever (a fault the restart cannot cure). k=1, cooldown 20 s, at most 2 actions
    # per 600 s, a step every 5 s: act at 0 s, cooldown until 20 s, act at 20 s, then capped until 600 s.
    rem, backend, clock, _ = _remediator(
        [10.0] * 200, threshold_s=3, breaches_to_act=1, cooldown_s=20, max_actions=2, cap_window_s=600
    )
    outcomes = _steps(rem, clock, 40, 5)  # 200 s
    assert outcomes[:5] == ["acted", "cooldown", "cooldown", "cooldown", "acted"]
    assert set(outcomes[5:]) == {"cooldown", "capped"} and outcomes[-1] == "capped"
    assert len(backend.restarts) == 2
    # Once the first action leaves the cap window (600 s after it), one more is allowed.
    clock.now = 1_000.0 + 601
    assert rem.step().outcome == "acted"
    assert len(backend.restarts) == 3


def test_dry_run_journals_the_decision_and_restarts_nothing() -> None:
    rem, backend, clock, journal = _remediator([9, 9], threshold_s=3, breaches_to_act=2, dry_run=True)
    assert _steps(rem, clock, 2, 5) == ["breach", "dry_run"]
    assert backend.restarts == []
    kind, fields = journal[-1]
    assert kind == "remediation_action" and fields["dry_run"] is True
    assert fields["value_s"] == 9 and fields["threshold_s"] == 3 and fields["outcome"] == "dry_run"


def test_every_decision_is_journaled_with_the_values_it_saw() -> None:
    rem, _, clock, journal = _remediator([None, 2.0, 4.0], threshold_s=3, breaches_to_act=5)
    _steps(rem, clock, 3, 5)
    assert [(k, f["outcome"], f["value_s"]) for k, f in journal] == [
        ("remediation_decision", "no_data", None),
        ("remediation_decision", "ok", 2.0),
        ("remediation_decision", "breach", 4.0),
    ]


def test_a_failing_signal_or_action_is_journaled_not_raised() -> None:
    def broken() -> float:
        raise OSError("connection refused")

    rem = Remediator(policy=RemediationPolicy(), signal=broken, backend=RecordingBackend())
    decision = rem.step()
    assert decision.outcome == "no_data" and "connection refused" in decision.detail
    rem, backend, _clock, _ = _remediator([9.0], breaches_to_act=1)
    backend.fail = True
    assert rem.step().outcome == "action_failed"


def test_bad_policy_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="breaches_to_act"):
        RemediationPolicy.from_options(breaches_to_act=0)
    with pytest.raises(ConfigError, match="target"):
        RemediationPolicy.from_options(target="database")


def test_p95_query_uses_the_wrappers_histogram() -> None:
    assert p95_latency_query(15) == (
        "histogram_quantile(0.95, sum by (le) (rate(llm_request_duration_seconds_bucket[15s])))"
    )


# ---- remediation on alerts ------------------------------------------------------------------------------
# A fake of Backend.alert_notifications: the real feed needs a lab with Alertmanager and a burning SLO; what
# is under test here is what the remediator does with the notifications it reads.


def _note(
    alertname: str, status: str = "firing", received: float = 1_000.0, **labels: str
) -> AlertNotification:
    return AlertNotification(
        alertname=alertname,
        status=status,  # type: ignore[arg-type]
        labels={"alertname": alertname, "severity": "page", **labels},
        startsAt="2025-01-01T00:00:00.5Z",
        received_at="2025-01-01T00:00:02Z",
        received_unix=received,
    )


class FakeAlerts:
    """The lab's notification journal: a list, read from an index on, as the ALERTS_ROUTE answers."""

    def __init__(self, *earlier: AlertNotification) -> None:
        self.lines: list[AlertNotification] = list(earlier)
        self.reads: list[int] = []

    def alert_notifications(self, since: int = 0) -> tuple[list[AlertNotification], int]:
        self.reads.append(since)
        return self.lines[since:], len(self.lines)


PAGE = "SloErrorBudgetBurnPage"


def _on_alert(
    alerts: FakeAlerts, **policy: Any
) -> tuple[Remediator, RecordingBackend, Clock, list[tuple[str, dict[str, Any]]]]:
    backend, clock, journal = RecordingBackend(), Clock(), []
    rem = Remediator(
        RemediationPolicy(on_alert=PAGE, **policy),
        None,
        backend,
        journal=lambda kind, **fields: journal.append((kind, fields)),
        clock=clock,
        alerts=alerts,
    )
    return rem, backend, clock, journal


def test_acts_once_on_a_new_firing_notification_of_its_alert() -> None:
    alerts = FakeAlerts(_note(PAGE))  # received before remediation started: not acted on
    rem, backend, clock, journal = _on_alert(alerts)
    assert rem.step().outcome == "ok" and backend.restarts == []
    alerts.lines.append(_note(PAGE, slo="availability", long_window="2m", short_window="10s"))
    clock.now += 5
    decision = rem.step()
    assert decision.outcome == "acted" and backend.restarts == ["wrapper"]
    assert backend.reasons == ["alert:SloErrorBudgetBurnPage"]
    clock.now += 5
    assert rem.step().outcome == "ok"  # the same notification is not acted on twice
    assert backend.restarts == ["wrapper"]
    assert alerts.reads == [0, 1, 2]
    kind, fields = journal[1]
    assert kind == "remediation_action" and fields["on_alert"] == PAGE and fields["outcome"] == "acted"
    assert fields["alert"] == {
        "alertname": PAGE,
        "status": "firing",
        "labels": {
            "alertname": PAGE,
            "severity": "page",
            "slo": "availability",
            "long_window": "2m",
            "short_window": "10s",
        },
        "startsAt": "2025-01-01T00:00:00.5Z",
        "received_at": "2025-01-01T00:00:02Z",
    }
    assert fields["value_s"] is None and fields["threshold_s"] is None


def test_resolved_notifications_and_other_alerts_are_ignored() -> None:
    alerts = FakeAlerts()
    rem, backend, clock, journal = _on_alert(alerts)
    rem.step()
    alerts.lines += [_note(PAGE, "resolved"), _note("SloErrorBudgetBurnTicket"), _note("Watchdog")]
    clock.now += 5
    decision = rem.step()
    assert decision.outcome == "ok" and backend.restarts == []
    assert "3 other notification(s) ignored" in decision.detail
    assert [k for k, _ in journal] == ["remediation_decision", "remediation_decision"]


def test_alert_trigger_honours_cooldown_cap_and_dry_run() -> None:
    alerts = FakeAlerts()
    rem, backend, clock, journal = _on_alert(alerts, cooldown_s=20, max_actions=2, cap_window_s=600)
    rem.step()
    outcomes = []
    for _ in range(8):  # a firing notification at every step (Alertmanager re-notifying), 10 s apart
        alerts.lines.append(_note(PAGE))
        clock.now += 10
        outcomes.append(rem.step().outcome)
    assert outcomes == ["acted", "cooldown", "acted", "cooldown", "capped", "capped", "capped", "capped"]
    assert len(backend.restarts) == 2
    assert all(f["alert"]["alertname"] == PAGE for _, f in journal[1:])  # each decision says what it saw

    alerts = FakeAlerts()
    rem, backend, clock, journal = _on_alert(alerts, dry_run=True, cooldown_s=20)
    rem.step()
    alerts.lines.append(_note(PAGE))
    clock.now += 5
    assert rem.step().outcome == "dry_run" and backend.restarts == []
    alerts.lines.append(_note(PAGE))
    clock.now += 5
    assert rem.step().outcome == "cooldown"  # a dry run honours the cooldown as the real one would
    assert journal[1][0] == "remediation_action" and journal[1][1]["dry_run"] is True


def test_an_unreadable_alert_feed_is_journaled_not_raised() -> None:
    class Down:
        def alert_notifications(self, since: int = 0) -> tuple[list[AlertNotification], int]:
            raise OSError("connection refused")

    rem, backend, _clock, journal = _on_alert(Down())  # type: ignore[arg-type]
    decision = rem.step()
    assert decision.outcome == "no_data" and "connection refused" in decision.detail
    assert backend.restarts == [] and journal[0][1]["outcome"] == "no_data"


def test_alert_policy_replaces_the_p95_trigger() -> None:
    policy = RemediationPolicy(on_alert=PAGE)
    assert (policy.threshold_s, policy.window_s, policy.breaches_to_act) == (None, None, None)
    assert policy.reason == "alert:SloErrorBudgetBurnPage" and policy.trigger == f"alert {PAGE} firing"
    assert RemediationPolicy(**policy.model_dump()) == policy  # params.json round-trips
    p95 = RemediationPolicy()
    assert (p95.threshold_s, p95.breaches_to_act, p95.reason) == (3.0, 3, "p95_above_3s")
    with pytest.raises(ConfigError, match="give on_alert or threshold_s, not both"):
        RemediationPolicy.from_options(on_alert=PAGE, threshold_s=1.0)
    with pytest.raises(ConfigError, match="on_alert"):
        RemediationPolicy.from_options(on_alert="not a name")
    with pytest.raises(ConfigError, match="needs `alerts=`"):
        Remediator(policy, None, RecordingBackend())


def test_unknown_alert_names_are_refused_listing_the_lab_s_alerts(tmp_path: Path) -> None:
    write_rules_file(tmp_path, profile="lab")
    assert lab_alert_names(tmp_path) == ("SloErrorBudgetBurnPage", "SloErrorBudgetBurnTicket")
    assert alert_refusal(tmp_path, PAGE) is None
    refusal = alert_refusal(tmp_path, "HighLatency")
    assert refusal is not None and "'HighLatency'" in refusal
    assert "known: SloErrorBudgetBurnPage, SloErrorBudgetBurnTicket" in refusal
    with pytest.raises(ConfigError, match="labkit up"):
        lab_alert_names(tmp_path / "no-lab")
