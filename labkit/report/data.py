"""Everything one run directory holds, loaded once for a report: parameters, run status, client samples,
the journal, SLO results, the chaos experiment and the Prometheus series saved by `labkit.measure.collect`.

Loading never fails on a partial run: a missing optional file leaves its field empty (`RunData.missing`
says which, in words) and an unreadable one is named in `RunData.problems`; the report renders what is left.
All times are unix seconds; `t_s` is seconds since the run's time origin (`RunData.origin`): the method's
start where a chaos experiment ran (the clock its faults are scheduled on), else the run's start.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TypeGuard, get_args

import pandas as pd

from labkit.errors import LabkitError
from labkit.measure.load import requests_frame
from labkit.measure.recovery import (
    FALLBACK_SLOW_S,
    RECOVERY_COLUMNS,
    FaultWindow,
    default_error_budget,
    default_slow_threshold_s,
    fault_windows_from_journal,
    recovery_measures,
)
from labkit.measure.slo import (
    SamplesError,
    SloReport,
    evaluate_client_slos,
    load_slo_spec,
    read_samples,
    samples_frame,
)
from labkit.measure.slo.client import completion_times
from labkit.rundir import EventKind, RunDirectory, RunDirectoryError, RunFile, RunFolder, run_start_of
from labkit.verdicts import ExperimentVerdict, SloVerdict, experiment_verdict

__all__ = [
    "FAULT_COLUMNS",
    "PHASE_NAMES",
    "REMEDIATION_COLUMNS",
    "Phase",
    "ReportError",
    "RunData",
    "newest_run",
    "run_sort_key",
]

logger = logging.getLogger(__name__)

# Faults as the report draws them: one row per fault window of the journal.
FAULT_COLUMNS = ("fault_id", "kind", "target", "start", "end", "start_t_s", "end_t_s", "instantaneous")
# Remediation actions (acted or dry run) as journaled by labkit.chaos._remediation.
REMEDIATION_COLUMNS = (
    "wall_time",
    "t_s",
    "target",
    "action",
    "dry_run",
    "outcome",
    "value_s",
    "threshold_s",
    "detail",
)

# The phases of a chaos experiment as the journal marks them, in order, by what a person calls them.
PHASE_NAMES = {
    "before": "steady state before",
    "method": "method (faults)",
    "after": "steady state after",
}

# `<UTC stamp>-<scenario>`, as labkit.rundir.new_run_id makes it.
_RUN_ID = re.compile(r"^(?P<stamp>\d{8}T\d{6})(?:\.\d+)?Z-(?P<scenario>.+)$")


class ReportError(RunDirectoryError):
    """A run directory cannot be reported on (it does not exist, or there is none to pick)."""


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_time(value: object) -> float | None:
    """Unix seconds from a number or an ISO 8601 string (naive means UTC); None when neither."""
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return None


def _stamp_time(run_id: str) -> float | None:
    """Unix seconds of the UTC stamp a run id starts with, or None."""
    match = _RUN_ID.match(run_id)
    if match is None:
        return None
    return datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp()


def run_sort_key(path: Path) -> tuple[float, str]:
    """Newest last: run.json's `started_at`, else the run id's stamp, else the directory's mtime."""
    started: float | None = None
    try:
        info = RunDirectory(path).read_json(RunFile.RUN)
        started = _parse_time(info.get("started_at")) if isinstance(info, dict) else None
    except (OSError, ValueError):
        started = None
    if started is None:
        started = _stamp_time(path.name)
    if started is None:
        try:
            started = path.stat().st_mtime
        except OSError:
            started = 0.0
    return started, path.name


