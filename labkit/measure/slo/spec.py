"""The SLO spec: a subset of OpenSLO v1 (`kind: SLO` documents with a `ratioMetric` or
`thresholdMetric` indicator, objectives, a time window and Occurrences budgeting), validated once.

`stack/slo.yaml` is the lab's spec; SLO.md explains it for people.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from labkit.config import stack_dir
from labkit.errors import ConfigError, FieldError
from labkit.measure.histograms import (
    INTER_TOKEN_LATENCY_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    TIME_TO_FIRST_TOKEN_BUCKETS,
)
from labkit.yaml_lines import format_loc, load_documents

__all__ = [
    "ALERT_MIN_EVENTS_ANNOTATION",
    "DEFAULT_ALERT_MIN_EVENTS",
    "HISTOGRAM_BUCKETS",
    "Objective",
    "SloDefinition",
    "SloSpecError",
    "default_spec_path",
    "load_slo_spec",
    "parse_duration_s",
]

# The histograms a threshold SLO may name, with their bucket sets: thresholds must be boundaries.
HISTOGRAM_BUCKETS: dict[str, tuple[float, ...]] = {
    "llm_request_duration_seconds": REQUEST_DURATION_BUCKETS,
    "llm_time_to_first_token_seconds": TIME_TO_FIRST_TOKEN_BUCKETS,
    "llm_inter_token_latency_seconds": INTER_TOKEN_LATENCY_BUCKETS,
}

# labkit's extension, an OpenSLO annotation (free-form, so other tools ignore it): an alert needs at least
# this many valid events in its short window. 20: one failure among 20 is 5 %, under the lowest page
# threshold of a 99 % objective (6 x 1 %), and at 1 req/s the lab's fastest page (10 s short window) sees
# about 10 events, so one failure cannot page. SLO.md ("Low traffic") explains it.
ALERT_MIN_EVENTS_ANNOTATION = "labkit/alert-min-events"
DEFAULT_ALERT_MIN_EVENTS = 20

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class SloSpecError(ConfigError):
    """The SLO spec file is malformed; the message names the document, field and line."""


def parse_duration_s(text: str) -> float:
    """`30d` -> 2592000.0 (OpenSLO durations: an integer and one of s, m, h, d, w)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"duration {text!r} must be an integer followed by s, m, h, d or w (e.g. 30d)")
    return float(int(match.group(1)) * _UNIT_S[match.group(2)])


