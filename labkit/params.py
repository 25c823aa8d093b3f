"""The allowed values of the scenarios' parameters, declared once (labkit.scenarios) and checked twice:
by `labkit run` before anything starts, and by each scenario's own call when papermill runs a notebook.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labkit.errors import ConfigError

__all__ = ["Bound", "ParameterRangeError", "check_bounds"]


class ParameterRangeError(ConfigError):
    """A parameter's value is of the right type but outside what its scenario allows."""


@dataclass(frozen=True)
class Bound:
    """What one parameter may be: a number in [low, high] (either end open), optionally below another
    parameter (`below`, less `margin`), or text among `choices` (a comma-separated list of them, when
    `many`; the empty text then means the default)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    below: str | None = None
    margin: float = 0.0
    choices: tuple[str, ...] = ()
    many: bool = False
    unit: str = ""

    def describe(self, values: Mapping[str, Any] | None = None) -> str:
        """`in (0, 3600] s`, `in [0, duration_s - 1 = 59)`, `one of model, wrapper`."""
        if self.choices:
            listed = ", ".join(self.choices)
            return f"a comma-separated list of {listed} (or empty)" if self.many else f"one of {listed}"
        left = "-inf" if self.low is None else f"{self.low:g}"
        right = "inf" if self.high is None else f"{self.high:g}"
        high_open = self.high_open
        if self.below is not None:
            name = self.below + (f" - {self.margin:g}" if self.margin else "")
            limit = self._limit(values)
            if limit is not None and (self.high is None or limit <= self.high):
                right, high_open = f"{name} = {limit:g}", True
            elif self.high is None:
                right, high_open = name, True
        text = f"in {'(' if self.low_open else '['}{left}, {right}{')' if high_open else ']'}"
        return f"{text} {self.unit}".rstrip()

    def _limit(self, values: Mapping[str, Any] | None) -> float | None:
        other = None if values is None or self.below is None else values.get(self.below)
        if isinstance(other, int | float) and not isinstance(other, bool) and math.isfinite(other):
            return float(other) - self.margin
        return None

    def allows(self, value: Any, values: Mapping[str, Any] | None = None) -> bool:
        if self.choices:
            if not isinstance(value, str):
                items = list(value) if self.many and isinstance(value, list | tuple) else [value]
            else:
                items = [v.strip() for v in value.split(",") if v.strip()] if self.many else [value]
            return all(item in self.choices for item in items)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        limit = self._limit(values)
        return limit is None or value < limit


def check_bounds(scenario: str, bounds: Mapping[str, Bound], values: Mapping[str, Any]) -> None:
    """ParameterRangeError naming the first of `values` outside its bound (parameters without a bound,
    and bounds without a value, are not checked)."""
    for name, bound in bounds.items():
        if name in values and not bound.allows(values[name], values):
            raise ParameterRangeError(
                f"parameter {name} of scenario {scenario} is {values[name]!r}, outside its range: "
                f"{name} must be {bound.describe(values)}; pass a value in that range "
                f"(labkit run {scenario} -p {name} VALUE, or papermill -p {name} VALUE)"
            )
