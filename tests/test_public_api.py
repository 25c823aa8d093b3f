"""labkit's public surface is deliberate: `__all__` is sorted, complete and importable."""

from __future__ import annotations

import labkit


def _isort_style(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions and dunders.
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def test_all_is_sorted_and_unique() -> None:
    assert labkit.__all__ == sorted(labkit.__all__, key=_isort_style)
    assert len(set(labkit.__all__)) == len(labkit.__all__)


def test_every_name_in_all_exists() -> None:
    for name in labkit.__all__:
        assert hasattr(labkit, name), name


def test_every_public_attribute_is_in_all() -> None:
    public = {
        n for n in vars(labkit) if not n.startswith("_") and not isinstance(getattr(labkit, n), type(labkit))
    }
    assert public <= set(labkit.__all__), public - set(labkit.__all__)
