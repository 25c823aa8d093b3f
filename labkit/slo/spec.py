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
from labkit.errors import ConfigError
from labkit.histograms import (
    INTER_TOKEN_LATENCY_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    TIME_TO_FIRST_TOKEN_BUCKETS,
)

__all__ = [
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
    target: float = Field(gt=0, lt=1, description="ratio of good events, strictly between 0 and 1")
    op: Literal["lte"] | None = None
    value: float | None = Field(default=None, gt=0)

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
    objectives: tuple[Objective, ...]
    line: int = 0  # where the document starts in the file, for messages

    @model_validator(mode="after")
    def _check(self) -> SloDefinition:
        if self.indicator == "ratio" and not (self.good_query and self.total_query):
            raise ValueError("a ratioMetric needs good and total queries")
        if self.indicator == "threshold":
            if self.metric not in HISTOGRAM_BUCKETS:
                raise ValueError(
                    f"thresholdMetric query {self.metric!r} is not one of the lab's histograms "
                    f"({', '.join(HISTOGRAM_BUCKETS)})"
                )
            buckets = HISTOGRAM_BUCKETS[self.metric]
            for objective in self.objectives:
                if objective.op != "lte" or objective.value is None:
                    raise ValueError(f"objective {objective.display_name!r} needs `op: lte` and a `value`")
                if objective.value not in buckets:
                    raise ValueError(
                        f"objective {objective.display_name!r}: threshold {objective.value:g} s is not "
                        f"a bucket boundary of {self.metric} ({', '.join(f'{b:g}' for b in buckets)}); "
                        "the SLI would be an interpolation instead of an exact ratio"
                    )
        return self


def default_spec_path() -> Path:
    return stack_dir() / "slo.yaml"


def _document_lines(text: str) -> list[int]:
    """1-based line where each YAML document starts."""
    loader = yaml.SafeLoader(text)
    starts: list[int] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                starts.append(node.start_mark.line + 1)
    finally:
        loader.dispose()
    return starts


def _flatten(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ValueError("each document must be a mapping with apiVersion, kind, metadata and spec")
    if doc.get("apiVersion") != "openslo/v1" or doc.get("kind") != "SLO":
        raise ValueError(
            f"expected apiVersion openslo/v1 and kind SLO, got {doc.get('apiVersion')!r}/{doc.get('kind')!r}"
        )
    meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
    if spec.get("budgetingMethod") != "Occurrences":
        raise ValueError("budgetingMethod must be Occurrences (the only method labkit implements)")
    windows = spec.get("timeWindow") or []
    if len(windows) != 1 or "duration" not in windows[0]:
        raise ValueError("timeWindow must be a list with one {duration: ...} entry")
    indicator = ((spec.get("indicator") or {}).get("spec")) or {}
    flat: dict[str, Any] = {
        "name": meta.get("name"),
        "display_name": meta.get("displayName") or meta.get("name"),
        "description": spec.get("description", ""),
        "service": spec.get("service", ""),
        "window_s": parse_duration_s(str(windows[0]["duration"])),
        "objectives": spec.get("objectives") or [],
    }
    if "ratioMetric" in indicator:
        ratio = indicator["ratioMetric"]
        flat["indicator"] = "ratio"
        flat["good_query"] = ratio["good"]["metricSource"]["spec"]["query"]
        flat["total_query"] = ratio["total"]["metricSource"]["spec"]["query"]
    elif "thresholdMetric" in indicator:
        flat["indicator"] = "threshold"
        flat["metric"] = indicator["thresholdMetric"]["metricSource"]["spec"]["query"]
    else:
        raise ValueError(f"unknown indicator {sorted(indicator)}; use ratioMetric or thresholdMetric")
    if not flat["objectives"]:
        raise ValueError("objectives must list at least one objective")
    return flat


def load_slo_spec(path: Path | None = None) -> list[SloDefinition]:
    """Read and validate the spec; any problem is one `SloSpecError` naming the file, line and field."""
    path = path or default_spec_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SloSpecError(f"cannot read SLO spec {path}: {exc}") from exc
    try:
        docs = list(yaml.safe_load_all(text))
        lines = _document_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise SloSpecError(f"{path}{where}: not valid YAML: {exc}") from exc
    docs = [d for d in docs if d is not None]
    if not docs:
        raise SloSpecError(f"{path}: no SLO documents")
    slos: list[SloDefinition] = []
    for index, doc in enumerate(docs):
        line = lines[index] if index < len(lines) else 0
        try:
            slos.append(SloDefinition(**_flatten(doc), line=line))
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            raise SloSpecError(f"{path}:{line}: SLO document {index + 1}: {_describe(exc)}") from exc
    names = [s.name for s in slos]
    if len(set(names)) != len(names):
        raise SloSpecError(f"{path}: SLO names must be unique, got {names}")
    return slos


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'slo'}: {err['msg']}" for err in exc.errors()
        )
    if isinstance(exc, KeyError):
        return f"missing key {exc}"
    return str(exc)
