"""What an executed notebook says about its run: one row per code cell (number as written, first line, status,
duration) for cells.json, and a failure described by its cell for run.json and the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labkit.rundir import RunFile

__all__ = ["cell_rows", "describe_failure", "failure_message", "first_line"]


def first_line(source: str, width: int = 80) -> str:
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def _source_numbers(cells: Sequence[Any]) -> list[int | None]:
    """For each cell of an executed notebook (papermill's error markers removed): its 1-based number in
    the notebook as written, or None for the cell papermill injected."""
    numbers: list[int | None] = []
    n = 0
    for cell in cells:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            numbers.append(None)
        else:
            n += 1
            numbers.append(n)
    return numbers


def _executed_cells(output: Path) -> list[Any]:
    import nbformat

    try:
        nb = nbformat.read(str(output), as_version=4)
    except (OSError, ValueError):
        return []
    return [c for c in nb.cells if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]


def describe_failure(exc: Exception, output: Path) -> dict[str, Any]:
    """run.json's `error`: which cell (numbered as in the notebook as written), its first line, the error."""
    from papermill.exceptions import PapermillExecutionError

    if not isinstance(exc, PapermillExecutionError):
        return {"cell": None, "ename": type(exc).__name__, "evalue": str(exc)}
    numbers = _source_numbers(_executed_cells(output))
    index = int(exc.cell_index)
    return {
        "cell": numbers[index] if index < len(numbers) else index + 1,
        "execution_count": exc.exec_count,
        "source": first_line(str(exc.source)),
        "ename": str(exc.ename),
        "evalue": str(exc.evalue),
    }


def failure_message(scenario: str, notebook: str, error: Mapping[str, Any], run_dir: Path) -> str:
    """One line: which scenario failed, in which cell of which notebook, with what; where the traceback is."""
    if error.get("cell") is None:
        what = f"could not run {notebook}: {error['ename']}: {error['evalue']}"
    else:
        what = (
            f"failed in cell {error['cell']} of {notebook} ({error.get('source', '')}): "
            f"{error['ename']}: {error['evalue']}"
        )
    return f"scenario {scenario} {what}; the traceback is in {run_dir / RunFile.NOTEBOOK}"


def cell_rows(output: Path, *, interrupted: bool = False) -> list[dict[str, Any]]:
    """One row per code cell of an executed notebook: number as written, first line, status, duration.

    When a run stops early papermill marks the cells that never started "completed"; here a cell without
    a start time is "pending", and after Ctrl-C the last cell that started is "interrupted"."""
    cells = _executed_cells(output)
    rows: list[dict[str, Any]] = []
    for number, cell in zip(_source_numbers(cells), cells, strict=True):
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata", {}).get("papermill", {})
        started = meta.get("start_time")
        rows.append(
            {
                "cell": number,
                "execution_count": cell.get("execution_count"),
                "source": first_line(cell.source),
                "tags": list(cell.get("metadata", {}).get("tags", [])),
                "status": meta.get("status", "pending") if started else "pending",
                "start_time": started,
                "duration_s": meta.get("duration"),
            }
        )
    if interrupted:
        ran = [row for row in rows if row["start_time"]]
        if ran and ran[-1]["status"] != "failed":
            ran[-1]["status"] = "interrupted"
    return rows
