"""Automated remediation: restart a service after k consecutive readings of p95 latency above a threshold
(from Prometheus), or as soon as Alertmanager notifies a firing alert of a given name; with a cooldown, a
cap on actions per window, dry-run, and every decision journaled with what it saw.

The loop must never fight a fault that is still active forever: the cooldown and the cap bound it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labkit.errors import ConfigError
from labkit.lab.contract import ManagedServiceName
from labkit.notifications import AlertNotification
from labkit.rundir import EventKind

__all__ = [
    "DEFAULT_THRESHOLD_S",
    "AlertSource",
    "Decision",
    "RemediationPolicy",
    "Remediator",
    "p95_latency_query",
    "prometheus_signal",
]

logger = logging.getLogger(__name__)

Outcome = Literal["ok", "breach", "no_data", "acted", "dry_run", "cooldown", "capped", "action_failed"]

# The p95 trigger's threshold when none is given (seconds).
DEFAULT_THRESHOLD_S = 3.0
# The settings only the p95 trigger reads: with `on_alert` they stay None, and giving one is an error.
_P95_DEFAULTS: dict[str, float] = {"threshold_s": DEFAULT_THRESHOLD_S, "window_s": 15.0, "breaches_to_act": 3}


class RemediationPolicy(BaseModel):
    """When to act and how often at most. Keyword-only, validated once.

    The trigger is p95 latency (`threshold_s`, `window_s`, `breaches_to_act`; the default) or, with
    `on_alert`, a firing Alertmanager notification of that alert name (the p95 settings are then None).
    """

    # nan would pass no comparison and inf every one: a threshold of either never (or always) acts
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    target: ManagedServiceName = "wrapper"
    action: Literal["restart"] = "restart"
    # 58: `alert:<name>` is the action metric's reason label, which the lab's control API caps at 64
    on_alert: str | None = Field(
        default=None,
        max_length=58,
        pattern=r"^[A-Za-z_:][A-Za-z0-9_:]*$",
        description="act on a firing notification of this alert name",
    )
    threshold_s: float | None = Field(default=None, gt=0, description="p95 latency above this is a breach")
    window_s: float | None = Field(default=None, ge=2, le=3600, description="rate window of the p95 query")
    interval_s: float = Field(default=5.0, gt=0, le=600, description="how often the signal is read")
    breaches_to_act: int | None = Field(
        default=None, ge=1, le=100, description="consecutive breaches before acting"
    )
    cooldown_s: float = Field(default=30.0, ge=0, le=86400, description="no action this long after one")
    max_actions: int = Field(default=3, ge=1, le=1000, description="at most this many actions per cap window")
    cap_window_s: float = Field(default=600.0, gt=0, le=86400)
    dry_run: bool = False

    @model_validator(mode="before")
    @classmethod
    def _one_trigger(cls, data: Any) -> Any:
        """p95 settings default when the trigger is p95; refused beside `on_alert`, which replaces them."""
        if not isinstance(data, dict):
            return data
        p95 = [name for name in _P95_DEFAULTS if data.get(name) is not None]
        if data.get("on_alert") is None:
            return {**data, **{k: v for k, v in _P95_DEFAULTS.items() if data.get(k) is None}}
        if p95:
            raise ValueError(
                f"on_alert replaces the p95 trigger: give on_alert or {', '.join(p95)}, not both"
            )
        return data

    @property
    def trigger(self) -> str:
        """What makes it act, in words: `alert SloErrorBudgetBurnPage firing` or `p95 > 3s (x3)`."""
        if self.on_alert is not None:
            return f"alert {self.on_alert} firing"
        return f"{self.breaches_to_act} reading(s) of p95 > {self.threshold_s:g}s"

    @property
    def reason(self) -> str:
        """The `reason` label of lab_remediation_actions_total for an action of this policy."""
        if self.on_alert is not None:
            return f"alert:{self.on_alert}"
        return f"p95_above_{self.threshold_s:g}s"

    @classmethod
    def from_options(cls, **options: Any) -> RemediationPolicy:
        """Build from user input; one ConfigError naming each bad field."""
        try:
            return cls(**options)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'remediation'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid remediation policy: {problems}") from exc


def p95_latency_query(window_s: float) -> str:
    """The wrapper's p95 end-to-end latency over the last `window_s` seconds (successful requests)."""
    return (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate(llm_request_duration_seconds_bucket[{max(2, round(window_s))}s])))"
    )


