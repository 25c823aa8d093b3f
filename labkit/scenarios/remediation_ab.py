"""The remediation A/B scenario: the same fault on the same timeline under the same seeded load, run
`runs_per_arm` times with remediation off (its loop in dry run: it journals, restarts nothing) and as many
times on, interleaved, each arm a chaos experiment in its own run directory under arms/; then per fault kind
the verdict of the stated test (labkit.measure.remediation_ab), all in remediation_ab.json.

Interleaved (off, on, off, on, ...) rather than all off then all on: whatever drifts on a shared machine
(other work, caches, a warming model) then falls on both arms alike instead of on one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from labkit.chaos import (
    ExperimentLoad,
    ExperimentResult,
    ExperimentSpec,
    Fault,
    SteadyState,
    as_schedule,
    fault_refusal,
    run_experiment,
)
from labkit.errors import BackendError, ConfigError
from labkit.faults import DEFAULT_TARGETS, FaultKind
from labkit.measure.load import LoadApi
from labkit.measure.remediation_ab import AB_TEST_MEASURE, AbArm, AbTest, ab_rows, analyze_arms, arm_records
from labkit.rundir import EventKind, RunDirectory, RunFile, RunFolder
from labkit.scenarios.runs import ScenarioRun, _describe_lab, _publish, _run_dir
from labkit.scenarios.session import LabSession
from labkit.scenarios.specs import RemediationAB
from labkit.verdicts import AB_VERDICT_TEXT

__all__ = ["AbRun", "remediation_ab"]

logger = logging.getLogger(__name__)

# How long an arm waits for every service to be ready again after the previous one (a restart settling).
_READY_TIMEOUT_S = 60.0


@dataclass
class AbRun(ScenarioRun):
    """What the A/B produced: its run directory, its arms and, per fault kind, the analysis
    (remediation_ab.json's `kinds`)."""

    arms: list[AbArm] = field(default_factory=list)
    kinds: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"run {self.run_dir.run_id}: {len(self.arms)} arm(s)"]
        for kind, result in self.kinds.items():
            diff = result["differences"].get(AB_TEST_MEASURE, {})
            value, low, high = diff.get("difference"), diff.get("low"), diff.get("high")
            shown = "" if value is None else f" {value:+.2f} s"
            interval = "" if low is None or high is None else f" [{low:+.2f}, {high:+.2f}] s"
            lines.append(
                f"  {kind}: {AB_VERDICT_TEXT[result['verdict']]} (on - off time to recover{shown}{interval}; "
                f"{result['why']})"
            )
        return "\n".join(lines)


def _fault(params: RemediationAB, kind: str) -> Fault:
    """The arm's one fault: from `fault_at_s` to `after_s` before the method's end, with its kind's
    parameters from `params`."""
    by_kind: dict[str, dict[str, Any]] = {
        "latency": {"delay_s": params.delay_s},
        "error": {"probability": params.error_probability, "seed": params.seed},
        "cpu_stress": {"workers": params.cpu_workers} if params.cpu_workers else {},
    }
    return Fault(
        kind=cast(FaultKind, kind),
        target=DEFAULT_TARGETS[cast(FaultKind, kind)],
        start_s=params.fault_at_s,
        duration_s=params.duration_s - params.fault_at_s - params.after_s,
        params=by_kind.get(kind, {}),
    )


def _spec(params: RemediationAB, fault: Fault, *, on: bool) -> ExperimentSpec:
    return ExperimentSpec(
        schedule=as_schedule([fault]),
        duration_s=params.duration_s,
        load=ExperimentLoad(
            api=cast(LoadApi, params.api), rate=params.rate, max_tokens=params.max_tokens, seed=params.seed
        ),
        steady_state=SteadyState(enabled=params.steady_state_s > 0, duration_s=params.steady_state_s or 5),
        remediation=params.remediation(dry_run=not on),
        # Both arms call the same requests slow, whether or not a policy's threshold is in force.
        slow_threshold_s=params.threshold_s,
        scenario=params.scenario,
        title=f"remediation A/B: {fault.kind}, remediation {'on' if on else 'off (dry run)'}",
    )


