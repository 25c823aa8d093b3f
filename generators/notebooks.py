"""The `parameters` cell of every notebook, generated from its spec (labkit.scenarios.NOTEBOOK_PARAMS): each
parameter is declared once, in the spec, and the cell is its copy for papermill and for people.

`python -m generators.notebooks` rewrites the cells that differ; `--check` exits 1 naming them (a test does).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import nbformat

from labkit.params import Params
from labkit.runner.notebooks import notebooks_dir
from labkit.scenarios import NOTEBOOK_PARAMS

__all__ = ["main", "parameters_cell_source", "stale_notebooks", "write_parameters_cells"]


def parameters_cell_source(path: Path) -> str:
    """The source of the cell tagged `parameters` in the notebook at `path`."""
    notebook = nbformat.read(str(path), as_version=4)
    for cell in notebook.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return str(cell.source)
    raise LookupError(f"{path} has no cell tagged `parameters`")


def stale_notebooks(notebooks: Path | None = None) -> dict[Path, str]:
    """Each notebook whose parameters cell is not its spec's, with the cell it should have."""
    folder = notebooks or notebooks_dir()
    stale: dict[Path, str] = {}
    for name, spec in NOTEBOOK_PARAMS.items():
        path = folder / name
        if parameters_cell_source(path) != spec.parameters_cell():
            stale[path] = spec.parameters_cell()
    return stale


def write_parameters_cells(notebooks: Path | None = None) -> list[Path]:
    """Rewrite the parameters cell of every notebook whose cell is not its spec's; the notebooks rewritten."""
    written = []
    for path, source in stale_notebooks(notebooks).items():
        notebook = nbformat.read(str(path), as_version=4)
        for cell in notebook.cells:
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                cell.source = source
        nbformat.write(notebook, str(path))
        written.append(path)
    return written


def _spec_of(path: Path) -> type[Params]:  # for messages
    return NOTEBOOK_PARAMS[path.relative_to(notebooks_dir()).as_posix()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generators.notebooks", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when a parameters cell is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_notebooks()
        for path in stale:
            print(f"stale: {path} (its spec: {_spec_of(path).__name__})")
        return 1 if stale else 0
    for path in write_parameters_cells():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