class Acts(Protocol):
    def restart(self, service: Any, *, remediation_reason: str | None = None) -> None: ...


class AlertSource(Protocol):
    """Where the lab's Alertmanager notifications are read from (labkit.lab.backend.Backend): those from
    index `since` on, and the index to ask for next time."""

    def alert_notifications(self, since: int = 0) -> tuple[list[AlertNotification], int]: ...


def _notification_record(note: AlertNotification) -> dict[str, Any]:
    """What a decision journals of the notification it saw."""
    return {
        "alertname": note.alertname,
        "status": note.status,
        "labels": dict(note.labels),
        "startsAt": note.startsAt,
        "received_at": note.received_at,
    }


@dataclass(frozen=True)
class Decision:
    """One evaluation of the signal, and what was done about it. `value` and `threshold_s` are the p95
    trigger's; `alert` is the notification an alert trigger acted on (or would have)."""

    at: float  # unix time
    value: float | None  # the signal (seconds), None when Prometheus had no data (or the trigger is an alert)
    threshold_s: float | None
    consecutive_breaches: int
    outcome: Outcome
    detail: str = ""
    alert: dict[str, Any] | None = None

    def as_event(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "value_s": self.value,
            "threshold_s": self.threshold_s,
            "consecutive_breaches": self.consecutive_breaches,
            "outcome": self.outcome,
            "detail": self.detail,
        }
        if self.alert is not None:
            event["alert"] = self.alert
        return event


