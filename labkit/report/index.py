"""`reports/index.html`: every run under `reports/runs/`, newest first, with its scenario, date, status,
verdicts, one pass/fail cell per SLO objective, headline SLIs (latencies in ms), parameters and a link to its
report, above them the resilience scorecard of the latest chaos runs (labkit.report.scorecard); self-contained
HTML (inline CSS, and a small inline script that sorts and filters the table).

A run directory that cannot be read completely is listed with what is known and what went wrong;
one broken run never keeps the others off the index. Every value is HTML-escaped (jinja2 autoescape).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from labkit.atomic import write_atomically
from labkit.errors import LabkitError
from labkit.report.ab_data import AB_HEADLINE_KEYS, ab_headline
from labkit.report.alert_data import alerting_headline
from labkit.report.capacity_data import CAPACITY_HEADLINE_KEYS, capacity_headline
from labkit.report.data import RunData, run_sort_key
from labkit.report.scorecard import SCORECARD_COLUMNS, scorecard
from labkit.report.tables import HEADLINE_KEYS, MISSING, format_ms, headline, slo_report
from labkit.rundir import INDEX_FILE, RUNS_FOLDER, RunFile, run_directories
from labkit.verdicts import AB_VERDICT_TEXT, MEANING, tone

__all__ = [
    "Cell",
    "IndexEntry",
    "compact_parameters",
    "index_entry",
    "objective_header",
    "render_index",
    "write_index",
]

logger = logging.getLogger(__name__)

_PARAMETERS_MAX = 400  # characters of the compact parameter list
_VALUE_MAX = 60  # characters of one nested value in it


@dataclass(frozen=True)
class Cell:
    """One value as the index shows it: its text, how it reads (good, bad, neutral), what sorts it, and a
    tooltip."""

    text: str = MISSING
    tone: str = "neutral"
    sort: float | str = ""
    title: str = ""


@dataclass
class IndexEntry:
    """One row of the index, every field ready to display."""

    run_id: str
    started: float  # unix seconds, for sorting
    date: str = ""
    scenario: str | None = None
    status: str | None = None
    error: str | None = None
    verdict: str | None = None
    steady_state: str | None = None
    slos: str | None = None
    availability: Cell = field(default_factory=Cell)
    e2e_p95: Cell = field(default_factory=Cell)
    ttft_p95: Cell = field(default_factory=Cell)
    requests: Cell = field(default_factory=Cell)
    time_to_page: Cell = field(default_factory=Cell)
    false_pages: Cell = field(default_factory=Cell)
    ab_verdicts: list[Cell] = field(default_factory=list)  # the remediation A/B: one per fault kind
    capacity: Cell = field(default_factory=Cell)  # max_rate_meeting_slos, its interval, the limiting SLO
    objectives: dict[str, Cell] = field(default_factory=dict)  # per SLO objective: its SLI, met or not
    parameters: str = ""
    report_href: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def status_class(self) -> str:
        return tone(self.status)

    @property
    def verdict_class(self) -> str:
        return tone(self.verdict)

    def tone_of(self, word: str | None) -> str:
        return tone(word)


def _compact_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _VALUE_MAX else text[: _VALUE_MAX - 1] + "…"


def compact_parameters(parameters: dict[str, Any]) -> str:
    """`key=value, ...` in key order; long values and the whole list are cut with an ellipsis."""
    text = ", ".join(f"{key}={_compact_value(value)}" for key, value in sorted(parameters.items()))
    return text if len(text) <= _PARAMETERS_MAX else text[: _PARAMETERS_MAX - 1] + "…"


def _cell(value: Any, text: Callable[[float], str]) -> Cell:
    """A number as `text` writes it, sorted by its value; the missing cell for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return Cell()
    return Cell(text(float(value)), sort=float(value))


def _ab_cells(numbers: dict[str, Any]) -> list[Cell]:
    """One cell per fault kind of a remediation A/B: `latency: helps, -5.2 s`, toned by the verdict, the
    interval in its tooltip; none for a run that is not an A/B."""
    verdicts = numbers.get("ab_verdicts")
    if not isinstance(verdicts, dict):
        return []
    cells = []
    for kind, word in verdicts.items():
        difference, low, high = (
            (numbers.get(key) or {}).get(kind)
            for key in ("mttr_difference_s", "mttr_difference_low_s", "mttr_difference_high_s")
        )
        shown = AB_VERDICT_TEXT.get(str(word), str(word))
        text = f"{kind}: {shown}" + ("" if difference is None else f", {format_ms(difference)}")
        interval = "" if low is None or high is None else f" (interval {format_ms(low)} to {format_ms(high)})"
        title = f"time to recover with remediation minus without{interval}: {MEANING.get(str(word), '')}"
        cells.append(Cell(text, tone(str(word)), text, title))
    return cells


def capacity_cell(numbers: dict[str, Any]) -> Cell:
    """`5.66/s [5.66 to 6.17]`: the highest rate meeting every SLO and its interval, sorted by the rate, the
    limiting SLO in the tooltip; the missing cell for a run without a capacity search."""
    value = numbers.get("max_rate_meeting_slos")
    cell = _cell(value, "{:.3g}/s".format)
    if cell.text == MISSING:
        return cell
    low, high = numbers.get("max_rate_meeting_slos_low"), numbers.get("max_rate_meeting_slos_high")
    ends = [MISSING if not isinstance(v, int | float) else f"{v:.3g}" for v in (low, high)]
    limiting = numbers.get("limiting_slo") or "none (no failing point above the knee)"
    return replace(cell, text=f"{cell.text} [{ends[0]} to {ends[1]}]", title=f"limiting: {limiting}")


