"""A chaos experiment (after Chaos Toolkit): a steady-state hypothesis (SLO checks on a short load burst)
before and after a method (load running while faults are applied on a timeline), and a verdict:
`held` (the hypothesis held before and after), `deviated` (it failed after), `aborted` (it failed before,
or interrupted, or an error), `not checked` (no hypothesis): labkit.verdicts.

Optionally an automated remediation loop (labkit.chaos._remediation) runs beside the method's load, and the
result carries recovery measures per fault (labkit.measure.recovery) computed from the journal and the
samples.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from labkit.chaos._applicable import alert_refusal, remediation_refusal
from labkit.chaos._background import BackgroundLoad, ExperimentInterrupted, signals_stop
from labkit.chaos._inject import ActiveFault, FaultInjector
from labkit.chaos._remediation import Remediator, p95_latency_query, prometheus_signal
from labkit.chaos._result import ExperimentResult, Verdict, recovery_records, remediation_cause
from labkit.chaos._schedule import plan_text
from labkit.chaos._spec import ExperimentSpec
from labkit.errors import ConfigError, LabkitError
from labkit.faults import WRAPPER_FAULT_KINDS
from labkit.lab.alert_feed import AlertFeed
from labkit.measure.load import LoadResult, LoadSpec
from labkit.measure.recovery import (
    default_error_budget,
    default_slow_threshold_s,
    fault_windows_from_journal,
    recovery_measures,
)
from labkit.measure.slo import SloReport, evaluate_client_slos, load_slo_spec
from labkit.rundir import EventKind, RunDirectory, RunFile

__all__ = ["run_experiment"]

logger = logging.getLogger(__name__)


def _violated(report: SloReport) -> str:
    return "; ".join(f"{r.slo}: {r.objective}" for r in report.violated) or "no objective had data"


class _Experiment:
    """One run's state; `run()` returns the result whatever happens (bugs excepted, after cleanup)."""

    def __init__(
        self,
        spec: ExperimentSpec,
        *,
        injector: FaultInjector,
        run_dir: RunDirectory,
        say: Callable[[str], None],
    ) -> None:
        self.spec = spec
        self.injector = injector
        remediation = self.remediation = spec.remediation
        schedule = self.schedule = spec.schedule
        self.run_dir = run_dir
        wrapper, key_file = injector.wrapper_url, injector.config.api_key_file
        self.method_spec = spec.load.load_spec(wrapper, duration_s=spec.duration_s, api_key_file=key_file)
        steady = spec.steady_state
        self.steady_spec = (
            spec.load.load_spec(wrapper, duration_s=steady.duration_s, api_key_file=key_file)
            if steady.enabled
            else None
        )
        self.settle_timeout_s = spec.settle_timeout_s
        self.slos = load_slo_spec(spec.slo_spec)
        slow_threshold_s = spec.slow_threshold_s
        if slow_threshold_s is None:
            slow_threshold_s = (
                remediation.threshold_s
                if remediation is not None and remediation.threshold_s is not None
                else default_slow_threshold_s(self.slos)
            )
        self.slow_threshold_s = slow_threshold_s
        self.say = say
        # The timeline (this thread) and the remediation loop (its own) both end faults.
        self._faults_lock = threading.RLock()
        self.remediator: Remediator | None = None
        self.stop = threading.Event()
        self.caught: list[int] = []
        self.records: list[dict[str, Any]] = [
            {
                "fault_id": f"f{i + 1}",
                "index": i,
                "fault": f.model_dump(mode="json"),
                "describe": f.describe(),
            }
            for i, f in enumerate(schedule.faults)
        ]
        self.applied: dict[int, ActiveFault] = {}
        self.t0 = time.monotonic()  # the method's start once it starts: fault offsets count from it
        self.loads: list[BackgroundLoad] = []
        self.result = ExperimentResult(
            run_dir=run_dir, verdict="aborted", reason="not started", schedule=schedule
        )

    # ---- journal ------------------------------------------------------------------------------
    def journal(self, kind: EventKind, **fields: Any) -> dict[str, Any]:
        return self.run_dir.journal(kind, **fields)

    # ---- phases -------------------------------------------------------------------------------
    def _load(self, spec: LoadSpec, run_dir: RunDirectory) -> LoadResult:
        load = BackgroundLoad(spec, run_dir).start()
        self.loads.append(load)
        load.wait(self.stop)
        return load.outcome()

    def steady_state(self, phase: Literal["before", "after"]) -> SloReport:
        assert self.steady_spec is not None
        sub = self.run_dir.steady_state(phase)
        self.journal(EventKind.STEADY_STATE_STARTED, phase=phase, duration_s=self.steady_spec.duration_s)
        self.say(f"steady-state check {phase} the method ({self.steady_spec.duration_s:g} s of load)...")
        result = self._load(self.steady_spec, sub)
        report = evaluate_client_slos(result.frame, self.slos, duration_s=self.steady_spec.duration_s)
        report.write(sub.path)
        violated = [f"{r.slo}: {r.objective}" for r in report.violated]
        self.journal(
            EventKind.STEADY_STATE,
            phase=phase,
            verdict=report.verdict,
            requests=report.requests,
            good_requests=report.good_requests,
            violated=violated,
            no_data=[f"{r.slo}: {r.objective}" for r in report.no_data],
            run_dir=str(sub.path.relative_to(self.run_dir.path)),
        )
        self.say(f"  SLOs {report.verdict}" + (f": {'; '.join(violated)}" if violated else ""))
        return report

    def method(self) -> LoadResult:
        spec = self.method_spec
        self.say(
            f"method: {spec.duration_s:g} s of load at {spec.rate:g} req/s with {len(self.schedule)} fault(s)"
        )
        load = BackgroundLoad(spec, self.run_dir).start()
        self.loads.append(load)
        t0 = self.t0 = time.monotonic()
        self.journal(EventKind.METHOD_STARTED, duration_s=spec.duration_s, t0_monotonic=t0)
        with self._remediation_loop():
            result = self._timeline(load, t0)
        self.journal(EventKind.METHOD_FINISHED, requests=len(result.frame), ok=int(result.frame["ok"].sum()))
        return result

    def _timeline(self, load: BackgroundLoad, t0: float) -> LoadResult:
        # Ends before starts at the same instant: a fault may begin where another of its kind ended.
        timeline = sorted(
            [(f.start_s, 1, i) for i, f in enumerate(self.schedule.faults)]
            + [(f.end_s, 0, i) for i, f in enumerate(self.schedule.faults)]
        )
        for at, is_start, index in timeline:
            if self.stop.wait(max(0.0, t0 + at - time.monotonic())):
                raise ExperimentInterrupted
            if is_start:
                self.start_fault(index, t0)
            else:
                self.end_fault(index, t0)
        load.wait(self.stop)
        return load.outcome()

    # ---- remediation --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _remediation_loop(self) -> Iterator[None]:
        """While the method runs, the remediation loop (if any) reads Prometheus and acts in a thread."""
        policy = self.remediation
        if policy is None:
            yield
            return
        backend = self.injector.backend
        # The p95 trigger reads Prometheus; the alert trigger reads the notifications the lab received.
        query = None if policy.window_s is None else p95_latency_query(policy.window_s)
        self.remediator = Remediator(
            policy,
            None if query is None else prometheus_signal(self.injector.config.prometheus_url, query),
            _RestartsUnderLock(self),
            journal=self._journal_remediation,
            alerts=backend if policy.on_alert is not None else None,
        )
        self.journal(EventKind.REMEDIATION_STARTED, policy=policy.model_dump(mode="json"), query=query)
        self.say(
            f"remediation: {'dry run, ' if policy.dry_run else ''}restart {policy.target} on {policy.trigger}"
        )
        stop = threading.Event()
        thread = threading.Thread(
            target=self.remediator.run, args=(stop,), name="labkit-remediation", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            stop.set()
            # A step may be in a Prometheus read (3 s) or a restart (the control API's 10 s timeout).
            thread.join(policy.interval_s + 20)
            if thread.is_alive():
                logger.warning("the remediation loop did not stop in time: a step is still running")
                self.journal(
                    EventKind.REMEDIATION_ERROR, error="the loop did not stop within its join timeout"
                )
            decisions = self.remediator.decisions
            self.journal(
                EventKind.REMEDIATION_STOPPED,
                decisions=len(decisions),
                actions=sum(d.outcome == "acted" for d in decisions),
                dry_run_actions=sum(d.outcome == "dry_run" for d in decisions),
            )

    def _journal_remediation(self, kind: EventKind, **fields: Any) -> dict[str, Any]:
        event = self.journal(kind, **fields, offset_s=round(time.monotonic() - self.t0, 3))
        if kind == EventKind.REMEDIATION_ACTION:
            self.result.remediation_actions.append(event)
            self.say(
                f"  remediation: {'would restart' if fields.get('dry_run') else 'restarted'} "
                f"{fields['target']} ({remediation_cause(fields)})"
            )
        return event

    def cleared_by_restart(self, service: str) -> None:
        """A remediation restart of `service` ended the faults it held: a wrapper restart drops the
        wrapper's faults (held in its memory), a restart of a paused service resumes it. Journaled as
        their `fault_end` (why: remediation), so recovery counts from there; not reverted again later."""
        with self._faults_lock:
            for index in sorted(self.applied):
                fault = self.schedule.faults[index]
                # The wrapper's faults live in its memory: a restart of the wrapper drops them.
                held = (service == "wrapper" and fault.kind in WRAPPER_FAULT_KINDS) or (
                    fault.kind == "pause" and fault.target == service
                )
                if not held or fault.instantaneous:
                    continue
                active = self.applied.pop(index)
                self.injector.active.pop(active.id, None)
                self.records[index]["end_outcome"] = "cleared"
                self.journal(
                    EventKind.FAULT_END,
                    **self._fault_fields(index, self.t0),
                    why="remediation",
                    outcome="cleared",
                    detail={"restarted": service},
                )
                self.say(f"  {fault.kind} on {fault.target} cleared by the restart of {service}")

    def _fault_fields(self, index: int, t0: float) -> dict[str, Any]:
        """What every fault event carries (flat, as labkit.measure.recovery reads it): `fault_id` pairs a
        fault_start with its fault_end."""
        fault = self.schedule.faults[index]
        return {
            "fault_id": self.records[index]["fault_id"],
            "index": index,
            "fault_kind": fault.kind,
            "target": fault.target,
            "params": fault.params,
            "start_s": fault.start_s,
            "duration_s": fault.duration_s,
            "offset_s": round(time.monotonic() - t0, 3),
        }

    def start_fault(self, index: int, t0: float) -> None:
        """Apply fault `index`. A failed application is journaled as `fault_failed` (no window opens); an
        instantaneous fault's `fault_end` follows at once (its window is closed: end = start), and the end
        of its observation window is journaled later as `fault_window_end`."""
        with self._faults_lock:
            self._start_fault(index, t0)

    def _start_fault(self, index: int, t0: float) -> None:
        fault = self.schedule.faults[index]
        record = self.records[index]
        try:
            active = self.injector.apply(fault)
        except LabkitError as exc:
            record["start_outcome"] = "failed"
            self.journal(EventKind.FAULT_FAILED, **self._fault_fields(index, t0), error=str(exc))
            self.say(f"  {fault.describe()}: could not apply: {exc}")
            return
        self.applied[index] = active
        record["start_outcome"] = "applied"
        self.journal(
            EventKind.FAULT_START, **self._fault_fields(index, t0), outcome="applied", detail=active.detail
        )
        self.say(f"  applied {fault.describe()}")
        if fault.instantaneous:
            record["end_outcome"] = "ended"
            self.journal(
                EventKind.FAULT_END, **self._fault_fields(index, t0), outcome="ended", instantaneous=True
            )

    def end_fault(self, index: int, t0: float, *, why: str = "scheduled") -> None:
        """End fault `index` if it is applied (idempotent): revert it, or close an instantaneous fault's
        observation window."""
        with self._faults_lock:
            self._end_fault(index, t0, why)

    def _end_fault(self, index: int, t0: float, why: str) -> None:
        fault = self.schedule.faults[index]
        record = self.records[index]
        active = self.applied.pop(index, None)
        if active is None:
            return
        try:
            outcome, detail = self.injector.revert(active)
        except LabkitError as exc:
            record["end_outcome"] = "failed"
            self.journal(
                EventKind.FAULT_END,
                **self._fault_fields(index, t0),
                why=why,
                outcome="failed",
                error=str(exc),
            )
            self.say(f"  {fault.describe()}: could not revert ({exc}); its TTL ends it")
            return
        if fault.instantaneous:
            self.journal(EventKind.FAULT_WINDOW_END, **self._fault_fields(index, t0), why=why, detail=detail)
            return
        record["end_outcome"] = outcome
        self.journal(
            EventKind.FAULT_END, **self._fault_fields(index, t0), why=why, outcome=outcome, detail=detail
        )
        self.say(f"  ended {fault.kind} on {fault.target} ({outcome})")

    def revert_everything(self, t0: float, why: str) -> None:
        for index in sorted(self.applied):
            self.end_fault(index, t0, why=why)

    def settle(self) -> None:
        """Wait (bounded) until every supervised service is ready again; journal how long it took."""
        started = time.monotonic()
        states: dict[str, str] = {}
        while True:
            try:
                states = {s.name: s.state for s in self.injector.backend.status()}
            except LabkitError as exc:
                states = {"lab": f"unreachable: {exc}"}
            ready = all(state in ("ready", "external") for state in states.values())
            waited = time.monotonic() - started
            if ready or waited >= self.settle_timeout_s:
                self.journal(EventKind.SETTLED, ready=ready, waited_s=round(waited, 3), states=states)
                return
            if self.stop.wait(0.25):
                raise ExperimentInterrupted

    def method_slos(self, result: LoadResult) -> SloReport | None:
        try:
            report = evaluate_client_slos(result.frame, self.slos, duration_s=self.method_spec.duration_s)
        except LabkitError as exc:
            self.journal(EventKind.METHOD_SLO, error=str(exc))
            return None
        report.write(self.run_dir.path)
        self.journal(
            EventKind.METHOD_SLO,
            verdict=report.verdict,
            violated=[f"{r.slo}: {r.objective}" for r in report.violated],
        )
        return report

    def measure_recovery(self, load: LoadResult) -> pd.DataFrame:
        """Per fault: time to detect, time to recover, requests lost (labkit.measure.recovery), journaled."""
        windows = fault_windows_from_journal(self.run_dir.events())
        frame = recovery_measures(
            windows,
            load.frame,
            slow_threshold_s=self.slow_threshold_s,
            error_budget=default_error_budget(self.slos),
        )
        for row in recovery_records(frame):
            row["fault_kind"] = row.pop("kind")  # `kind` is the event's own
            self.journal(EventKind.RECOVERY, slow_threshold_s=self.slow_threshold_s, **row)
        return frame

    # ---- the whole run ------------------------------------------------------------------------
    def run(self) -> ExperimentResult:
        result = self.result
        with signals_stop(self.stop, self.caught):
            try:
                if self.steady_spec is not None:
                    result.before = self.steady_state("before")
                    if result.before.verdict != "met":
                        return self.abort(
                            "the steady-state hypothesis did not hold before the method, so nothing was "
                            f"injected ({_violated(result.before)})"
                        )
                result.load = self.method()
                result.method_slo = self.method_slos(result.load)
                result.recovery = self.measure_recovery(result.load)
                if self.steady_spec is None:
                    return self.finish("not checked", "the method ran to its end (no steady-state check)")
                self.settle()
                result.after = self.steady_state("after")
                if result.after.verdict == "met":
                    return self.finish("held", "the steady-state hypothesis held before and after the method")
                violated = _violated(result.after)
                return self.finish(
                    "deviated", f"the steady-state hypothesis failed after the method ({violated})"
                )
            except ExperimentInterrupted:
                name = signal.Signals(self.caught[-1]).name if self.caught else "stop"
                return self.abort(f"interrupted by {name}", signal=name)
            except KeyboardInterrupt:
                return self.abort("interrupted by SIGINT", signal="SIGINT")
            except LabkitError as exc:
                return self.abort(f"{type(exc).__name__}: {exc}", error=str(exc))
            except BaseException as exc:
                self.abort(f"unexpected {type(exc).__name__}: {exc}", error=repr(exc))
                raise
            finally:
                # Whatever happened: nothing of ours stays applied, no load keeps running.
                self.revert_everything(self.t0, "cleanup")
                for load in self.loads:
                    load.cancel()

    def abort(self, reason: str, **fields: Any) -> ExperimentResult:
        self.say(f"aborting: {reason}; ending every fault")
        self.revert_everything(self.t0, "aborted")
        for load in self.loads:
            load.cancel()
        self.journal(EventKind.ABORTED, reason=reason, **fields)
        return self.finish("aborted", reason)

    def finish(self, verdict: Verdict, reason: str) -> ExperimentResult:
        self.result.verdict, self.result.reason = verdict, reason
        self.result.faults = self.records
        self.journal(EventKind.EXPERIMENT_FINISHED, verdict=verdict, reason=reason)
        self.run_dir.write_json(
            RunFile.EXPERIMENT,
            {
                "verdict": verdict,
                "reason": reason,
                "seed": self.schedule.seed,
                "faults": self.records,
                "steady_state": {
                    phase: (report.verdict if report is not None else None)
                    for phase, report in (("before", self.result.before), ("after", self.result.after))
                },
                "method_slo": self.result.method_slo.verdict if self.result.method_slo else None,
                "recovery": (
                    None
                    if self.result.recovery is None
                    else {
                        "slow_threshold_s": self.slow_threshold_s,
                        "faults": recovery_records(self.result.recovery),
                    }
                ),
                "remediation": (
                    None
                    if self.remediation is None
                    else {
                        "policy": self.remediation.model_dump(mode="json"),
                        "actions": self.result.remediation_actions,
                    }
                ),
            },
        )
        self.say(f"verdict: {verdict} - {reason}")
        return self.result


def _run_directory(
    given: RunDirectory | Path | str | None, out_dir: Path | str, scenario: str
) -> RunDirectory:
    """A new run directory in `out_dir`, or `given`, which must exist and hold no run yet."""
    if given is None:
        return RunDirectory.create(Path(out_dir), scenario)
    run_dir = given if isinstance(given, RunDirectory) else RunDirectory(Path(given))
    if not run_dir.path.is_dir():
        raise ConfigError(
            f"run_dir {run_dir.path} does not exist; give an existing directory or leave it out"
        )
    taken = run_dir.holds_run()
    if taken:
        raise ConfigError(
            f"run_dir {run_dir.path} already holds a run ({', '.join(taken)}); give a new directory"
        )
    return run_dir


class _RestartsUnderLock:
    """What the experiment's remediation loop restarts through: the lab's backend, under the lock the
    timeline applies and ends faults with, so that no fault is applied to or reverted against a service
    while it restarts; the faults the restart cleared are journaled before the lock is let go."""

    def __init__(self, experiment: _Experiment) -> None:
        self.experiment = experiment

    def restart(self, service: Any, *, remediation_reason: str | None = None) -> None:
        experiment = self.experiment
        with experiment._faults_lock:
            experiment.injector.backend.restart(service, remediation_reason=remediation_reason)
            experiment.cleared_by_restart(str(service))


def run_experiment(
    lab_dir: Path | str,
    spec: ExperimentSpec,
    *,
    run_dir: RunDirectory | Path | str | None = None,
    out_dir: Path | str = Path("reports/runs"),
    say: Callable[[str], None] | None = print,
) -> ExperimentResult:
    """Run the chaos experiment `spec` against the lab in `lab_dir`; returns its result and verdict.

    1. Checks everything first: the lab is up (LabNotRunningError), each fault can be applied here
       (ConfigError): nothing is injected before. Then waits (bounded) until Prometheus has scraped every
       service (BackendError if it does not).
    2. Creates a run directory in `out_dir`, or uses `run_dir` (an existing directory that holds no run
       yet, e.g. one `labkit run` made for a notebook) (params.json, events.jsonl, requests.jsonl, slo.json,
       experiment.json, steady_state/{before,after}/), and prints and journals the plan.
    3. Steady state before (`spec.steady_state.duration_s` of the spec's load, judged against the SLO spec):
       when it does not hold, nothing is injected and the verdict is `aborted`.
    4. The method: `spec.duration_s` of open-loop load while the faults start and end on the timeline
       (journal `fault_start`/`fault_end` with their outcome). Each fault also ends by itself (its TTL in
       the supervisor or the wrapper), even if this process is SIGKILLed.
    5. Waits up to `spec.settle_timeout_s` for every service to be ready, then the steady state after:
       `held` when it holds, `deviated` when it does not (`not checked` without a steady state).
    SIGINT/SIGTERM (or an error) end every applied fault, journal `aborted` and give the verdict `aborted`.

    With `spec.remediation`, a remediation loop runs beside the method's load, reading p95 latency from the
    lab's Prometheus and restarting the policy's target after `breaches_to_act` breaches (cooldown, cap,
    dry-run as the policy says); every decision is journaled, and a restart that clears a fault (a wrapper
    restart drops the wrapper's faults) journals its end. Recovery measures per fault (time to detect, time
    to recover, requests lost) are computed after the method from the journal and the samples; they are in
    the result, in `experiment.json` and journaled as `recovery` events. `say` gets progress lines (None:
    silent).
    """
    say = say or (lambda _line: None)
    if not isinstance(spec, ExperimentSpec):
        raise ConfigError(
            f"run_experiment takes an ExperimentSpec, not a {type(spec).__name__}; build one with "
            "labkit.chaos.ExperimentSpec(schedule=[...], duration_s=...)"
        )
    injector = FaultInjector(lab_dir)  # LabNotRunningError when the lab is not up
    try:
        injector.preflight(spec.schedule.faults)
        if spec.remediation is not None:
            on_alert = spec.remediation.on_alert
            refusal = remediation_refusal(injector.config, spec.remediation.target) or (
                None if on_alert is None else alert_refusal(injector.backend.lab.rules_dir, on_alert)
            )
            if refusal is not None:
                raise ConfigError(refusal)
        # Right after `labkit up`, Prometheus may not have scraped yet: a fault before its first scrape
        # (a kill) would be missing from the run's series and invisible to increase().
        injector.backend.wait_scraped(say=say)
        load_slo_spec(spec.slo_spec)  # a broken SLO spec is a ConfigError now, not after the method
        plan = plan_text(spec.schedule, duration_s=spec.duration_s)
        run_dir = _run_directory(run_dir, out_dir, spec.scenario)
        resolved_lab = Path(lab_dir).resolve()
        run_dir.write_json(RunFile.PARAMS, spec.params_record(resolved_lab, plan))
        run_dir.journal(
            EventKind.EXPERIMENT_STARTED,
            run_id=run_dir.run_id,
            duration_s=spec.duration_s,
            lab_dir=str(resolved_lab),
            steady_state=spec.steady_state.enabled,
        )
        schedule = spec.schedule
        run_dir.journal(EventKind.SCHEDULE, seed=schedule.seed, faults=schedule.to_records(), plan=plan)
        say(plan)
        say(f"run directory: {run_dir.path}")
        # Every notification the lab's Alertmanager sends while the experiment runs lands in its alerts.jsonl.
        with AlertFeed(injector.backend).follow_into(run_dir):
            return _Experiment(spec, injector=injector, run_dir=run_dir, say=say).run()
    finally:
        injector.close()