def prometheus_signal(
    prometheus_url: str, query: str, *, timeout_s: float = 3.0
) -> Callable[[], float | None]:
    """A signal reader: the instant value of `query`, None when there is no data (no traffic, NaN)."""
    import httpx

    def read() -> float | None:
        response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=timeout_s)
        response.raise_for_status()
        result = response.json()["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    return read


@dataclass
class Remediator:
    """Evaluates its trigger every `policy.interval_s` and acts through `backend` when the policy says so.

    The trigger is `signal` (p95 seconds, or None for no data) or, when `policy.on_alert` is set, `alerts`:
    each step reads the notifications received since the last one and acts on a firing one of that name
    (notifications received before the first step are not acted on). `journal(kind, **fields)` records every
    decision (RunDirectory.journal fits). `clock` is injectable so that cooldown and cap are tested without
    waiting.
    """

    policy: RemediationPolicy
    signal: Callable[[], float | None] | None  # None when the trigger is an alert
    backend: Acts
    journal: Callable[..., Any] = field(default=lambda kind, **fields: None)
    clock: Callable[[], float] = time.time
    alerts: AlertSource | None = None
    decisions: list[Decision] = field(default_factory=list)
    _breaches: int = field(default=0, init=False)
    _actions: deque[float] = field(default_factory=deque, init=False)  # times of recent actions
    _since: int | None = field(default=None, init=False)  # the next alert notification to read

    def __post_init__(self) -> None:
        if self.policy.on_alert is None and self.signal is None:
            raise ConfigError("remediation on p95 latency needs `signal=` (e.g. prometheus_signal(...))")
        if self.policy.on_alert is not None and self.alerts is None:
            raise ConfigError(
                f"remediation on alert {self.policy.on_alert} needs `alerts=` (the lab's Backend, which "
                "reads Alertmanager's notifications)"
            )

    @property
    def actions_taken(self) -> int:
        return sum(1 for d in self.decisions if d.outcome == "acted")

    def step(self) -> Decision:
        """Read the trigger once, decide, maybe act; journal the decision with the values it saw."""
        if self.policy.on_alert is not None:
            return self._step_on_alert(self.policy.on_alert)
        p, signal = self.policy, self.signal
        threshold, needed = p.threshold_s, p.breaches_to_act
        assert signal is not None and threshold is not None and needed is not None  # validated
        now = self.clock()
        try:
            value = signal()
        except Exception as exc:
            value, detail = None, f"signal unavailable: {exc}"
        else:
            detail = ""
        if value is None or value <= threshold:
            self._breaches = 0
            return self._record(now, value, "no_data" if value is None else "ok", detail)
        self._breaches += 1
        if self._breaches < needed:
            return self._record(now, value, "breach", f"{self._breaches}/{needed}")
        return self._act(now, value, None)

    def _step_on_alert(self, name: str) -> Decision:
        now = self.clock()
        assert self.alerts is not None  # __post_init__
        first = self._since is None
        try:
            notes, self._since = self.alerts.alert_notifications(self._since or 0)
        except Exception as exc:
            return self._record(now, None, "no_data", f"alert notifications unavailable: {exc}")
        if first:
            earlier = f"{len(notes)} notification(s) received before remediation started: not acted on"
            return self._record(now, None, "ok", earlier)
        firing = [n for n in notes if n.alertname == name and n.status == "firing"]
        others = len(notes) - len(firing)
        ignored = f"; {others} other notification(s) ignored (resolved or another alert)" if others else ""
        if not firing:
            return self._record(now, None, "ok", f"no new firing {name} notification{ignored}")
        # Several notifications of one alert (one per objective or window pair) in a read: one action.
        return self._act(now, None, _notification_record(firing[-1]), suffix=ignored)

    def _act(
        self, now: float, value: float | None, alert: dict[str, Any] | None, suffix: str = ""
    ) -> Decision:
        """The trigger says act: unless cooldown or the cap say no, restart (or say so, in a dry run)."""
        p = self.policy
        while self._actions and now - self._actions[0] > p.cap_window_s:
            self._actions.popleft()
        if self._actions and now - self._actions[-1] < p.cooldown_s:
            left = p.cooldown_s - (now - self._actions[-1])
            return self._record(now, value, "cooldown", f"{left:.1f}s of cooldown left{suffix}", alert)
        if len(self._actions) >= p.max_actions:
            detail = f"{p.max_actions} actions in {p.cap_window_s:g}s already; not acting{suffix}"
            return self._record(now, value, "capped", detail, alert)
        if p.dry_run:
            self._actions.append(now)  # a dry run honours cooldown and cap as the real one would
            self._breaches = 0
            return self._record(now, value, "dry_run", f"would {p.action} {p.target}{suffix}", alert)
        try:
            self.backend.restart(p.target, remediation_reason=p.reason)
        except Exception as exc:
            detail = f"{p.action} {p.target} failed: {exc}{suffix}"
            return self._record(now, value, "action_failed", detail, alert)
        self._actions.append(now)
        self._breaches = 0
        return self._record(now, value, "acted", f"{p.action} {p.target}{suffix}", alert)

    def _record(
        self,
        now: float,
        value: float | None,
        outcome: Outcome,
        detail: str,
        alert: dict[str, Any] | None = None,
    ) -> Decision:
        decision = Decision(now, value, self.policy.threshold_s, self._breaches, outcome, detail, alert)
        self.decisions.append(decision)
        kind = (
            EventKind.REMEDIATION_ACTION
            if outcome in ("acted", "dry_run")
            else EventKind.REMEDIATION_DECISION
        )
        trigger = {"on_alert": self.policy.on_alert} if self.policy.on_alert is not None else {}
        self.journal(
            kind,
            target=self.policy.target,
            action=self.policy.action,
            dry_run=self.policy.dry_run,
            **trigger,
            **decision.as_event(),
        )
        if outcome in ("acted", "dry_run", "capped", "action_failed"):
            logger.info("remediation: %s (%s)", outcome, detail)
        return decision

    def run(self, stop: threading.Event) -> None:
        """Step every `interval_s` until `stop` is set (run it in a thread beside the load)."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.step()
            except Exception as exc:  # a journal or bookkeeping failure: said, and the loop goes on
                logger.exception("remediation step failed")
                self.journal(EventKind.REMEDIATION_ERROR, error=f"{type(exc).__name__}: {exc}")
            stop.wait(max(0.0, self.policy.interval_s - (time.monotonic() - started)))
