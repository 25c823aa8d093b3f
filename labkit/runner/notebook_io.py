"""Where papermill writes an executed notebook: a local path, written atomically. Papermill saves the output
after every cell with a plain `open(path, "w")`, so a full disk or a kill in the middle of a save left half a
notebook where a whole one had been; its I/O registry (`papermill.iorw.papermill_io`) takes a handler per path
prefix, and ours writes through labkit.atomic (the previous save stays until the new one is whole).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import papermill
from papermill.iorw import LocalHandler, papermill_io

from labkit.atomic import write_atomically

__all__ = ["ATOMIC_PREFIX", "atomic_output", "execute_notebook"]

ATOMIC_PREFIX = "labkit-atomic://"
_registered: list[bool] = []


class _AtomicLocalHandler(LocalHandler):  # type: ignore[misc]
    def read(self, path: str) -> str:
        return str(super().read(path.removeprefix(ATOMIC_PREFIX)))

    def listdir(self, path: str) -> list[str]:
        return list(super().listdir(path.removeprefix(ATOMIC_PREFIX)))

    def write(self, buf: str, path: str) -> None:
        target = Path(path.removeprefix(ATOMIC_PREFIX))
        if not target.parent.is_dir():
            raise FileNotFoundError(f"output folder {target.parent} doesn't exist.")
        write_atomically(target, buf)

    def pretty_path(self, path: str) -> str:
        return path.removeprefix(ATOMIC_PREFIX)


def atomic_output(path: Path) -> str:
    """The output path to give papermill for `path`, so that each save replaces the file in one step."""
    if not _registered:
        papermill_io.register(ATOMIC_PREFIX, _AtomicLocalHandler())
        _registered.append(True)
    return ATOMIC_PREFIX + str(Path(path).absolute())


def execute_notebook(notebook: Path, output: Path, **options: Any) -> Any:
    """papermill.execute_notebook of `notebook` into `output`, every save atomic (`options`: papermill's)."""
    return papermill.execute_notebook(str(notebook), atomic_output(output), **options)
