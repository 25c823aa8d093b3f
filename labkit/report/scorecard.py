"""The resilience scorecard: per fault kind, over the latest chaos runs of a reports folder, time to detect,
time to recover, requests lost and error budget burned, each a median with its interquartile range and the
number of runs and faults behind it (labkit.measure.resilience), split by whether remediation acted.

Reading is cheap and never fails on one run: each run's recovery measures come from experiment.json (or the
journal's `recovery` events), and only a run that recorded neither is loaded whole (`RunData.recovery`); a run
that cannot be read, or whose experiment never finished, is left out with a note (docs/scorecard.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.errors import ConfigError, LabkitError
from labkit.measure.recovery import RECOVERY_COLUMNS
from labkit.measure.resilience import RESILIENCE_MEASURES, summarize_by_kind
from labkit.report.data import ReportError, RunData, run_sort_key
from labkit.report.tables import MISSING
from labkit.rundir import RUNS_FOLDER, EventKind, RunDirectory, RunFile, RunFolder, run_directories

__all__ = [
    "DEFAULT_LAST",
    "SCORECARD_COLUMNS",
    "Scorecard",
    "ScorecardCell",
    "ScorecardRow",
    "ScorecardRun",
    "scorecard",
]

logger = logging.getLogger(__name__)

DEFAULT_LAST = 20  # runs with recovery measures, newest first: recent enough to describe the service as it is
NO_RUNS = "no chaos runs with recovery measures; run a chaos scenario first: labkit run kill_and_recover"

# The remediation groups in the order the table shows them: without it first, the baseline to compare with.
_GROUPS = ("off", "on", "unknown")
# Each measure as the table writes it: header (unit in it, as the run's report writes it), scale, decimals.
_DISPLAY: dict[str, tuple[str, float, int]] = {
    "time_to_detect_s": ("time to detect (ms)", 1000.0, 0),
    "time_to_recover_s": ("time to recover (ms)", 1000.0, 0),
    "requests_lost": ("requests lost", 1.0, 1),
    "budget_burned": ("budget burned (%)", 100.0, 1),  # percent of its run's error budget
}
assert set(_DISPLAY) == set(RESILIENCE_MEASURES)  # one header per measure the scorecard reports
SCORECARD_COLUMNS = ("remediation", "fault kind", "runs", "faults", *(h for h, _, _ in _DISPLAY.values()))


@dataclass(frozen=True)
class ScorecardRun:
    """One experiment behind the scorecard: a run directory, or one arm of an A/B run (`run_id` is its path
    under runs/, e.g. `<run_id>/arms/<arm>`)."""

    run_id: str
    scenario: str | None
    started: float  # unix seconds (run_sort_key)
    remediation: str  # on, off or unknown
    faults: int
    source: str  # where its measures came from: experiment.json, the journal, or journal and samples


@dataclass(frozen=True)
class ScorecardCell:
    """One measure of one row as people read it: `median (low-high)` (an en dash) in the column's unit,
    and, when fewer faults than the row's have a value, how many and from how many runs."""

    text: str
    note: str = ""


@dataclass(frozen=True)
class ScorecardRow:
    remediation: str
    kind: str
    runs: int
    faults: int
    cells: tuple[ScorecardCell, ...]  # one per measure, in RESILIENCE_MEASURES order


