"""A run directory read while it grows: the journal, the requests (the method's and the steady-state checks'),
Alertmanager's notifications, each followed from where the last read stopped. What the live figure, the
progress line of `labkit run` and their tests read; a torn last line waits for its end, never an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.measure.load import requests_frame
from labkit.measure.slo.client import SamplesError, samples_frame
from labkit.notifications import parse_alert_time
from labkit.report.data import RunData, _phases
from labkit.rundir import EventKind, RunDirectory, RunFile, RunFolder, run_start_of

__all__ = ["AlertSpan", "JsonlFollower", "RunFollower", "RunProgress"]

logger = logging.getLogger(__name__)


class JsonlFollower:
    """The JSON objects appended to a JSON Lines file since the last `read_new()` (none while it does not
    exist). A line without its newline yet is left for the next read; a line that is not a JSON object is
    counted in `skipped`, not raised: a live view must not stop on what the report will name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.skipped = 0
        self._offset = 0

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        rows = []
        for line in chunk[:end].split(b"\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                rows.append(record)
            else:
                self.skipped += 1
        return rows


@dataclass(frozen=True)
class AlertSpan:
    """One alert from Alertmanager's notifications: firing from `start` to `end` (None: still firing)."""

    alertname: str
    severity: str
    start: float
    end: float | None


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands, from its journal: the phase now (`steady state before`, `method`, ...), seconds
    into it and its planned length, seconds since the run's first event and the planned total (None when
    the journal does not say), faults applied of those planned, those active now, the requests answered."""

    phase: str | None
    phase_elapsed_s: float
    phase_planned_s: float | None
    elapsed_s: float
    planned_s: float | None
    faults_applied: int
    faults_failed: int
    faults_planned: int
    active: tuple[str, ...]
    requests: int
    failed: int
    finished: bool
    experiment: bool = True  # a chaos experiment's run, else a load run's

    def line(self) -> str:
        """One line for a terminal: `method 7.2/20 s · 12.3/26 s in all · faults 1/1 (kill model) · ...`."""
        parts = []
        if self.phase is not None:
            planned = f"/{self.phase_planned_s:g}" if self.phase_planned_s else ""
            parts.append(f"{self.phase} {self.phase_elapsed_s:.0f}{planned} s")
        total = f"/{self.planned_s:.0f}" if self.planned_s else ""
        parts.append(f"{self.elapsed_s:.0f}{total} s in all")
        if self.faults_planned:
            faults = f"faults {self.faults_applied}/{self.faults_planned} applied"
            if self.faults_failed:
                faults += f", {self.faults_failed} failed"
            if self.active:
                faults += f" (active: {', '.join(self.active)})"
            parts.append(faults)
        parts.append(f"{self.requests} requests, {self.failed} failed")
        if self.finished:
            parts.append("experiment finished" if self.experiment else "load finished")
        return " · ".join(parts)


def _times(events: list[dict[str, Any]]) -> list[float]:
    return [float(e["wall_time"]) for e in events if isinstance(e.get("wall_time"), int | float)]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


_PHASE_LABELS = {"before": "steady state before", "method": "method", "after": "steady state after"}
_SAMPLE_PARTS = ("before", "method", "after")


@dataclass
class RunFollower:
    """A run directory followed while it grows: call `poll()`, then read `run_data(now)` (a RunData of what
    is there, open phases and faults drawn up to `now`), `alerts(now)` and `progress(now)`."""

    path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {p: [] for p in _SAMPLE_PARTS})
    notifications: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        checks = self.path / RunFolder.STEADY_STATE
        self._followers = {
            "events": JsonlFollower(self.path / RunFile.EVENTS),
            "alerts": JsonlFollower(self.path / RunFile.ALERTS),
            "method": JsonlFollower(self.path / RunFile.REQUESTS),
            "before": JsonlFollower(checks / "before" / RunFile.REQUESTS),
            "after": JsonlFollower(checks / "after" / RunFile.REQUESTS),
        }

    def poll(self) -> bool:
        """Read what was appended since the last poll; whether anything was."""
        grew = False
        for name, follower in self._followers.items():
            new = follower.read_new()
            grew = grew or bool(new)
            if name == "events":
                self.events += new
            elif name == "alerts":
                self.notifications += new
            else:
                self.rows[name] += new
        if not self.params:
            self.params = RunDirectory(self.path).read_json_object(RunFile.PARAMS, []) or {}
        return grew

    # ---- what the figure draws ------------------------------------------------------------------------
    def _samples(self, part: str) -> pd.DataFrame:
        rows = self.rows[part]
        if not rows:
            return pd.DataFrame()
        try:
            return samples_frame(rows)
        except SamplesError as exc:  # rows of another shape: the report will say so; the view shows none
            logger.info("%s: %s", self.path, exc)
            return pd.DataFrame()

    def _open_faults(self) -> list[dict[str, Any]]:
        ended = {e.get("fault_id") for e in self.events if e.get("kind") == EventKind.FAULT_END}
        return [
            e
            for e in self.events
            if e.get("kind") == EventKind.FAULT_START and e.get("fault_id") not in ended
        ]

    def run_data(self, now: float) -> RunData:
        """What is there as a RunData: open phases end at `now`, an active fault is drawn up to `now` (the
        journal's own `fault_end` replaces it once written)."""
        now = self._until(now)
        closing = [{**e, "kind": EventKind.FAULT_END, "wall_time": now} for e in self._open_faults()]
        events = self.events + closing + [{"wall_time": now}]
        samples = {part: self._samples(part) for part in _SAMPLE_PARTS}
        sends = [{"intended_send": t} for f in samples.values() if not f.empty for t in f["intended_send"]]
        start = run_start_of(self.events, sends)
        starts = _times([e for e in self.events if e.get("kind") == EventKind.METHOD_STARTED])
        origin = starts[0] if starts else start
        return RunData(
            path=self.path,
            params=self.params,
            samples=samples["method"] if not samples["method"].empty else samples_frame(requests_frame([])),
            check_samples={p: samples[p] for p in ("before", "after") if not samples[p].empty},
            events=events,
            start=start,
            end=now if start is not None else None,
            origin=origin,
        )

    def _finished(self) -> bool:
        """Whether the experiment has finished (or aborted); for a load run without one, its load."""
        kinds = {e.get("kind") for e in self.events}
        if EventKind.EXPERIMENT_STARTED not in kinds:
            return EventKind.LOAD_FINISHED in kinds
        return EventKind.EXPERIMENT_FINISHED in kinds or EventKind.ABORTED in kinds

    def _until(self, now: float) -> float:
        """`now`, or the journal's last event once the experiment has finished (its run ends there)."""
        if not self._finished():
            return now
        return max(_times(self.events), default=now)

    def alerts(self, now: float) -> list[AlertSpan]:
        """Each alert's firing span (by fingerprint, else name and labels), from its first firing notification
        to the resolved one (None while firing)."""
        spans: dict[str, dict[str, Any]] = {}
        for note in self.notifications:
            given = note.get("labels")
            labels: dict[str, Any] = given if isinstance(given, dict) else {}
            key = str(note.get("fingerprint") or (note.get("alertname"), sorted(labels.items())))
            start = parse_alert_time(str(note.get("startsAt") or ""))
            if note.get("status") == "firing" and key not in spans:
                spans[key] = {
                    "name": str(note.get("alertname")),
                    "severity": str(labels.get("severity", "")),
                    "start": start if start is not None else note.get("received_unix"),
                    "end": None,
                }
            elif note.get("status") == "resolved" and key in spans:
                end = parse_alert_time(str(note.get("endsAt") or ""))
                spans[key]["end"] = end if end is not None else note.get("received_unix")
        return [
            AlertSpan(s["name"], s["severity"], float(s["start"]), _number(s["end"]))
            for s in spans.values()
            if isinstance(s["start"], int | float)
        ]

    # ---- what the progress line says --------------------------------------------------------------------
    def _planned(self) -> tuple[float | None, dict[str, float], int]:
        given, chaos = self.params.get("experiment"), self.params.get("chaos")
        experiment: dict[str, Any] = given if isinstance(given, dict) else {}
        listed = chaos.get("faults") if isinstance(chaos, dict) else None
        faults = listed if isinstance(listed, list) else []
        load = self.params.get("load")
        spec = load.get("spec") if isinstance(load, dict) else None
        # An experiment's method, else a load run's duration (params.json's "load").
        method = self.params.get("duration_s", spec.get("duration_s") if isinstance(spec, dict) else None)
        steady = experiment.get("steady_state_s") if experiment.get("steady_state") else 0.0
        if not isinstance(method, int | float):
            return None, {}, len(faults)
        lengths = {"method": float(method)}
        if isinstance(steady, int | float) and steady:
            lengths |= {"before": float(steady), "after": float(steady)}
        return sum(lengths.values()), lengths, len(faults)

    def progress(self, now: float) -> RunProgress:
        planned, lengths, faults_planned = self._planned()
        times = _times(self.events)
        first = min(times, default=now)
        phases = _phases([*self.events, {"wall_time": now}])
        kinds = [e.get("kind") for e in self.events]
        finished = self._finished()
        # An open phase ends at `now`; between two phases (the settling after the method) none is current.
        current = phases[-1] if phases and phases[-1].end >= now and not finished else None
        rows = [r for part in _SAMPLE_PARTS for r in self.rows[part]]
        return RunProgress(
            phase=None if current is None else _PHASE_LABELS.get(current.key, current.name),
            phase_elapsed_s=0.0 if current is None else max(0.0, now - current.start),
            phase_planned_s=None if current is None else lengths.get(current.key),
            elapsed_s=max(0.0, (max(times) if finished and times else now) - first),
            planned_s=planned,
            faults_applied=kinds.count(EventKind.FAULT_START),
            faults_failed=kinds.count(EventKind.FAULT_FAILED),
            faults_planned=faults_planned,
            active=tuple(f"{e.get('fault_kind')} {e.get('target')}" for e in self._open_faults()),
            requests=len(rows),
            failed=sum(1 for r in rows if r.get("ok") is not True),
            finished=finished,
            experiment=EventKind.EXPERIMENT_STARTED in kinds,
        )
