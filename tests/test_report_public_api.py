"""labkit.report's public surface is deliberate: `__all__` is sorted, complete and importable."""

from __future__ import annotations

import types

import labkit.report


def _isort_style(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions.
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def test_all_is_sorted_unique_and_importable() -> None:
    names = labkit.report.__all__
    assert names == sorted(names, key=_isort_style) and len(set(names)) == len(names)
    assert all(hasattr(labkit.report, name) for name in names)


def test_every_public_attribute_is_in_all() -> None:
    public = {
        name
        for name, value in vars(labkit.report).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(labkit.report.__all__), public - set(labkit.report.__all__)