def newest_run(runs_dir: Path | str) -> Path:
    """The newest run directory under `runs_dir` (see `run_sort_key`)."""
    directory = Path(runs_dir)
    runs = (
        [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if directory.is_dir()
        else []
    )
    if not runs:
        raise ReportError(
            f"no run directories under {directory}; run a scenario first (`labkit run baseline`) "
            "or pass run_dir explicitly"
        )
    return max(runs, key=run_sort_key)


def _empty_samples() -> pd.DataFrame:
    return samples_frame(requests_frame([]))


def _read_requests(path: Path, problems: list[str]) -> pd.DataFrame:
    if not path.exists():
        return _empty_samples()
    try:
        return read_samples(path)
    except SamplesError as exc:
        problems.append(f"{path.name}: {exc}")
        return _empty_samples()


def _read_check_samples(folder: Path, problems: list[str]) -> dict[str, pd.DataFrame]:
    """Each steady-state check's samples by phase, those with any."""
    checks = {}
    for phase in ("before", "after"):
        frame = _read_requests(folder / phase / RunFile.REQUESTS, problems)
        if not frame.empty:
            checks[phase] = frame
    return checks


def _read_csv(path: Path, problems: list[str]) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:  # pandas' parser and empty-data errors are ValueErrors
        problems.append(f"{RunFolder.PROMETHEUS}/{path.name}: unreadable ({exc})")
        return None


def _rebase(frame: pd.DataFrame, start: float | None) -> pd.DataFrame:
    """Parse `timestamp` (ISO 8601 UTC) and recount `t_s` from the run's start, so that every series and
    the journal share one time axis whatever start the collector used."""
    if "timestamp" not in frame.columns:
        return frame
    frame = frame.copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    if start is not None:
        unix = (frame["timestamp"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        frame["t_s"] = unix - start
    return frame


def _read_series(directory: Path, start: float | None, problems: list[str]) -> dict[str, pd.DataFrame]:
    """Every series CSV of `prometheus/` by name, on the run's time axis; unreadable ones are problems."""
    if not directory.is_dir():
        return {}
    series: dict[str, pd.DataFrame] = {}
    for path in sorted(directory.glob("*.csv")):
        if path.name == Path(RunFile.CLIENT_VS_SERVER).name:
            continue
        frame = _read_csv(path, problems)
        if frame is None:
            continue
        try:
            series[path.stem] = _rebase(frame, start)
        except (ValueError, TypeError) as exc:  # a timestamp that is not ISO 8601
            problems.append(f"{RunFolder.PROMETHEUS}/{path.name}: unreadable timestamps ({exc})")
    return series


def _first_number(*values: object) -> float | None:
    for value in values:
        if _is_number(value):
            return float(value)
    return None


def _get(mapping: Mapping[str, Any] | None, *keys: str) -> Any:
    """`mapping[k1][k2]...`, or None where a level is missing or not a mapping."""
    value: Any = mapping
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


@dataclass(frozen=True)
class Phase:
    """One phase of a chaos experiment (`PHASE_NAMES`), unix seconds, from the journal."""

    key: str
    start: float
    end: float

    @property
    def name(self) -> str:
        return PHASE_NAMES.get(self.key, self.key)


def _phases(events: list[dict[str, Any]]) -> list[Phase]:
    """Steady state before, method, steady state after: each from its start event to its verdict (or end)
    event; a phase that never ended (an aborted run) ends at the journal's last event."""
    last = max((float(e["wall_time"]) for e in events if _is_number(e.get("wall_time"))), default=None)
    opened: dict[str, float] = {}
    phases: list[Phase] = []
    for event in events:
        at, kind = event.get("wall_time"), event.get("kind")
        if not _is_number(at):
            continue
        key = event.get("phase") if kind in (EventKind.STEADY_STATE_STARTED, EventKind.STEADY_STATE) else None
        if kind == EventKind.STEADY_STATE_STARTED and isinstance(key, str):
            opened[key] = float(at)
        elif kind == EventKind.METHOD_STARTED:
            opened["method"] = float(at)
        elif kind == EventKind.STEADY_STATE and isinstance(key, str) and key in opened:
            phases.append(Phase(key, opened.pop(key), float(at)))
        elif kind == EventKind.METHOD_FINISHED and "method" in opened:
            phases.append(Phase("method", opened.pop("method"), float(at)))
    if last is not None:
        phases += [Phase(key, begun, max(begun, last)) for key, begun in opened.items()]
    return sorted(phases, key=lambda p: p.start)


@dataclass(frozen=True)
class RunData:
    """One run directory, read. Build it with `RunData.load(path)`.

    Fields are empty (`{}`, `[]`, an empty frame or None) where the run lacks the file; `problems` names
    files that were there but could not be read. `start` is the run's start (unix s, `run_start_of`: the
    first journal event or intended send; else Prometheus' window start; else run.json's `started_at`);
    `end` its end (the last journal event or request completion; else the window's end, else `finished_at`);
    `origin` the time origin of every figure and table (the journal's `method_started`, else `start`).
    The Prometheus frames in `series` have `t_s` recounted from `origin`. What is derived from the files
    (faults, recovery, judged SLOs, all samples) is computed once, on first use: a RunData never changes.
    """

    path: Path
    params: dict[str, Any] = field(default_factory=dict)  # params.json
    info: dict[str, Any] = field(default_factory=dict)  # run.json (status, parameters, headline)
    lab: dict[str, Any] = field(default_factory=dict)  # lab.json (engine, model, host, versions)
    samples: pd.DataFrame = field(default_factory=_empty_samples)  # requests.jsonl, one row per request
    # steady_state/<phase>/requests.jsonl: the steady-state checks' own requests, by phase (before, after)
    check_samples: dict[str, pd.DataFrame] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # events.jsonl
    slo: dict[str, Any] | None = None  # slo.json (a labkit.measure.slo.SloReport)
    experiment: dict[str, Any] | None = None  # experiment.json
    series: dict[str, pd.DataFrame] = field(default_factory=dict)  # prometheus/<name>.csv by name
    window: dict[str, Any] | None = None  # prometheus/window.json
    server_slis: dict[str, Any] | None = None  # prometheus/server_slis.json
    client_vs_server: pd.DataFrame | None = None  # prometheus/client_vs_server.csv
    start: float | None = None
    end: float | None = None
    origin: float | None = None
    problems: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path | str) -> RunData:
        """Read everything present in the run directory `path` (see the class docstring)."""
        directory = Path(path)
        if not directory.is_dir():
            raise ReportError(
                f"run directory {directory} does not exist; pass a directory under reports/runs"
            )
        problems: list[str] = []
        run = RunDirectory(directory)
        samples = _read_requests(run.file(RunFile.REQUESTS), problems)
        events = list(run.read_jsonl(RunFile.EVENTS, problems))
        window = run.read_json_object(RunFile.WINDOW, problems)
        info = run.read_json_object(RunFile.RUN, problems) or {}
        start = run_start_of(events, ({"intended_send": t} for t in samples["intended_send"]))
        if start is None:
            start = _first_number(
                _get(window, "run_start"), _get(window, "start"), _parse_time(info.get("started_at"))
            )
        end = _run_end(events, samples)
        if end is None:
            end = _first_number(_get(window, "end"), _parse_time(info.get("finished_at")))
        method_started = [e.get("wall_time") for e in events if e.get("kind") == EventKind.METHOD_STARTED]
        origin = _first_number(*method_started, start)
        comparison_path = run.file(RunFile.CLIENT_VS_SERVER)
        return cls(
            path=directory,
            params=run.read_json_object(RunFile.PARAMS, problems) or {},
            info=info,
            lab=run.read_json_object(RunFile.LAB, problems) or {},
            samples=samples,
            check_samples=_read_check_samples(run.file(RunFolder.STEADY_STATE), problems),
            events=events,
            slo=run.read_json_object(RunFile.SLO, problems),
            experiment=run.read_json_object(RunFile.EXPERIMENT, problems),
            series=_read_series(run.file(RunFolder.PROMETHEUS), origin, problems),
            window=window,
            server_slis=run.read_json_object(RunFile.SERVER_SLIS, problems),
            client_vs_server=_read_csv(comparison_path, problems) if comparison_path.exists() else None,
            start=start,
            end=end,
            origin=origin,
            problems=tuple(problems),
        )

    # ---- identity ---------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def scenario(self) -> str | None:
        """run.json's scenario, else params.json's, else the part of the run id after its stamp."""
        for value in (self.info.get("scenario"), self.params.get("scenario")):
            if isinstance(value, str) and value:
                return value
        match = _RUN_ID.match(self.run_id)
        return match["scenario"] if match else None

    @property
    def status(self) -> str | None:
        """run.json's status (running, completed, failed), or None without run.json."""
        status = self.info.get("status")
        return status if isinstance(status, str) else None

    @property
    def experiment_verdict(self) -> str | None:
        """The chaos experiment's verdict (labkit.verdicts: held, deviated, aborted, not checked), from
        experiment.json or the journal's `experiment_finished`; None when no experiment ran."""
        finished = [e for e in self.events if e.get("kind") == EventKind.EXPERIMENT_FINISHED]
        recorded = self.info.get("verdict")
        for value in (
            _get(self.experiment, "verdict"),
            finished[-1].get("verdict") if finished else None,
            recorded if recorded in get_args(ExperimentVerdict) or recorded == "completed" else None,
        ):
            if isinstance(value, str) and value:
                return (
                    "not checked" if value == "completed" and not self._checked else experiment_verdict(value)
                )
        return None

    @property
    def _checked(self) -> bool:
        """Whether the experiment had a steady-state check (labkit 0.1 said `completed` either way)."""
        started = [e for e in self.events if e.get("kind") == EventKind.EXPERIMENT_STARTED]
        if started and started[0].get("steady_state") is False:
            return False
        reason = _get(self.experiment, "reason")
        return not (isinstance(reason, str) and "no steady-state check" in reason)

    @cached_property
    def judged_slos(self) -> SloReport | None:
        """The run's SLO report: slo.json when present and valid, else judged now from its samples against
        the default spec (`evaluate_client_slos`); None when the run has neither. Judged once per load."""
        if self.slo is not None:
            try:
                return SloReport.model_validate(self.slo)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                logger.warning("%s/slo.json is not an SLO report (%s); judging the samples", self.path, exc)
        if self.samples.empty:
            return None
        try:
            return evaluate_client_slos(self.samples, load_slo_spec())
        except LabkitError as exc:
            logger.warning("cannot judge the samples of %s: %s", self.path, exc)
            return None

    @property
    def slo_verdict(self) -> str | None:
        """The SLOs' verdict of slo.json (met, violated), else run.json's when it is an SLO verdict; None
        when neither says."""
        for value in (_get(self.slo, "verdict"), self.info.get("verdict")):
            if value in get_args(SloVerdict):
                return str(value)
        return None

    @property
    def verdict(self) -> str | None:
        """The run's one-word verdict for lists: the experiment's when one ran, else the SLOs', else
        run.json's; None when nothing judged the run (labkit.verdicts has the words)."""
        for value in (self.experiment_verdict, self.slo_verdict, self.info.get("verdict")):
            if isinstance(value, str) and value:
                return experiment_verdict(value)
        return None

    @property
    def duration_s(self) -> float | None:
        """`end - start`, seconds; None when either is unknown."""
        if self.start is None or self.end is None:
            return None
        return self.end - self.start

    @property
    def steady_state(self) -> dict[str, dict[str, Any]]:
        """The steady-state checks' journal events by phase (before, after): verdict, requests, good
        requests, violated and no-data objectives."""
        return {
            str(e["phase"]): e
            for e in self.events
            if e.get("kind") == EventKind.STEADY_STATE and isinstance(e.get("phase"), str)
        }

    @cached_property
    def all_samples(self) -> pd.DataFrame:
        """Every request of the run in send order: the steady-state checks' and the method's (timelines draw
        them all, as the server saw them all; the SLOs of the method judge `samples` only)."""
        frames = [f for f in (self.check_samples.get("before"), self.samples, self.check_samples.get("after"))
                  if f is not None and not f.empty]  # fmt: skip
        if len(frames) <= 1:
            return frames[0] if frames else self.samples
        return pd.concat(frames, ignore_index=True).sort_values("intended_send", kind="stable")

    @property
    def missing(self) -> list[str]:
        """What the run lacks, one sentence per missing part (for a report's "what is not here")."""
        checks = [
            (self.samples.empty, "no client samples (requests.jsonl): no client-side SLIs"),
            (not self.events, "no journal (events.jsonl): no faults or remediation to mark"),
            (self.slo is None, "no SLO results (slo.json)"),
            (
                not self.series,
                "no Prometheus series (prometheus/): the run ended without collecting them "
                "(labkit.measure.collect.save_prometheus_series while the lab is up)",
            ),
            (
                self.client_vs_server is None,
                "no client-vs-server comparison (prometheus/client_vs_server.csv)",
            ),
        ]
        return [sentence for absent, sentence in checks if absent]

    # ---- time -------------------------------------------------------------------------------------
    def t_s(self, wall_time: float) -> float:
        """Seconds since the time origin (`origin`) of a unix time (the time itself when it is unknown)."""
        return wall_time - (self.origin or 0.0)

    @property
    def has_method(self) -> bool:
        """Whether the time origin is a chaos experiment's method start (else the run's start)."""
        return self.origin is not None and self.origin != self.start

    @cached_property
    def phases(self) -> list[Phase]:
        """The experiment's phases from the journal (steady state before, method, after); [] for a run
        that had none (a baseline)."""
        return _phases(self.events)

    @property
    def rate_window_s(self) -> float | None:
        """The window of Prometheus' rate() in the series (window.json), seconds; None when unknown."""
        return _first_number(_get(self.window, "rate_window_s"))

    @property
    def t_range(self) -> tuple[float, float] | None:
        """The x range every timeline shares, seconds since the origin: the run, widened to the Prometheus
        window when that is larger; None when nothing says when the run was."""
        if self.start is None or self.origin is None:
            return None
        low, high = self.t_s(self.start), self.t_s(self.start) + (self.duration_s or 0.0)
        window_start, window_end = _get(self.window, "start"), _get(self.window, "end")
        if _is_number(window_start):
            low = min(low, self.t_s(float(window_start)))
        if _is_number(window_end):
            high = max(high, self.t_s(float(window_end)))
        return (low, high) if high > low else None

    # ---- faults, remediation, recovery --------------------------------------------------------------
    @cached_property
    def fault_windows(self) -> list[FaultWindow]:
        """Fault windows of the journal (labkit.measure.recovery), in start order."""
        return fault_windows_from_journal(self.events)

    @cached_property
    def faults(self) -> pd.DataFrame:
        """One row per fault window (`FAULT_COLUMNS`): unix and t_s times, and whether it was
        instantaneous (a kill, restart or unload: drawn as a line, not a span)."""
        rows = [
            {
                "fault_id": w.fault_id,
                "kind": w.kind,
                "target": w.target,
                "start": w.start,
                "end": w.end,
                "start_t_s": self.t_s(w.start),
                "end_t_s": self.t_s(w.end),
                "instantaneous": w.instantaneous,
            }
            for w in self.fault_windows
        ]
        return pd.DataFrame(rows, columns=list(FAULT_COLUMNS))

    @cached_property
    def remediation_actions(self) -> pd.DataFrame:
        """Remediation actions, acted or dry run (`REMEDIATION_COLUMNS`), from the journal's
        `remediation_action` events, else from experiment.json's `remediation.actions`."""
        actions = [e for e in self.events if e.get("kind") == EventKind.REMEDIATION_ACTION]
        if not actions:
            listed = _get(self.experiment, "remediation", "actions")
            actions = [a for a in listed if isinstance(a, dict)] if isinstance(listed, list) else []
        rows = [
            {
                "wall_time": float(a["wall_time"]),
                "t_s": self.t_s(float(a["wall_time"])),
                "target": a.get("target"),
                "action": a.get("action", "restart"),
                "dry_run": bool(a.get("dry_run")),
                "outcome": a.get("outcome"),
                "value_s": a.get("value_s"),
                "threshold_s": a.get("threshold_s"),
                "detail": a.get("detail"),
            }
            for a in actions
            if _is_number(a.get("wall_time"))
        ]
        return pd.DataFrame(rows, columns=list(REMEDIATION_COLUMNS))

    @property
    def slow_threshold_s(self) -> float:
        """Seconds above which a request counts as bad in recovery measures: experiment.json's, else the
        experiment's or remediation's parameter, else the SLO spec's tightest end-to-end threshold, else 3."""
        given = _first_number(
            _get(self.experiment, "recovery", "slow_threshold_s"),
            _get(self.params, "experiment", "slow_threshold_s"),
            _get(self.params, "remediation", "threshold_s"),
        )
        if given is not None:
            return given
        try:
            slos = load_slo_spec()
        except LabkitError as exc:
            logger.warning("no SLO spec for the slow threshold (%s); using %g s", exc, FALLBACK_SLOW_S)
            return FALLBACK_SLOW_S
        return default_slow_threshold_s(slos)

    @cached_property
    def recovery(self) -> pd.DataFrame:
        """Recovery measures per fault (labkit.measure.recovery.RECOVERY_COLUMNS): experiment.json's when it
        has them, else computed from the journal's fault windows and the samples (`slow_threshold_s`)."""
        recorded = _get(self.experiment, "recovery", "faults")
        if isinstance(recorded, list) and recorded:
            return pd.DataFrame([r for r in recorded if isinstance(r, dict)], columns=RECOVERY_COLUMNS)
        windows = self.fault_windows
        if not windows or self.samples.empty:
            return pd.DataFrame(columns=RECOVERY_COLUMNS)
        # run_end: the run's end bounds the last fault's requests (see labkit.measure.recovery).
        try:
            budget = default_error_budget(load_slo_spec())
        except LabkitError as exc:
            logger.warning("no SLO spec for the error budget (%s); budget burned left out", exc)
            budget = None
        slow = self.slow_threshold_s
        return recovery_measures(
            windows, self.samples, slow_threshold_s=slow, run_end=self.end, error_budget=budget
        )


def _run_end(events: list[dict[str, Any]], samples: pd.DataFrame) -> float | None:
    times = [float(e["wall_time"]) for e in events if _is_number(e.get("wall_time"))]
    if not samples.empty:
        times.append(float(completion_times(samples).max()))
    return max(times) if times else None