@dataclass(frozen=True)
class Scorecard:
    """The scorecard of `reports_dir`: `table` has one row per remediation group and fault kind (columns
    of `summarize_by_kind` with runs, plus `remediation`); `runs` the experiments behind it; `skipped` one
    note per run directory (or arm) left out."""

    reports_dir: Path
    last: int
    scenario: str | None
    since: datetime | None
    table: pd.DataFrame
    runs: tuple[ScorecardRun, ...] = ()
    top_level: int = 0  # run directories under runs/ that contributed (an A/B run is one, with its arms)
    skipped: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.table.empty

    @property
    def rows(self) -> list[ScorecardRow]:
        """The table for people: remediation off, on, unknown; fault kinds in name order."""
        out = []
        for record in self.table.to_dict("records"):
            cells = tuple(_cell(record, measure) for measure in _DISPLAY)
            out.append(
                ScorecardRow(
                    record["remediation"],
                    str(record["kind"]),
                    int(record["runs"]),
                    int(record["faults"]),
                    cells,
                )
            )
        return out

    def caption(self) -> str:
        """What the table shows, in words, from what it holds: runs, dates, groups, what the spread means."""
        if self.empty:
            return NO_RUNS.capitalize() + "."
        dates = sorted(datetime.fromtimestamp(r.started, UTC).strftime("%Y-%m-%d") for r in self.runs)
        span = dates[0] if dates[0] == dates[-1] else f"from {dates[0]} to {dates[-1]}"
        kinds = self.table["kind"].nunique()
        faults = int(self.table["faults"].sum())
        experiments = len(self.runs)
        which = f" of scenario {self.scenario}" if self.scenario else ""
        since = f" since {self.since:%Y-%m-%d %H:%M} UTC" if self.since else ""
        arms = (
            f" ({experiments} experiments: each arm of an A/B run counts as a run)"
            if experiments != self.top_level
            else ""
        )
        groups = [g for g in _GROUPS if g in set(self.table["remediation"])]
        if groups == ["off"]:
            split = "Remediation was off in every run."
        elif groups == ["on"]:
            split = "Remediation acted in every run."
        else:
            unknown = ", unknown where the run does not say" if "unknown" in groups else ""
            split = (
                "Rows are split by remediation: on where a policy acted in the run, off without one or with "
                f"a dry run{unknown}."
            )
        parts = [
            f"The latest {_plural(self.top_level, 'run')}{which} with recovery measures{since} under "
            f"{RUNS_FOLDER}/{arms}, {span}: {_plural(faults, 'fault')} of {_plural(kinds, 'kind')}.",
            "Each cell is the median over the faults of its kind, and in brackets the interquartile range "
            "(the middle half of those faults lie in it; with one fault it is that fault's value); runs and "
            "faults say how many are behind it, and a measure with fewer values says so (a fault no request "
            "noticed has no time to detect or recover).",
            split,
            "Budget burned: the fault's failed and slow requests as a share of its run's error budget "
            "(100 % is all of it).",
        ]
        if self.skipped:
            parts.append(
                f"{_plural(len(self.skipped), 'run directory', 'run directories')} left out (below)."
            )
        return " ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """Everything for `labkit scorecard --json`: the selection, the rows (each measure's median, low,
        high, n faults and n runs, in the measure's own unit), the experiments behind them and the notes."""
        rows = []
        for record in self.table.to_dict("records"):
            row: dict[str, Any] = {k: record[k] for k in ("remediation", "kind", "runs", "faults")}
            for measure in RESILIENCE_MEASURES:
                row[measure] = {
                    part: _plain(record[f"{measure}_{part}"])
                    for part in ("median", "low", "high", "n", "runs")
                }
            rows.append(row)
        return {
            "reports_dir": str(self.reports_dir),
            "selection": {
                "last": self.last,
                "scenario": self.scenario,
                "since": self.since.isoformat() if self.since else None,
            },
            "units": dict(RESILIENCE_MEASURES),
            "rows": rows,
            "runs": [r.__dict__ for r in self.runs],
            "skipped": list(self.skipped),
            "caption": self.caption(),
        }

    def text(self) -> str:
        """The table as aligned text for a terminal, then the caption and the notes."""
        if self.empty:
            return NO_RUNS + "".join(f"\n  left out: {note}" for note in self.skipped)
        lines: list[list[str]] = [list(SCORECARD_COLUMNS)]
        for row in self.rows:
            cells = [c.text + (f" [{c.note}]" if c.note else "") for c in row.cells]
            lines.append([row.remediation, row.kind, str(row.runs), str(row.faults), *cells])
        widths = [max(len(line[i]) for line in lines) for i in range(len(SCORECARD_COLUMNS))]
        table = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines]
        return "\n".join(
            ["Resilience scorecard", *table, "", self.caption(), *(f"  left out: {n}" for n in self.skipped)]
        )


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: numpy numbers as Python's, NaN as None."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _number_text(value: float, decimals: int) -> str:
    text = f"{value:,.{decimals}f}"
    return text[:-2] if decimals and text.endswith(".0") else text


