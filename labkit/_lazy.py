"""Lazy re-exports for a package `__init__` (PEP 562): `from labkit import LocalBackend` works, but importing
the package imports no submodule (and no pandas with them) until a name is first used.

Every lab service is a `python -m labkit.services.<service>` process, so an eager `labkit/__init__` made each
of them import the whole library first: ~0.45 s and ~30 MB per process, paid again by every restart (found by
bench/; see docs/benchmarks.md). The names are declared once, as the package's `if TYPE_CHECKING:` imports
(which type checkers read); this module reads the same block to know where each name lives.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["lazy_exports", "type_checking_imports"]


def type_checking_imports(source: Path) -> dict[str, str]:
    """{name: module} of the `from module import name` lines in the top-level `if TYPE_CHECKING:` blocks of
    the Python file `source` (`if _typing.TYPE_CHECKING:` too)."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        test = node.test if isinstance(node, ast.If) else None
        guarded = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        if not guarded:
            continue
        for statement in node.body:  # type: ignore[attr-defined]
            if isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
                found.update({alias.asname or alias.name: statement.module for alias in statement.names})
    return found


def lazy_exports(package: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package` that import each name of its TYPE_CHECKING block from its
    module on first use (a name imported from the package itself is its submodule)."""
    namespace = sys.modules[package].__dict__
    exports = type_checking_imports(Path(namespace["__file__"]))

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if module == package:  # `from labkit import chaos`: a subpackage
            value = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # the next lookup is an ordinary attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
