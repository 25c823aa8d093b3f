"""The remediation policy's decisions, driven by a scripted signal and a manual clock.

The backend here only records what it was asked to do: the decision logic is what is under test
(the real restart through the supervisor is exercised by the integration tests)."""

from __future__ import annotations

from typing import Any

import pytest

from labkit.chaos import RemediationPolicy, Remediator, p95_latency_query
from labkit.errors import ConfigError


class RecordingBackend:
    def __init__(self, fail: bool = False) -> None:
        self.restarts: list[str] = []
        self.fail = fail

    def restart(self, service: str, *, remediation_reason: str | None = None) -> None:
        if self.fail:
            raise RuntimeError("supervisor refused")
        assert remediation_reason  # every remediation action says why, for its metric
        self.restarts.append(service)


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
    assert backend.restarts == ["wrapper"]


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