def _cell(record: Mapping[Any, Any], measure: str) -> ScorecardCell:
    _, scale, decimals = _DISPLAY[measure]
    n, runs = int(record[f"{measure}_n"]), int(record[f"{measure}_runs"])
    faults = int(record["faults"])
    if n == faults:
        note = ""
    else:
        note = (
            f"{n} of {faults} faults, {_plural(runs, 'run')}" if n else f"none of {_plural(faults, 'fault')}"
        )
    median = _plain(record[f"{measure}_median"])
    if median is None:
        return ScorecardCell(MISSING, note)
    low, high = (_number_text(_plain(record[f"{measure}_{p}"]) * scale, decimals) for p in ("low", "high"))
    return ScorecardCell(f"{_number_text(median * scale, decimals)} ({low}\u2013{high})", note)


# ---- reading the runs ---------------------------------------------------------------------------------
def _remediation_of(params: Mapping[str, Any] | None, experiment: Mapping[str, Any] | None) -> str:
    """`on` when the run's remediation policy acted (not a dry run), `off` without one or with a dry run,
    `unknown` when neither params.json nor experiment.json says."""
    for record, path in ((params, ("remediation",)), (experiment, ("remediation", "policy"))):
        if not isinstance(record, Mapping) or "remediation" not in record:
            continue
        policy: Any = record
        for key in path:
            policy = policy.get(key) if isinstance(policy, Mapping) else None
        if policy is None and record.get("remediation") is not None:
            continue  # experiment.json's remediation without a policy: no answer here
        return "on" if isinstance(policy, Mapping) and not policy.get("dry_run") else "off"
    return "unknown"


def _recovery_of_run(path: Path | str) -> tuple[pd.DataFrame, str]:
    """The recovery measures of one run directory (labkit.measure.recovery.RECOVERY_COLUMNS) and where they
    came from, cheapest first: experiment.json's `recovery.faults`; the journal's `recovery` events (an
    experiment that measured and then died); else, for a finished experiment with faults in its journal,
    `RunData.recovery` (computed from the journal and the samples). An empty frame for a run without faults.
    Raises ReportError for a run whose experiment never finished or that cannot be read."""
    directory = RunDirectory(Path(path))
    problems: list[str] = []
    experiment = directory.read_json_object(RunFile.EXPERIMENT, problems)
    recorded = (experiment or {}).get("recovery")
    faults = recorded.get("faults") if isinstance(recorded, Mapping) else None
    if isinstance(faults, list) and faults:
        rows = [r for r in faults if isinstance(r, Mapping)]
        return pd.DataFrame(rows, columns=RECOVERY_COLUMNS), RunFile.EXPERIMENT.value
    events = list(directory.read_jsonl(RunFile.EVENTS, problems))
    journaled = [{**e, "kind": e.get("fault_kind")} for e in events if e.get("kind") == EventKind.RECOVERY]
    if journaled:
        return pd.DataFrame(journaled, columns=RECOVERY_COLUMNS), "the journal"
    if not any(e.get("kind") == EventKind.FAULT_START for e in events):
        if problems:
            raise ReportError("; ".join(problems))
        return pd.DataFrame(columns=RECOVERY_COLUMNS), ""
    if not any(e.get("kind") == EventKind.EXPERIMENT_FINISHED for e in events):
        raise ReportError("partial: its experiment never finished (no experiment_finished in events.jsonl)")
    return RunData.load(directory.path).recovery, "the journal and samples"


def _scenario_of(directory: RunDirectory) -> str | None:
    for name in (RunFile.RUN, RunFile.PARAMS):
        try:
            record = directory.read_json(name)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("scenario"), str):
            return str(record["scenario"])
    _, _, scenario = directory.path.name.partition("Z-")
    return scenario or None


