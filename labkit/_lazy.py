"""Lazy re-exports for a package `__init__` (PEP 562): `from labkit import LocalBackend` still works, but
importing the package no longer imports every submodule (and pandas with them).

Every lab service is a `python -m labkit.<service>` process, so an eager `labkit/__init__` made each of
them import the whole library first: ~0.45 s and ~30 MB per process, paid again by every restart
(found by bench/; see docs/benchmarks.md). Eight lines of standard Python, not worth a dependency.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package` that import `name` from `exports[name]` on first use."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # the next lookup is an ordinary attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
