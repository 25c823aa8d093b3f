"""Automated remediation: watch a latency signal in Prometheus and restart a service after k
consecutive breaches, with a cooldown, a cap on actions per window, dry-run, and every decision journaled.

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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labkit.errors import ConfigError
from labkit.lab.contract import ManagedServiceName
from labkit.rundir import EventKind

__all__ = [
    "Decision",
    "RemediationPolicy",
    "Remediator",
    "p95_latency_query",
    "prometheus_signal",
]

logger = logging.getLogger(__name__)

Outcome = Literal["ok", "breach", "no_data", "acted", "dry_run", "cooldown", "capped", "action_failed"]


class RemediationPolicy(BaseModel):
    """When to act and how often at most. Keyword-only, validated once."""

    # nan would pass no comparison and inf every one: a threshold of either never (or always) acts
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    target: ManagedServiceName = "wrapper"
    action: Literal["restart"] = "restart"
    threshold_s: float = Field(default=3.0, gt=0, description="p95 latency above this is a breach")
    window_s: float = Field(default=15.0, ge=2, le=3600, description="rate window of the p95 query")
    interval_s: float = Field(default=5.0, gt=0, le=600, description="how often the signal is read")
    breaches_to_act: int = Field(default=3, ge=1, le=100, description="consecutive breaches before acting")
    cooldown_s: float = Field(default=30.0, ge=0, le=86400, description="no action this long after one")
    max_actions: int = Field(default=3, ge=1, le=1000, description="at most this many actions per cap window")
    cap_window_s: float = Field(default=600.0, gt=0, le=86400)
    dry_run: bool = False

    @classmethod
    def from_options(cls, **options: Any) -> RemediationPolicy:
        """Build from user input; one ConfigError naming each bad field."""
        try:
            return cls(**options)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid remediation policy: {problems}") from exc


def p95_latency_query(window_s: float) -> str:
    """The wrapper's p95 end-to-end latency over the last `window_s` seconds (successful requests)."""
    return (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate(llm_request_duration_seconds_bucket[{max(2, round(window_s))}s])))"
    )


class Acts(Protocol):
    def restart(self, service: Any, *, remediation_reason: str | None = None) -> None: ...


@dataclass(frozen=True)
class Decision:
    """One evaluation of the signal, and what was done about it."""

    at: float  # unix time
    value: float | None  # the signal (seconds), None when Prometheus had no data
    threshold_s: float
    consecutive_breaches: int
    outcome: Outcome
    detail: str = ""

    def as_event(self) -> dict[str, Any]:
        return {
            "value_s": self.value,
            "threshold_s": self.threshold_s,
            "consecutive_breaches": self.consecutive_breaches,
            "outcome": self.outcome,
            "detail": self.detail,
        }


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
    """Evaluates the signal every `policy.interval_s` and acts through `backend` when the policy says so.

    `journal(kind, **fields)` records every decision (RunDirectory.journal fits). `clock` is injectable
    so that cooldown and cap are tested without waiting.
    """

    policy: RemediationPolicy
    signal: Callable[[], float | None]
    backend: Acts
    journal: Callable[..., Any] = field(default=lambda kind, **fields: None)
    clock: Callable[[], float] = time.time
    decisions: list[Decision] = field(default_factory=list)
    _breaches: int = field(default=0, init=False)
    _actions: deque[float] = field(default_factory=deque, init=False)  # times of recent actions

    @property
    def actions_taken(self) -> int:
        return sum(1 for d in self.decisions if d.outcome == "acted")

    def step(self) -> Decision:
        """Read the signal once, decide, maybe act; journal the decision with the values it saw."""
        p = self.policy
        now = self.clock()
        try:
            value = self.signal()
        except Exception as exc:
            value, detail = None, f"signal unavailable: {exc}"
        else:
            detail = ""
        if value is None or value <= p.threshold_s:
            self._breaches = 0
            return self._record(now, value, "no_data" if value is None else "ok", detail)
        self._breaches += 1
        if self._breaches < p.breaches_to_act:
            return self._record(now, value, "breach", f"{self._breaches}/{p.breaches_to_act}")
        while self._actions and now - self._actions[0] > p.cap_window_s:
            self._actions.popleft()
        if self._actions and now - self._actions[-1] < p.cooldown_s:
            left = p.cooldown_s - (now - self._actions[-1])
            return self._record(now, value, "cooldown", f"{left:.1f}s of cooldown left")
        if len(self._actions) >= p.max_actions:
            return self._record(
                now, value, "capped", f"{p.max_actions} actions in {p.cap_window_s:g}s already; not acting"
            )
        if p.dry_run:
            self._actions.append(now)  # a dry run honours cooldown and cap as the real one would
            self._breaches = 0
            return self._record(now, value, "dry_run", f"would {p.action} {p.target}")
        try:
            self.backend.restart(p.target, remediation_reason=f"p95_above_{p.threshold_s:g}s")
        except Exception as exc:
            return self._record(now, value, "action_failed", f"{p.action} {p.target} failed: {exc}")
        self._actions.append(now)
        self._breaches = 0
        return self._record(now, value, "acted", f"{p.action} {p.target}")

    def _record(self, now: float, value: float | None, outcome: Outcome, detail: str) -> Decision:
        decision = Decision(now, value, self.policy.threshold_s, self._breaches, outcome, detail)
        self.decisions.append(decision)
        kind = (
            EventKind.REMEDIATION_ACTION
            if outcome in ("acted", "dry_run")
            else EventKind.REMEDIATION_DECISION
        )
        self.journal(
            kind,
            target=self.policy.target,
            action=self.policy.action,
            dry_run=self.policy.dry_run,
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
