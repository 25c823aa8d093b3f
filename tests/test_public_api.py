"""labkit's public surface is deliberate: one list (`labkit.__all__`), sorted, complete and importable, and
what the README and the notebooks import is on it (or on the list of a public subpackage it names)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

import labkit
from labkit._lazy import type_checking_imports

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_PACKAGES = ("chaos", "report", "scenarios")  # exported by labkit, each with an __all__ of its own


def _isort_style(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions and dunders.
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def test_all_is_sorted_and_unique() -> None:
    assert labkit.__all__ == sorted(labkit.__all__, key=_isort_style)
    assert len(set(labkit.__all__)) == len(labkit.__all__)


def test_all_is_the_lazy_export_list() -> None:
    declared = type_checking_imports(Path(labkit.__file__))
    assert set(labkit.__all__) == {*declared, "__version__"}


def test_every_name_in_all_exists() -> None:
    for name in labkit.__all__:
        assert hasattr(labkit, name), name
    for package in PUBLIC_PACKAGES:
        module = getattr(labkit, package)
        assert module.__name__ == f"labkit.{package}"
        assert all(hasattr(module, name) for name in module.__all__), package


def test_every_public_attribute_is_in_all() -> None:
    public = {
        n for n in vars(labkit) if not n.startswith("_") and not isinstance(getattr(labkit, n), type(labkit))
    }
    assert public <= set(labkit.__all__), public - set(labkit.__all__)


def _python_sources() -> dict[str, str]:
    """The README's python blocks and every notebook's code cells, by where they are."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sources = {
        f"README.md block {i}": block
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", readme, re.S))
    }
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        sources[str(path.relative_to(ROOT))] = "\n".join(c.source for c in cells if c.cell_type == "code")
    return sources


def test_the_readme_and_the_notebooks_import_only_the_public_api() -> None:
    allowed = {"labkit": set(labkit.__all__)}
    allowed.update({f"labkit.{p}": set(getattr(labkit, p).__all__) for p in PUBLIC_PACKAGES})
    sources = _python_sources()
    assert len(sources) >= 9  # the README's examples and the 8 notebooks
    for where, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labkit"):
                assert node.module in allowed, (
                    f"{where} imports from {node.module}; use `from labkit import ...`"
                )
                names = {alias.name for alias in node.names}
                assert names <= allowed[node.module], f"{where}: {names - allowed[node.module]} not public"
            if isinstance(node, ast.Import):
                assert all(a.name == "labkit" or not a.name.startswith("labkit") for a in node.names), where