def _wait_ready(session: LabSession) -> None:
    """Every service ready again (a restart of the previous arm settled); BackendError if not in time."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        states = {s.name: s.state for s in session.backend.status()}
        if all(state in ("ready", "external") for state in states.values()):
            return
        if time.monotonic() > deadline:
            raise BackendError(
                f"the lab's services were not ready {_READY_TIMEOUT_S:g} s after an arm ({states}); "
                "look at `labkit status` and `labkit logs`, then run the A/B again"
            )
        time.sleep(0.25)


def _quiet_until(params: RemediationAB, session: LabSession, previous: AbArm | None) -> float:
    """When the p95 trigger's window holds none of the previous arm's bad requests: its last bad request's
    recovery (else its end), plus the window, two scrapes, and at least `gap_s` from its end."""
    if previous is None:
        return 0.0
    end = previous.run_end or time.time()
    settled = max([r["recovered"] for r in previous.rows if r.get("recovered") is not None] or [end])
    needed = settled + params.window_s + 2 * session.config.scrape_interval_s
    return max(needed, end + params.gap_s)


def _arm(result: ExperimentResult, order: int, kind: str, on: bool, base: RunDirectory) -> AbArm:
    finished = list(result.run_dir.events(EventKind.METHOD_FINISHED))
    run_end = float(finished[-1]["wall_time"]) if finished else None
    rows = [] if result.recovery is None else arm_records(ab_rows(result.recovery, run_end=run_end))
    return AbArm(
        order=order,
        kind=kind,
        remediation=on,
        run_dir=result.run_dir.path.relative_to(base.path).as_posix(),
        verdict=result.verdict,
        remediation_actions=sum(1 for a in result.remediation_actions if not a.get("dry_run")),
        run_end=run_end,
        rows=rows,
    )


def _record(params: RemediationAB, arms: list[AbArm], test: AbTest, *, complete: bool) -> dict[str, Any]:
    return {
        "complete": complete,
        "order": "interleaved: off, on, off, on, ... per fault kind",
        "runs_per_arm": params.runs_per_arm,
        "kinds_asked": params.kind_list,
        "remediation": params.remediation(dry_run=False).model_dump(mode="json"),
        "off_arm": "the same remediation loop in dry run: it journals its decisions and restarts nothing",
        "test": test.as_dict(),
        "arms": [arm.as_dict() for arm in arms],
        "kinds": analyze_arms(arms, test) if arms else {},
    }


def remediation_ab(
    session: LabSession, params: RemediationAB, *, say: Callable[[str], None] | None = print
) -> AbRun:
    """`params.runs_per_arm` experiments without remediation and as many with it per fault kind, interleaved,
    each with one fault from `fault_at_s` to `after_s` before its end under the same seeded load; before an
    arm the lab's services are ready again and, before an arm with remediation, the p95 window has
    forgotten the previous arm. remediation_ab.json is rewritten after every arm (a crash leaves the arms
    so far); the verdicts per kind come last. A fault the lab cannot apply is refused before any arm."""
    say = say or (lambda _line: None)
    for kind in params.kind_list:
        refusal = fault_refusal(session.config, cast(FaultKind, kind), DEFAULT_TARGETS[cast(FaultKind, kind)])
        if refusal is not None:
            raise ConfigError(f"remediation_ab cannot run {kind}: {refusal}")
    faults = {kind: _fault(params, kind) for kind in params.kind_list}
    test = AbTest(confidence=params.confidence, seed=params.seed, min_effect_s=params.min_effect_s)
    out = _run_dir(params.run_dir, params.out_dir, params.scenario)
    _describe_lab(session, out)
    arms_dir = out.file(RunFolder.ARMS)
    arms: list[AbArm] = []
    total = params.runs_per_arm * len(faults) * 2
    say(f"remediation A/B: {total} arms of {params.duration_s:g} s; {test.describe()}")
    for _round in range(params.runs_per_arm):
        for kind, fault in faults.items():
            for on in (False, True):
                _wait_ready(session)
                if on:
                    time.sleep(
                        max(0.0, _quiet_until(params, session, arms[-1] if arms else None) - time.time())
                    )
                order = len(arms) + 1
                arm_dir = RunDirectory.create(
                    arms_dir, params.scenario, run_id=f"{order:02d}-{kind}-{'on' if on else 'off'}"
                )
                result = run_experiment(
                    session.lab_dir, _spec(params, fault, on=on), run_dir=arm_dir, say=None
                )
                arm = _arm(result, order, kind, on, out)
                arms.append(arm)
                out.write_json(RunFile.REMEDIATION_AB, _record(params, arms, test, complete=False))
                say(_arm_line(arm, total))
    record = _record(params, arms, test, complete=True)
    out.write_json(RunFile.REMEDIATION_AB, record)
    run = AbRun(out, arms=arms, kinds=record["kinds"])
    say(run.summary())
    _publish(run, params, say=say)
    return run


def _arm_line(arm: AbArm, total: int) -> str:
    """One line per arm as it ends: its time to recover from the fault's start, restarts, verdict."""
    values = [r.get(AB_TEST_MEASURE) for r in arm.rows]
    shown = ", ".join(
        "unknown" if v is None else f"{v:.2f} s" + (" or more" if r.get("censored") else "")
        for v, r in zip(values, arm.rows, strict=True)
    )
    return (
        f"arm {arm.order}/{total}: {arm.kind}, remediation {arm.arm}: recovered {shown or 'unknown'} after "
        f"the fault's start, {arm.remediation_actions} restart(s), experiment {arm.verdict}"
    )