def _experiments(run_dir: Path) -> Iterator[Path]:
    """The experiments a run directory holds: its A/B arms (arms/*) when it has any, else itself. Capacity
    points and steady-state checks run no faults, so they are not looked into."""
    arms = run_dir / RunFolder.ARMS
    found = sorted(p for p in arms.iterdir() if p.is_dir()) if arms.is_dir() else []
    yield from found or [run_dir]


def _read_experiment(
    path: Path, name: str, started: float, notes: list[str]
) -> tuple[ScorecardRun, pd.DataFrame] | None:
    try:
        frame, source = _recovery_of_run(path)
        directory = RunDirectory(path)
        problems: list[str] = []
        params = directory.read_json_object(RunFile.PARAMS, problems)
        experiment = directory.read_json_object(RunFile.EXPERIMENT, problems)
    except (LabkitError, OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("scorecard: %s left out: %s", path, exc)
        notes.append(f"{name}: {exc}")
        return None
    frame = frame[frame["kind"].map(lambda k: isinstance(k, str) and bool(k))]
    if frame.empty:
        return None
    run = ScorecardRun(
        run_id=name,
        scenario=_scenario_of(directory),
        started=started,
        remediation=_remediation_of(params, experiment),
        faults=len(frame),
        source=source,
    )
    return run, frame.assign(run_id=name, remediation=run.remediation)


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def scorecard(
    reports_dir: Path | str,
    *,
    last: int = DEFAULT_LAST,
    scenario: str | None = None,
    since: datetime | None = None,
) -> Scorecard:
    """The scorecard of the newest `last` runs under `reports_dir/runs/` that have recovery measures, of
    `scenario` only and started at or after `since` (naive: UTC) when given. An A/B run counts as one of the
    `last` and brings each of its arms as a run (docs/scorecard.md). Never raises for a broken run."""
    if last < 1:
        raise ConfigError(f"--last must be 1 or more, not {last}")
    reports = Path(reports_dir)
    directories = run_directories(reports)
    runs_folder = reports / RUNS_FOLDER
    threshold = _as_utc(since).timestamp() if since else None
    notes: list[str] = []
    runs: list[ScorecardRun] = []
    frames: list[pd.DataFrame] = []
    top_level = 0
    for run_dir in sorted(directories, key=run_sort_key, reverse=True):
        if top_level >= last:
            break
        started = run_sort_key(run_dir)[0]
        if threshold is not None and started < threshold:
            break  # newest first: every later one is older
        if scenario is not None and _scenario_of(RunDirectory(run_dir)) != scenario:
            continue
        try:
            experiments = list(_experiments(run_dir))
        except OSError as exc:  # an arms/ folder that cannot be listed
            notes.append(f"{run_dir.name}: {RunFolder.ARMS}/ unreadable ({exc})")
            continue
        found = [
            read
            for path in experiments
            if (read := _read_experiment(path, _name_of(path, runs_folder), started, notes)) is not None
        ]
        if found:
            top_level += 1
            runs.extend(run for run, _ in found)
            frames.extend(frame for _, frame in found)
    return Scorecard(
        reports_dir=reports,
        last=last,
        scenario=scenario,
        since=_as_utc(since) if since else None,
        table=_table(frames),
        runs=tuple(runs),
        top_level=top_level,
        skipped=tuple(notes),
    )


def _name_of(path: Path, runs_dir: Path) -> str:
    try:
        return path.relative_to(runs_dir).as_posix()
    except ValueError:
        return path.name


def _table(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """`summarize_by_kind` per remediation group, with a `remediation` column first."""
    columns = ["remediation", *summarize_by_kind(pd.DataFrame(), run_column="run_id").columns]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    # From records, not pd.concat: a measure an older run lacks is an all-None column, which concat warns of.
    recovery = pd.DataFrame([row for frame in frames for row in frame.to_dict("records")])
    parts = [
        summarize_by_kind(recovery[recovery["remediation"] == group], run_column="run_id").assign(
            remediation=group
        )
        for group in _GROUPS
        if (recovery["remediation"] == group).any()
    ]
    return pd.concat(parts, ignore_index=True)[columns]