def _objective_cells(run: RunData) -> dict[str, Cell]:
    """One cell per SLO objective: the SLI in %, green when met, red when violated, grey without data."""
    report = slo_report(run)
    cells: dict[str, Cell] = {}
    for r in report.results if report else []:
        name = objective_header(r.slo, r.target, r.threshold_s)
        whole = f"{r.slo_display_name}: {r.objective}"
        if r.sli is None:
            cells[name] = Cell("no data", "neutral", -1.0, f"{whole}: no events to judge")
            continue
        word = "met" if r.met else "violated"
        cells[name] = Cell(
            f"{r.sli * 100:.2f}%",
            tone(word),
            r.sli,
            f"{whole}: {word}, {r.good} of {r.valid} good against a {r.target * 100:g}% target",
        )
    return cells


def objective_header(slo: str, target: float, threshold_s: float | None) -> str:
    """A column header short enough for a table: `latency 95% <= 3000 ms`, `availability 99%`."""
    bound = "" if threshold_s is None else f" \u2264 {format_ms(threshold_s)}"
    return f"{slo.replace('-', ' ')} {target * 100:g}%{bound}"


def _error_text(error: Any) -> str | None:
    if not isinstance(error, dict):
        return None if error in (None, "") else str(error)
    where = f"cell {error['cell']}: " if error.get("cell") is not None else ""
    return f"{where}{error.get('ename', 'error')}: {error.get('evalue', '')}".strip()


def _headline_of(run: RunData) -> dict[str, Any]:
    """run.json's headline when the runner wrote one, else computed from the run's files (a headline written
    before labkit measured alerts, ran A/Bs or searched capacity gets those numbers from the files)."""
    recorded = run.info.get("headline")
    words = {"verdict", "steady_state", "slos"}
    alerting = {"time_to_page_s", "false_pages"}
    capacity = set(CAPACITY_HEADLINE_KEYS)
    derived = alerting | capacity | set(AB_HEADLINE_KEYS)
    if isinstance(recorded, dict) and set(HEADLINE_KEYS) - words - derived <= set(recorded):
        return {
            **(alerting_headline(run) if not alerting <= set(recorded) else {}),
            **(capacity_headline(run) if not capacity <= set(recorded) else {}),
            **(ab_headline(run) if not set(AB_HEADLINE_KEYS) <= set(recorded) else {}),
            **recorded,
            "verdict": run.verdict,
            "steady_state": run.experiment_verdict,
            "slos": run.slo_verdict,
        }
    return headline(run)


def index_entry(run_dir: Path) -> IndexEntry:
    """What the index shows of one run directory; never raises for a broken run (see `problems`)."""
    started = run_sort_key(run_dir)[0]
    entry = IndexEntry(
        run_id=run_dir.name,
        started=started,
        date=datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M:%S"),
    )
    report = run_dir / RunFile.REPORT
    if report.is_file():
        entry.report_href = f"{RUNS_FOLDER}/{quote(run_dir.name)}/{RunFile.REPORT}"
    try:
        run = RunData.load(run_dir)
        numbers = _headline_of(run)
    except (LabkitError, OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("index: run %s could not be read: %s", run_dir, exc)
        entry.problems.append(f"could not be read: {exc}")
        return entry
    parameters = run.info.get("parameters")
    entry.scenario = run.scenario
    entry.status = run.status
    entry.error = _error_text(run.info.get("error"))
    entry.verdict = run.verdict
    entry.steady_state = run.experiment_verdict
    entry.slos = numbers.get("slos") or run.slo_verdict
    entry.availability = _cell(numbers.get("availability"), "{:.2%}".format)
    entry.e2e_p95 = _cell(numbers.get("e2e_p95_s"), format_ms)
    entry.ttft_p95 = _cell(numbers.get("ttft_p95_s"), format_ms)
    entry.requests = _cell(numbers.get("requests"), "{:.0f}".format)
    entry.time_to_page = _cell(numbers.get("time_to_page_s"), format_ms)
    pages = _cell(numbers.get("false_pages"), "{:.0f}".format)
    entry.false_pages = (
        replace(pages, tone="bad" if pages.sort else "good") if pages.text != MISSING else pages
    )
    entry.ab_verdicts = _ab_cells(numbers)
    entry.capacity = capacity_cell(numbers)
    entry.objectives = _objective_cells(run)
    entry.parameters = compact_parameters(parameters if isinstance(parameters, dict) else run.params)
    entry.problems.extend(run.problems)
    return entry


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("labkit.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_index(reports_dir: Path | str) -> str:
    """The HTML of the index of `reports_dir` (its `runs/` subdirectories, newest first, under the
    scorecard of the latest chaos runs)."""
    reports = Path(reports_dir)
    directories = run_directories(reports)
    entries = sorted((index_entry(d) for d in directories), key=lambda e: (e.started, e.run_id), reverse=True)
    objectives = list(dict.fromkeys(name for e in entries for name in e.objectives))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        _environment()
        .get_template("index.html.j2")
        .render(
            runs=entries,
            objectives=objectives,
            generated=generated,
            missing=Cell(),
            meaning=MEANING,
            scorecard=scorecard(reports),
            scorecard_columns=SCORECARD_COLUMNS,
        )
    )


def write_index(reports_dir: Path | str) -> Path:
    """Write `reports_dir/index.html` (atomically) listing every run under `reports_dir/runs/`; its path."""
    path = Path(reports_dir) / INDEX_FILE
    write_atomically(path, render_index(reports_dir))
    return path
