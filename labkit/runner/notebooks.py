"""The scenario notebooks and their `parameters` cells as papermill reads them: where the notebooks are, what
parameters a notebook declares (name, type, default, help), and a command-line value converted to its type.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.errors import ConfigError, LabkitError
from labkit.params import ParameterError
from labkit.runner.kernel import KERNEL_NAME

__all__ = [
    "NotebookError",
    "NotebookParameter",
    "convert_parameter",
    "notebook_parameters",
    "notebooks_dir",
]

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_SCALARS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}


class NotebookError(LabkitError):
    """A notebook is missing or cannot be run as a scenario (e.g. its parameters cell is unreadable)."""


def notebooks_dir() -> Path:
    """The scenario notebooks: LABKIT_NOTEBOOKS_DIR, else `notebooks/` next to the package (a checkout)."""
    override = os.environ.get("LABKIT_NOTEBOOKS_DIR")
    if override:
        if not Path(override).is_dir():
            raise ConfigError(f"LABKIT_NOTEBOOKS_DIR={override} is not a directory; unset it or fix it")
        return Path(override).resolve()
    candidate = Path(__file__).resolve().parents[2] / "notebooks"
    if candidate.is_dir():
        return candidate
    raise ConfigError(
        f"labkit's notebooks are not at {candidate} (an installed wheel has none); "
        "run labkit from a checkout of the repository or set LABKIT_NOTEBOOKS_DIR"
    )


@dataclass(frozen=True)
class NotebookParameter:
    """One line of a notebook's `parameters` cell, as papermill reads it."""

    name: str
    type_name: str  # the annotation ("float", "int", ...) or, without one, the type of the default
    default: str  # the default as written in the notebook
    help: str

    def convert(self, value: object) -> Any:
        """`value` (a command-line string, or an already typed value) as this parameter's type."""
        return convert_parameter(self, value)


def convert_parameter(param: NotebookParameter, value: object) -> Any:
    """Convert `value` to `param`'s declared type; a ParameterError says what was expected.

    Strings convert as on a command line: float accepts "1" and "2.5", int "3", bool
    true/false/1/0/yes/no. A parameter of another declared type takes a Python literal
    ("[1, 2]"), or the text itself when it is not one."""
    kind = _SCALARS.get(param.type_name)

    def refuse(why: str = "") -> ParameterError:
        expected = {"bool": "true or false (also 1/0, yes/no)", "int": "an integer", "float": "a number"}
        return ParameterError(
            f"parameter {param.name} expects {param.type_name} ({expected.get(param.type_name, 'text')}), "
            f"got {value!r}{why}"
        )

    if not isinstance(value, str):
        if kind is None or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise refuse()
    text = value.strip()
    if kind is str:
        return value
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise refuse()
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise refuse() from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise refuse() from None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return value


def _type_of_default(default: str) -> str:
    """The scalar type name of a default written without an annotation, else "None" (unknown)."""
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return "None"
    for name in ("bool", "int", "float", "str"):
        if type(value) is _SCALARS[name]:
            return name
    return "None"


def notebook_parameters(notebook: Path) -> dict[str, NotebookParameter]:
    """The parameters a notebook declares in its cell tagged `parameters`, in order.

    Papermill silently skips a line it cannot read (one with a second '=', as in `x: int = 1  # a = b`);
    such a line is an error here, because the runner would refuse a parameter the notebook has."""
    import nbformat
    import papermill

    if not notebook.is_file():
        raise NotebookError(f"notebook {notebook} does not exist")
    try:
        inspected = papermill.inspect_notebook(str(notebook))
    except ValueError as exc:  # no kernelspec in the notebook's metadata
        raise NotebookError(
            f"{notebook} cannot be inspected ({exc}); give it the kernelspec "
            f"{{name: {KERNEL_NAME}, language: python}} in its metadata"
        ) from exc
    params: dict[str, NotebookParameter] = {}
    for name, info in inspected.items():
        type_name = str(info["inferred_type_name"])
        if type_name == "None":
            type_name = _type_of_default(str(info["default"]))
        params[name] = NotebookParameter(name, type_name, str(info["default"]), str(info["help"]))

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise NotebookError(
            f"{notebook} has no cell tagged `parameters`; tag its first code cell `parameters` "
            "(one `name: type = default  # help` per line)"
        )
    for name, line in _assigned_names(cells[0].source):
        if name not in params:
            raise NotebookError(
                f"papermill cannot read parameter {name!r} in the parameters cell of {notebook.name} "
                f"(line {line}); write it as `name: type = default  # help`, with no '=' in the help"
            )
    return params


def _assigned_names(source: str) -> list[tuple[str, int]]:
    """(name, line) of every top-level assignment in a parameters cell; none if it is not plain Python."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found: list[tuple[str, int]] = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            found += [(t.id, node.lineno) for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found.append((node.target.id, node.lineno))
    return found
