"""A run's data in files other tools read (`labkit export RUN_DIR --format parquet|csv`): the client's
requests, the journal, the SLO results, recovery per fault and every Prometheus series, one table each.

Nested values (a request's token gaps, an event's details) stay lists in Parquet and become JSON text in
CSV, so that no value is lost either way. Times are kept as they were written (unix seconds, ISO 8601) and
each table also gets `t_s` on the report's clock (t = 0 at the method's start) where it has a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pandas as pd

from labkit.errors import ConfigError
from labkit.report.data import RunData
from labkit.report.tables import slo_report
from labkit.rundir import RunFolder

__all__ = ["EXPORT_FORMATS", "ExportFormat", "export_run"]

ExportFormat = Literal["parquet", "csv"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("parquet", "csv")


def _tables(run: RunData) -> dict[str, pd.DataFrame]:
    tables: dict[str, pd.DataFrame] = {}
    if not run.samples.empty:
        requests = run.samples.copy()
        requests["t_s"] = requests["intended_send"].map(run.t_s)
        tables["requests"] = requests
    for phase, samples in run.check_samples.items():
        tables[f"steady_state_{phase}_requests"] = samples.assign(t_s=samples["intended_send"].map(run.t_s))
    if run.events:
        events = pd.DataFrame(run.events)
        if "wall_time" in events.columns:
            events["t_s"] = pd.to_numeric(events["wall_time"], errors="coerce").map(run.t_s)
        tables["events"] = events
    report = slo_report(run)
    if report is not None:
        tables["slo"] = pd.DataFrame([r.model_dump(exclude={"alerts"}) for r in report.results])
    if not run.recovery.empty:
        tables["recovery"] = run.recovery
    for name, frame in run.series.items():
        tables[f"{RunFolder.PROMETHEUS}_{name}"] = frame
    return tables


def _for_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists and dicts as JSON text: CSV has no nested values."""
    frame = frame.copy()
    for column in frame.columns:
        if (
            frame[column].dtype == object
            and frame[column].map(lambda v: isinstance(v, list | dict | tuple)).any()
        ):
            frame[column] = frame[column].map(
                lambda v: json.dumps(v, default=str) if isinstance(v, list | dict | tuple) else v
            )
    return frame


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def _plain(value: object) -> bool:
    """A value Parquet stores as it is: a scalar, or a list of numbers (a request's token gaps)."""
    if isinstance(value, list | tuple):
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    return not isinstance(value, dict)


def _for_parquet(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of nested values (an event's `detail`, a schedule's faults) or of mixed kinds as JSON text;
    Parquet needs one type per column. Lists of numbers stay lists."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        values = [v for v in frame[column] if not _missing(v)]
        kinds = {type(v) for v in values}
        if len(kinds) <= 1 and all(_plain(v) for v in values):
            continue
        frame[column] = [None if _missing(v) else json.dumps(v, default=str) for v in frame[column]]
    return frame


def export_run(run_dir: Path | str, fmt: str, out_dir: Path | str | None = None) -> list[Path]:
    """Write each table of the run (see the module docstring) as `<out_dir>/<table>.<fmt>`; out_dir
    defaults to `<run_dir>/export/<fmt>`. Returns the files written, in table order."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    run = RunData.load(run_dir)
    tables = _tables(run)
    if not tables:
        raise ConfigError(f"{run.path} holds no data to export (no requests, journal or series)")
    directory = Path(out_dir) if out_dir else run.path / "export" / fmt
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in tables.items():
        path = directory / f"{name}.{fmt}"
        tmp = path.with_name(f".{path.name}.tmp")
        if fmt == "csv":
            _for_csv(frame).to_csv(tmp, index=False)
        else:
            _for_parquet(frame).to_parquet(tmp, index=False)
        tmp.replace(path)  # whole files only: a reader never sees half a table
        written.append(path)
    return written
