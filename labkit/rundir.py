"""The run directory (`reports/runs/<run_id>/`): every file a run holds and every event its journal records,
declared once here, and the one way to write and read them. Nothing else spells a file name of a run.

Written incrementally, so that a crash leaves a readable partial run: whole files atomically (a reader sees
the old file or the new one), JSON Lines one flushed line at a time (a torn last line is skipped when read).
`run.json` carries `schema_version` (SCHEMA_VERSION); a directory without one was written by labkit 0.1.0
(version 1, the same files without the stamp) and reads the same.

    reports/
      index.html                  every run, newest first (labkit.report.index)
      runs/<run_id>/              <UTC stamp>-<scenario>, e.g. 20261202T124122.18Z-kill_and_recover
        run.json                  schema_version, scenario, parameters, status, verdict, headline (runner)
        params.json               what was asked: "load" (the load spec), the experiment, chaos, remediation
        requests.jsonl            one row per scheduled request (labkit.measure.load.REQUEST_COLUMNS)
        events.jsonl              the journal: one EventKind per line, wall-clock and monotonic times
        alerts.jsonl              Alertmanager's notifications received during the run, one per alert
        logs/failed_requests.jsonl  the wrapper's and model's log lines of failed requests, by X-Request-ID
        slo.json                  the SLO report of the client samples (labkit.measure.slo.SloReport)
        experiment.json           chaos: verdict, faults, recovery measures, remediation actions
        steady_state/before/      a run directory of its own per steady-state check (requests, slo.json)
        steady_state/after/
        capacity.json, points/<NNN>-r<rate>/    the capacity search: its result, a run directory per point
        remediation_ab.json, arms/<NN>-<kind>-<off|on>/   the remediation A/B: its result, one per experiment
        prometheus/<series>.csv   Prometheus' series of the run (labkit.measure.collect.SERIES)
        prometheus/server_slis.json, prometheus/client_vs_server.csv, prometheus/window.json (written last)
        notebook.ipynb, cells.json, kernel.log       the executed scenario notebook, its cells, its kernel
        report.ipynb, report.html                    the SLO report
        smoke.json, report.md     `labkit smoke`'s requests and Prometheus' view of them
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from labkit.atomic import write_atomically
from labkit.errors import LabkitError

__all__ = [
    "INDEX_FILE",
    "RUNS_FOLDER",
    "SCHEMA_VERSION",
    "EventKind",
    "RunDirectory",
    "RunDirectoryError",
    "RunFile",
    "RunFolder",
    "new_run_id",
    "run_directories",
    "run_start_of",
    "series_file",
]

# 2: run.json is written when the directory is made and carries `schema_version`. 1 (labkit 0.1.0): no stamp.
SCHEMA_VERSION = 2

# The reports folder: runs/ holds one run directory per run; index.html lists them.
RUNS_FOLDER = "runs"
INDEX_FILE = "index.html"

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RunDirectoryError(LabkitError):
    """A run directory does not exist, or cannot hold what is asked of it."""


class RunFile(StrEnum):
    """The files of a run directory, as paths relative to it."""

    RUN = "run.json"
    PARAMS = "params.json"
    REQUESTS = "requests.jsonl"
    EVENTS = "events.jsonl"
    SLO = "slo.json"
    EXPERIMENT = "experiment.json"
    NOTEBOOK = "notebook.ipynb"
    CELLS = "cells.json"
    KERNEL_LOG = "kernel.log"  # the kernels' own stderr (their log, a crash), not the notebook's output
    REPORT_NOTEBOOK = "report.ipynb"
    REPORT = "report.html"
    LAB = "lab.json"  # what the run ran on: engine, model, upstream URL and API, backend, host, versions
    SMOKE = "smoke.json"
    SMOKE_REPORT = "report.md"
    ALERTS = "alerts.jsonl"  # Alertmanager's notifications received during the run (labkit.notifications)
    # The wrapper's and model server's log lines of a sample of the run's failed requests, by X-Request-ID
    # (labkit.measure.request_logs): copied when the run ends, since the lab's logs rotate and go with it.
    REQUEST_LOGS = "logs/failed_requests.jsonl"
    CAPACITY = "capacity.json"  # the capacity search: its points, the knee and its interval, the limiting SLO
    REMEDIATION_AB = "remediation_ab.json"  # the A/B: the arms' measures per fault kind, the verdicts
    WINDOW = "prometheus/window.json"  # written last: its presence means a whole collection
    SERVER_SLIS = "prometheus/server_slis.json"
    CLIENT_VS_SERVER = "prometheus/client_vs_server.csv"


class RunFolder(StrEnum):
    """The folders of a run directory."""

    PROMETHEUS = "prometheus"
    STEADY_STATE = "steady_state"  # before/ and after/, each a run directory of its own
    POINTS = "points"  # the capacity search: one run directory per measured load point
    ARMS = "arms"  # the remediation A/B: one run directory per experiment, remediation off or on


def run_directories(reports_dir: Path | str) -> list[Path]:
    """The run directories of a reports folder: `reports_dir/runs/*` (folders only, hidden ones left out:
    a run's space reserve lies beside it), in no particular order; none when there is no runs folder."""
    runs_dir = Path(reports_dir) / RUNS_FOLDER
    if not runs_dir.is_dir():
        return []
    return [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]


def series_file(name: str) -> str:
    """The CSV of one Prometheus series of the run, relative to the run directory."""
    return f"{RunFolder.PROMETHEUS}/{name}.csv"


class EventKind(StrEnum):
    """What a line of `events.jsonl` records (its `kind`). A StrEnum: compares equal to the text it is."""

    # the load generator
    LOAD_STARTED = "load_started"
    LOAD_FINISHED = "load_finished"
    # a chaos experiment
    EXPERIMENT_STARTED = "experiment_started"
    SCHEDULE = "schedule"
    STEADY_STATE_STARTED = "steady_state_started"
    STEADY_STATE = "steady_state"  # a steady-state check's verdict
    METHOD_STARTED = "method_started"
    FAULT_START = "fault_start"
    FAULT_FAILED = "fault_failed"  # could not be applied: no window opens
    FAULT_END = "fault_end"
    FAULT_WINDOW_END = "fault_window_end"  # the end of an instantaneous fault's observation window
    METHOD_FINISHED = "method_finished"
    METHOD_SLO = "method_slo"
    RECOVERY = "recovery"  # one fault's recovery measures (labkit.measure.recovery)
    SETTLED = "settled"
    ABORTED = "aborted"
    EXPERIMENT_FINISHED = "experiment_finished"
    # the remediation loop (labkit.chaos._remediation)
    REMEDIATION_STARTED = "remediation_started"
    REMEDIATION_DECISION = "remediation_decision"
    REMEDIATION_ACTION = "remediation_action"  # acted, or would have (dry run)
    REMEDIATION_ERROR = "remediation_error"
    REMEDIATION_STOPPED = "remediation_stopped"
    # the capacity search (labkit.measure.capacity)
    CAPACITY_STARTED = "capacity_started"
    CAPACITY_POINT = "capacity_point"  # a point measured: its rate, passed or not, saturated, its folder
    CAPACITY_FINISHED = "capacity_finished"  # the knee, its interval, the limiting SLO


def new_run_id(scenario: str) -> str:
    """`<UTC timestamp>-<scenario>`: sorts by time, names what ran."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")[:-4] + "Z"
    return f"{stamp}-{re.sub(r'[^A-Za-z0-9._-]+', '-', scenario).strip('-') or 'run'}"


@dataclass(frozen=True)
class RunDirectory:
    """One run's files. JSON Lines files are appended one complete line at a time and flushed."""

    path: Path

    @classmethod
    def create(cls, parent: Path, scenario: str, run_id: str | None = None) -> RunDirectory:
        """A new run directory `parent/<run_id>` (a new id from `scenario` unless given), stamped."""
        run_id = run_id or new_run_id(scenario)
        if not _RUN_ID.match(run_id):
            raise RunDirectoryError(f"run id {run_id!r} must be 1-128 letters, digits, '.', '_' or '-'")
        run = cls(parent / run_id)
        run.path.mkdir(parents=True, exist_ok=False)
        run.stamp(scenario)
        return run

    @classmethod
    def adopt(cls, path: Path, scenario: str) -> RunDirectory:
        """An existing (or new) folder given for a run, e.g. by `labkit run` to a notebook: made if missing
        and stamped unless it holds a run.json already."""
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        if not run.file(RunFile.RUN).exists():
            run.stamp(scenario)
        return run

    def stamp(self, scenario: str) -> None:
        """Write run.json's first fields: the schema version, the run id, the scenario."""
        self.write_run_record({"run_id": self.run_id, "scenario": scenario})

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: RunFile | RunFolder | str) -> Path:
        return self.path / name

    def holds_run(self) -> list[RunFile]:
        """The files that show a run was already written here (parameters, journal, samples)."""
        return [f for f in (RunFile.PARAMS, RunFile.EVENTS, RunFile.REQUESTS) if self.file(f).exists()]

    def steady_state(self, phase: str) -> RunDirectory:
        """A new run directory for one steady-state check (`before`, `after`) inside this one."""
        return RunDirectory.create(self.file(RunFolder.STEADY_STATE), phase, run_id=phase)

    # ---- whole files ---------------------------------------------------------------------------
    def write_json(self, name: RunFile | str, data: Any) -> None:
        write_atomically(self.path / name, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def read_json(self, name: RunFile | str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def write_text(self, name: RunFile | str, text: str) -> Path:
        path = self.path / name
        write_atomically(path, text)
        return path

    def read_json_object(self, name: RunFile | str, problems: list[str]) -> dict[str, Any] | None:
        """The JSON object in `name`; None when absent; None and a line in `problems` when it is unreadable
        or not an object (a report renders what is left)."""
        try:
            data = self.read_json(name)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            problems.append(f"{name}: unreadable ({exc})")
            return None
        if not isinstance(data, dict):
            problems.append(f"{name}: not a JSON object")
            return None
        return data

    def read_run_record(self) -> dict[str, Any]:
        """run.json as a dict ({} when it is missing or not an object)."""
        try:
            data = self.read_json(RunFile.RUN)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_run_record(self, record: Mapping[str, Any]) -> None:
        """run.json: `record` over what it holds already, stamped with the schema version."""
        self.write_json(RunFile.RUN, {**self.read_run_record(), **record, "schema_version": SCHEMA_VERSION})

    @property
    def schema_version(self) -> int:
        """The version of the layout this directory was written with: run.json's, else 1 (labkit 0.1.0)."""
        value = self.read_run_record().get("schema_version", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) else 1

    # ---- JSON Lines ----------------------------------------------------------------------------
    def append_jsonl(self, name: RunFile | str, record: Mapping[str, Any]) -> None:
        """One line, written and flushed in one call: a reader sees whole lines only."""
        with self.jsonl_writer(name) as write:
            write(record)

    @contextmanager
    def jsonl_writer(self, name: RunFile | str) -> Iterator[Callable[[Mapping[str, Any]], None]]:
        """Keeps `name` open for many appends (the load generator's hot path); each line is flushed,
        so a killed process leaves every line it wrote (the OS keeps them; no fsync per line)."""
        with open(self.path / name, "a", encoding="utf-8") as fh:

            def write(record: Mapping[str, Any]) -> None:
                fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
                fh.flush()

            yield write

    def read_jsonl(self, name: RunFile | str, problems: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every complete line; a torn last line (a crash mid-write) is skipped, not an error. A line that is
        not a JSON object raises ValueError, or, with `problems`, is skipped and named there."""
        try:
            with open(self.path / name, encoding="utf-8") as fh:
                for number, line in enumerate(fh, start=1):
                    if not line.endswith("\n"):
                        break
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        if not isinstance(record, dict):
                            raise ValueError("not a JSON object")
                    except ValueError as exc:
                        if problems is None:
                            raise
                        what = "not a JSON object" if "object" in str(exc) else "not JSON"
                        problems.append(f"{name}:{number}: {what}; line skipped")
                        continue
                    yield record
        except FileNotFoundError:
            return
        except OSError as exc:
            if problems is None:
                raise
            problems.append(f"{name}: unreadable ({exc})")

    # ---- the journal ---------------------------------------------------------------------------
    def journal(self, kind: EventKind, **fields: Any) -> dict[str, Any]:
        """Append an event to `events.jsonl` with wall-clock and monotonic times, as it happens."""
        event = {"kind": str(kind), "wall_time": time.time(), "monotonic": time.monotonic(), **fields}
        self.append_jsonl(RunFile.EVENTS, event)
        return event

    def events(self, *kinds: EventKind) -> Iterator[dict[str, Any]]:
        """The journal's events in order; only those of `kinds` when given."""
        for event in self.read_jsonl(RunFile.EVENTS):
            if not kinds or event.get("kind") in kinds:
                yield event

    def start_time(self) -> float | None:
        """The run's start, unix seconds: the earlier of its first journal event and its first request's
        intended send time; None when it has neither. Every `t_s` of a report counts from here."""
        return run_start_of(self.events(), self.read_jsonl(RunFile.REQUESTS))


def run_start_of(events: Iterable[Mapping[str, Any]], requests: Iterable[Mapping[str, Any]]) -> float | None:
    """The earliest `wall_time` of `events` and `intended_send` of `requests` (rows), or None."""
    times = [float(e["wall_time"]) for e in events if _is_time(e.get("wall_time"))]
    times += [float(r["intended_send"]) for r in requests if _is_time(r.get("intended_send"))]
    return min(times) if times else None


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
