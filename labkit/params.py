"""Parameter specs: a notebook's parameters declared once, as a pydantic model whose fields carry their type,
default, help line, bound and `--quick` value. From a spec come the checks before a run (`labkit run`, and
the notebook's own first cell when papermill runs it alone), `--help-params`, the quick set, and the
notebook's parameters cell itself (a test holds every notebook to its spec).

    class KillAndRecover(Params):
        scenario = "kill_and_recover"
        duration_s: Annotated[float, Bound(0, 3600, low_open=True, unit="s")] = param(
            60, "how long the method sends load, in seconds", quick=20
        )
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labkit.errors import ConfigError

__all__ = [
    "Bound",
    "ParameterError",
    "Params",
    "check_bounds",
    "param",
]


class ParameterError(ConfigError):
    """A parameter is unknown, reserved, of the wrong type, or outside what its scenario allows."""


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
    """ParameterError naming the first of `values` outside its bound (parameters without a bound,
    and bounds without a value, are not checked)."""
    for name, bound in bounds.items():
        if name in values and not bound.allows(values[name], values):
            raise ParameterError(
                f"parameter {name} of scenario {scenario} is {values[name]!r}, outside its range: "
                f"{name} must be {bound.describe(values)}; pass a value in that range "
                f"(labkit run {scenario} -p {name} VALUE, or papermill -p {name} VALUE)"
            )


_NO_QUICK = object()


def param(default: Any, help: str, *, quick: Any = _NO_QUICK, set_by: str | None = None) -> Any:
    """A field of a `Params` spec: its default, its help line (the comment of the notebook's parameters
    cell), its value under `--quick` (CI's small runs) and, for a parameter `labkit run` sets itself, how a
    person sets it instead (`set_by`, e.g. "use --out DIR")."""
    extra: dict[str, Any] = {}
    if quick is not _NO_QUICK:
        extra["quick"] = quick
    if set_by is not None:
        extra["set_by"] = set_by
    return Field(default=default, description=help, json_schema_extra=extra or None)


class Params(BaseModel):
    """The parameters of one notebook, checked when made: a value of the wrong type or outside its `Bound` is
    one ParameterError naming the parameter, its range and how to pass another value."""

    # Defaults are validated too: a float parameter declared `= 20` is 20.0 in the notebook and in messages.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    scenario: ClassVar[str]  # what messages call it: the scenario, or the notebook

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ParameterError(self._describe(exc)) from None

    @classmethod
    def _describe(cls, exc: ValidationError) -> str:
        err = exc.errors()[0]
        name = ".".join(str(part) for part in err["loc"]) or "parameters"
        if err["type"] == "extra_forbidden":
            known = ", ".join(cls.model_fields)
            return f"scenario {cls.scenario} has no parameter {name!r}; its parameters are: {known}"
        return (
            f"parameter {name} of scenario {cls.scenario} is {err.get('input')!r}: {err['msg']}; pass a "
            f"{cls.type_name(name) if name in cls.model_fields else 'value'} (labkit run {cls.scenario} -p "
            f"{name} VALUE, or papermill -p {name} VALUE)"
        )

    @model_validator(mode="after")
    def _within_bounds(self) -> Self:
        check_bounds(self.scenario, self.bounds(), self.model_dump())
        return self

    @classmethod
    def from_notebook(cls, namespace: Mapping[str, Any]) -> Self:
        """The parameters of a notebook's parameters cell (pass `globals()`), checked: a notebook calls this
        in its first cell after the parameters, before it touches the lab."""
        return cls(**{name: namespace[name] for name in cls.model_fields if name in namespace})

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> None:
        """ParameterError for the first of `values` (over the defaults) that its field refuses."""
        cls(**values)

    @classmethod
    def bounds(cls) -> dict[str, Bound]:
        """Each parameter's Bound, from its annotation (`Annotated[float, Bound(...)]`)."""
        return {
            name: bound
            for name, info in cls.model_fields.items()
            for bound in info.metadata
            if isinstance(bound, Bound)
        }

    @classmethod
    def quick(cls) -> dict[str, Any]:
        """The values `--quick` gives (CI's small runs), in field order."""
        return {name: extra["quick"] for name, extra in _extras(cls).items() if "quick" in extra}

    @classmethod
    def set_by_runner(cls) -> dict[str, str]:
        """The parameters `labkit run` sets itself, each with how a person sets it instead."""
        return {name: extra["set_by"] for name, extra in _extras(cls).items() if "set_by" in extra}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {name: info.default for name, info in cls.model_fields.items()}

    @classmethod
    def type_name(cls, name: str) -> str:
        """The parameter's type as the notebook annotates it: bool, int, float or str."""
        annotation = cls.model_fields[name].annotation
        while get_origin(annotation) is not None and get_args(annotation):  # Annotated, Literal
            annotation = get_args(annotation)[0]
            if not isinstance(annotation, type):
                annotation = type(annotation)
        return annotation.__name__ if isinstance(annotation, type) else str(annotation)

    @classmethod
    def help(cls, name: str) -> str:
        return cls.model_fields[name].description or ""

    @classmethod
    def parameters_cell(cls) -> str:
        """The notebook's parameters cell for this spec: `name: type = default  # help`, one per line, the
        notebook's own parameters first, then those `labkit run` sets."""
        runner = cls.set_by_runner()
        names = sorted(cls.model_fields, key=lambda name: name in runner)  # stable: own ones first
        return "\n".join(
            f"{name}: {cls.type_name(name)} = {_literal(cls.model_fields[name].default)}  # {cls.help(name)}"
            for name in names
        )


def _extras(cls: type[BaseModel]) -> dict[str, dict[str, Any]]:
    return {
        name: info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        for name, info in cls.model_fields.items()
    }


def _literal(value: Any) -> str:
    """A default as the parameters cell writes it: strings in double quotes, numbers as declared."""
    return json.dumps(value) if isinstance(value, str) else repr(value)