class Objective(BaseModel):
    """One objective: a target ratio of good events, and for threshold SLOs `op`/`value` (seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    display_name: str = Field(alias="displayName")
    target: float = Field(
        gt=0, lt=1, allow_inf_nan=False, description="ratio of good events, strictly between 0 and 1"
    )
    op: Literal["lte"] | None = None
    value: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # Timeslices budgeting (OpenSLO): a slice of `timeSliceWindow` is good when its ratio of good events
    # reaches `timeSliceTarget`; `target` is then the ratio of good slices.
    time_slice_target: float | None = Field(
        default=None, alias="timeSliceTarget", gt=0, le=1, allow_inf_nan=False
    )
    time_slice_window: str | None = Field(default=None, alias="timeSliceWindow")

    @property
    def time_slice_s(self) -> float | None:
        return None if self.time_slice_window is None else parse_duration_s(self.time_slice_window)

    @property
    def error_budget(self) -> float:
        """The allowed ratio of bad events: 1 - target."""
        return 1.0 - self.target


class SloDefinition(BaseModel):
    """One SLO, flattened from its OpenSLO document."""

    model_config = ConfigDict(frozen=True)

    name: str
    display_name: str
    description: str
    service: str
    indicator: Literal["ratio", "threshold"]
    good_query: str | None = None  # ratio: PromQL of good events (a counter sum)
    total_query: str | None = None  # ratio: PromQL of valid events
    metric: str | None = None  # threshold: the histogram's base name
    window_s: float
    budgeting_method: Literal["Occurrences", "Timeslices"] = "Occurrences"
    objectives: tuple[Objective, ...]
    alert_min_events: int = Field(default=DEFAULT_ALERT_MIN_EVENTS, ge=1, strict=False)
    line: int = 0  # where the document starts in the file, for messages

    @model_validator(mode="after")
    def _check(self) -> SloDefinition:
        if self.indicator == "ratio" and not (self.good_query and self.total_query):
            raise ValueError("a ratioMetric needs good and total queries")
        if self.indicator == "threshold":
            for _, message in _threshold_problems(self.metric, self.objectives):
                raise ValueError(message)
        return self


def _threshold_problems(
    metric: str | None, objectives: tuple[Objective, ...]
) -> list[tuple[int | None, str]]:
    """What is wrong with a threshold SLO: (index of the objective or None for the metric, message)."""
    if metric not in HISTOGRAM_BUCKETS:
        return [
            (
                None,
                f"thresholdMetric query {metric!r} is not one of the lab's histograms "
                f"({', '.join(HISTOGRAM_BUCKETS)})",
            )
        ]
    buckets = HISTOGRAM_BUCKETS[metric]
    problems: list[tuple[int | None, str]] = []
    for index, objective in enumerate(objectives):
        if objective.op != "lte" or objective.value is None:
            problems.append((index, f"objective {objective.display_name!r} needs `op: lte` and a `value`"))
        elif objective.value not in buckets:
            problems.append(
                (
                    index,
                    f"objective {objective.display_name!r}: threshold {objective.value:g} s is not "
                    f"a bucket boundary of {metric} ({', '.join(f'{b:g}' for b in buckets)}); "
                    "the SLI would be an interpolation instead of an exact ratio",
                )
            )
    return problems


def default_spec_path() -> Path:
    return stack_dir() / "slo.yaml"


# The keys labkit reads at each level of an OpenSLO SLO document (a list holds its items' keys); `None`
# accepts anything below. Any other key is refused with its line: a typo must not be silently ignored.
_METRIC_SOURCE: dict[str, Any] = {"metricSource": {"type": None, "spec": {"query": None}}}
_KEYS: dict[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "metadata": {"name": None, "displayName": None, "labels": None, "annotations": None},
    "spec": {
        "description": None,
        "service": None,
        "indicator": {
            "metadata": None,
            "spec": {
                "ratioMetric": {"counter": None, "good": _METRIC_SOURCE, "total": _METRIC_SOURCE},
                "thresholdMetric": _METRIC_SOURCE,
            },
        },
        "timeWindow": [{"duration": None, "isRolling": None}],
        "budgetingMethod": None,
        "objectives": None,  # validated by Objective, which refuses unknown keys itself
    },
}
# Where each field of SloDefinition comes from in the document.
_SOURCE: dict[str, tuple[str | int, ...]] = {
    "name": ("metadata", "name"),
    "display_name": ("metadata", "displayName"),
    "description": ("spec", "description"),
    "service": ("spec", "service"),
    "indicator": ("spec", "indicator", "spec"),
    "good_query": ("spec", "indicator", "spec", "ratioMetric", "good", "metricSource", "spec", "query"),
    "total_query": ("spec", "indicator", "spec", "ratioMetric", "total", "metricSource", "spec", "query"),
    "metric": ("spec", "indicator", "spec", "thresholdMetric", "metricSource", "spec", "query"),
    "window_s": ("spec", "timeWindow", 0, "duration"),
    "objectives": ("spec", "objectives"),
    "alert_min_events": ("metadata", "annotations", ALERT_MIN_EVENTS_ANNOTATION),
}


def _unknown_key(data: Any, keys: Any, loc: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """The path of the first key the document has that labkit does not read, or None."""
    if isinstance(keys, dict) and isinstance(data, dict):
        for key, value in data.items():
            if key not in keys:
                return (*loc, key)
            found = _unknown_key(value, keys[key], (*loc, key))
            if found is not None:
                return found
    elif isinstance(keys, list) and isinstance(data, list):
        for index, item in enumerate(data):
            found = _unknown_key(item, keys[0], (*loc, index))
            if found is not None:
                return found
    return None


def _at(doc: dict[str, Any], loc: tuple[str | int, ...], *, required: bool = True) -> Any:
    """The value at `loc` in the document; a FieldError naming the first part that is missing or is
    not a mapping (or a list, for an index)."""
    value: Any = doc
    for depth, part in enumerate(loc):
        here = loc[:depth]
        if isinstance(part, int):
            if not isinstance(value, list):
                raise FieldError(here, "must be a list")
            if part >= len(value):
                raise FieldError(here, f"needs at least {part + 1} item(s)")
            value = value[part]
            continue
        if not isinstance(value, dict):
            raise FieldError(here, "must be a mapping")
        if part not in value or value[part] is None:
            if not required:
                return None
            raise FieldError((*here, part), "missing")
        value = value[part]
    return value


def _flatten(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise FieldError((), "each document must be a mapping with apiVersion, kind, metadata and spec")
    unknown = _unknown_key(doc, _KEYS)
    if unknown is not None:
        raise FieldError(unknown, "unknown field; check its spelling (labkit reads a subset of OpenSLO v1)")
    if doc.get("apiVersion") != "openslo/v1":
        raise FieldError(("apiVersion",), f"must be openslo/v1, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != "SLO":
        raise FieldError(("kind",), f"must be SLO, got {doc.get('kind')!r}")
    method = _at(doc, ("spec", "budgetingMethod"))
    if method not in ("Occurrences", "Timeslices"):
        raise FieldError(
            ("spec", "budgetingMethod"),
            f"must be Occurrences or Timeslices (RatioTimeslices is not implemented), got {method!r}",
        )
    windows = _at(doc, ("spec", "timeWindow"))
    if not isinstance(windows, list) or len(windows) != 1:
        raise FieldError(("spec", "timeWindow"), "must be a list with one {duration: ...} entry")
    duration = _at(doc, _SOURCE["window_s"])
    try:
        window_s = parse_duration_s(str(duration))
    except ValueError as exc:
        raise FieldError(_SOURCE["window_s"], str(exc)) from None
    indicator = _at(doc, _SOURCE["indicator"])
    if not isinstance(indicator, dict):
        raise FieldError(_SOURCE["indicator"], "must be a mapping with ratioMetric or thresholdMetric")
    flat: dict[str, Any] = {
        "name": _at(doc, _SOURCE["name"]),
        "display_name": _at(doc, _SOURCE["display_name"], required=False) or _at(doc, _SOURCE["name"]),
        "description": _at(doc, _SOURCE["description"], required=False) or "",
        "service": _at(doc, _SOURCE["service"], required=False) or "",
        "window_s": window_s,
        "objectives": _at(doc, _SOURCE["objectives"]),
    }
    min_events = _at(doc, _SOURCE["alert_min_events"], required=False)
    if min_events is not None:
        flat["alert_min_events"] = min_events
    if "ratioMetric" in indicator:
        flat["indicator"] = "ratio"
        flat["good_query"] = _at(doc, _SOURCE["good_query"])
        flat["total_query"] = _at(doc, _SOURCE["total_query"])
    elif "thresholdMetric" in indicator:
        flat["indicator"] = "threshold"
        flat["metric"] = _at(doc, _SOURCE["metric"])
    else:
        raise FieldError(
            _SOURCE["indicator"], f"unknown indicator {sorted(indicator)}; use ratioMetric or thresholdMetric"
        )
    if not isinstance(flat["objectives"], list) or not flat["objectives"]:
        raise FieldError(_SOURCE["objectives"], "must list at least one objective")
    flat["budgeting_method"] = method
    _check_time_slices(method, flat["objectives"])
    return flat


def _check_time_slices(method: str, objectives: list[Any]) -> None:
    """Timeslices needs timeSliceTarget and timeSliceWindow on every objective; Occurrences takes neither."""
    for index, objective in enumerate(objectives):
        if not isinstance(objective, dict):
            continue  # Objective's own validation says what is wrong
        where = (*_SOURCE["objectives"], index)
        for key in ("timeSliceTarget", "timeSliceWindow"):
            if method == "Timeslices" and objective.get(key) is None:
                raise FieldError(
                    (*where, key), "missing; budgetingMethod Timeslices needs it on every objective"
                )
            if method == "Occurrences" and key in objective:
                raise FieldError((*where, key), "only applies to budgetingMethod Timeslices")
        if method == "Timeslices":
            try:
                parse_duration_s(str(objective["timeSliceWindow"]))
            except ValueError as exc:
                raise FieldError((*where, "timeSliceWindow"), str(exc)) from None


def _validate(doc: Any) -> SloDefinition:
    """One document as an SloDefinition; every problem a FieldError with its path in the document."""
    flat = _flatten(doc)
    try:
        return SloDefinition(**flat)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        field = str(loc[0]) if loc else ""
        source = _SOURCE.get(field, ())
        message = "; ".join(e["msg"] for e in exc.errors() if tuple(e["loc"]) == loc)
        if not loc and flat["indicator"] == "threshold":
            # the model's own checks: name the objective (or the metric) they are about
            objectives = tuple(Objective(**o) for o in flat["objectives"])
            for index, problem in _threshold_problems(flat["metric"], objectives):
                where = _SOURCE["metric"] if index is None else (*_SOURCE["objectives"], index, "value")
                raise FieldError(where, problem) from None
        raise FieldError((*source, *loc[1:]), message.removeprefix("Value error, ")) from None


def load_slo_spec(path: Path | None = None) -> list[SloDefinition]:
    """Read and validate the spec; any problem is one `SloSpecError` that reads
    `FILE:LINE: SLO NAME: field.path: what is wrong`, with the line of the offending field."""
    path = path or default_spec_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SloSpecError(f"cannot read SLO spec {path}: {exc}") from exc
    try:
        documents = [(doc, lines) for doc, lines in load_documents(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise SloSpecError(f"{path}{where}: not valid YAML: {detail}") from exc
    if not documents:
        raise SloSpecError(f"{path}: no SLO documents; give one `kind: SLO` document per objective set")
    slos: list[SloDefinition] = []
    seen: dict[str, int] = {}
    for index, (doc, lines) in enumerate(documents):
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        what = f"SLO {name}" if isinstance(name, str) and name else f"SLO document {index + 1}"
        duplicate = lines.duplicate_key()
        if duplicate is not None:
            loc, line = duplicate
            raise SloSpecError(f"{path}:{line}: {what}: {format_loc(loc)}: given twice; keep one")
        try:
            slo = _validate(doc)
        except FieldError as exc:
            field = format_loc(exc.loc)
            raise SloSpecError(
                f"{path}:{lines.of(exc.loc)}: {what}: {field + ': ' if field else ''}{exc}"
            ) from None
        line = lines.of(_SOURCE["name"])
        if slo.name in seen:
            raise SloSpecError(
                f"{path}:{line}: {what}: metadata.name: {slo.name!r} is already the name of the SLO "
                f"on line {seen[slo.name]}; SLO names must be unique"
            )
        seen[slo.name] = line
        slos.append(slo.model_copy(update={"line": lines.of(())}))
    return slos
