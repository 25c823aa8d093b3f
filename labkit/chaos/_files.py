"""Experiment files (YAML or JSON): an ExperimentSpec written down — a schedule (explicit `faults:` or a
seeded `random:`) with the run's duration, load, steady-state and remediation settings.
Every error names the file and line: `exp.yaml:12: ...`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labkit.chaos._remediation import RemediationPolicy
from labkit.chaos._schedule import MAX_RUN_S, Schedule, random_schedule, schedule_problems
from labkit.chaos._spec import ExperimentLoad, ExperimentSpec, SteadyState
from labkit.errors import ConfigError
from labkit.faults import Fault, FaultKind, InvalidFaultError
from labkit.validation import describe_error, format_problem
from labkit.yaml_lines import YamlLines

__all__ = ["EXAMPLE_EXPERIMENT", "ExperimentFile", "load_experiment_file"]

EXAMPLE_EXPERIMENT = """\
# A labkit chaos experiment. Give `faults:` (explicit) or `random:` (seeded), not both.
title: latency then a killed model
duration_s: 60            # the method: load runs this long while the faults are applied
load: {rate: 2, stream: true, max_tokens: 32}
# load: {api: openai-chat, rate: 2, prompt_tokens: "128:32", max_tokens: 32}   (the wrapper's /v1 API)
steady_state: {enabled: true, duration_s: 5}
# remediation: {target: wrapper, threshold_s: 1.0, breaches_to_act: 2, cooldown_s: 30, dry_run: false}
# remediation: {target: wrapper, on_alert: SloErrorBudgetBurnPage, cooldown_s: 30}   (on Alertmanager's page)
faults:
  - {kind: latency, start_s: 10, duration_s: 15, params: {delay_s: 0.5}}
  - {kind: kill, target: model, start_s: 35, duration_s: 15}
# random: {seed: 7, kinds: [pause, latency, error], mean_gap_s: 10, fault_duration_s: [5, 15]}
"""


class _Random(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int
    kinds: list[str] | None = None
    targets: list[str] | None = None
    mean_gap_s: float | None = None
    fault_duration_s: tuple[float, float] | None = None


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str | None = None
    description: str | None = None
    duration_s: float | None = Field(default=None, gt=0, le=MAX_RUN_S, allow_inf_nan=False)
    load: ExperimentLoad = ExperimentLoad()
    steady_state: SteadyState = SteadyState()
    faults: list[dict[str, Any]] | None = None
    random: _Random | None = None
    remediation: RemediationPolicy | None = None


@dataclass(frozen=True)
class ExperimentFile:
    """A parsed, validated experiment file: its schedule, and `spec()`, the experiment it describes."""

    path: Path
    schedule: Schedule
    document: _Document  # the file's settings, validated

    @property
    def title(self) -> str | None:
        return self.document.title

    def spec(self, duration_s: float | None = None) -> ExperimentSpec:
        """The ExperimentSpec of this file; `duration_s` (e.g. a command line's) wins over the file's own,
        and the schedule must fit it (a ConfigError naming the file)."""
        total = duration_s if duration_s is not None else self.document.duration_s
        if total is None:
            raise ConfigError(f"{self.path} has no duration_s; pass --duration-s S")
        settings = self.document.model_dump(
            include={"load", "steady_state", "remediation", "title", "description"}
        )
        try:
            return ExperimentSpec(schedule=self.schedule, duration_s=total, **settings)
        except ConfigError as exc:
            raise ConfigError(f"{self.path} with duration_s {total:g}: {exc}") from None


def _parse(path: Path, text: str) -> tuple[Any, YamlLines]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:  # valid JSON that YAML 1.1 reads differently: no line numbers then
            root = None
        return data, YamlLines(root)
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None
    return data, YamlLines(root)


def _errors(path: Path, lines: YamlLines, exc: ValidationError) -> str:
    return "\n".join(
        f"{path}:{lines.of(loc)}: {format_problem(loc, message)}"
        for loc, message in (describe_error(err) for err in exc.errors())
    )


def load_experiment_file(
    path: Path | str, *, applicable: Mapping[FaultKind, Sequence[str]] | None = None
) -> ExperimentFile:
    """Read and validate an experiment file (YAML, or JSON by its .json suffix); see EXAMPLE_EXPERIMENT.

    Any problem is one ConfigError whose lines read `FILE:LINE: field: what is wrong`. When the file
    gives `duration_s`, the schedule must fit in it; `random:` needs it, and draws only the faults in
    `applicable` (`applicable_faults(config)` of the lab it will run on; default: every fault)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read experiment file {path}: {exc.strerror or exc}") from None
    data, lines = _parse(path, text)
    duplicate = lines.duplicate_key()
    if duplicate is not None:
        loc, line = duplicate
        raise ConfigError(
            f"{path}:{line}: {format_problem(loc, 'given twice in the same mapping; keep one')}"
        )
    if not isinstance(data, dict):
        empty = " (this one is empty)" if data is None else ""
        raise ConfigError(
            f"{path}:{lines.of(())}: an experiment file{empty} is a mapping with `faults:` (a list) or "
            "`random:` (a seed and options), plus optional duration_s, load, steady_state and remediation"
        )
    try:
        doc = _Document.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_errors(path, lines, exc)) from None
    if (doc.faults is None) == (doc.random is None):
        where = lines.of(("random",)) if doc.random is not None else 1
        raise ConfigError(f"{path}:{where}: give either `faults:` (a list of faults) or `random:`, not both")
    if doc.random is not None:
        schedule = _random_from(path, lines, doc, applicable)
    else:
        schedule = _explicit_from(path, lines, doc.faults or [], doc.duration_s)
    return ExperimentFile(path=path, schedule=schedule, document=doc)


def _explicit_from(
    path: Path, lines: YamlLines, items: list[dict[str, Any]], duration_s: float | None
) -> Schedule:
    faults: list[Fault] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            faults.append(Fault(**item))
        except InvalidFaultError as exc:
            for loc, message in exc.problems:
                where = f"{path}:{lines.of(('faults', index, *loc))}"
                problems.append(f"{where}: {format_problem(loc, message, f'faults[{index}]')}")
    if problems:
        raise ConfigError("\n".join(problems))
    misfits = schedule_problems(faults, duration_s)
    if misfits:
        raise ConfigError(
            # the start is what places a fault on the timeline: its line, or the fault's when it has none
            "\n".join(
                f"{path}:{lines.of(('faults', i, 'start_s'))}: faults[{i}]: {message}"
                for i, message in misfits
            )
        )
    return Schedule(duration_s=duration_s, faults=tuple(faults))


def _random_from(
    path: Path, lines: YamlLines, doc: _Document, applicable: Mapping[FaultKind, Sequence[str]] | None
) -> Schedule:
    assert doc.random is not None
    where = lines.of(("random",))
    if doc.duration_s is None:
        raise ConfigError(f"{path}:{where}: random: needs the run's duration_s at the top of the file")
    options: dict[str, Any] = doc.random.model_dump(exclude_none=True)
    seed = options.pop("seed")
    try:
        return random_schedule(seed, doc.duration_s, applicable=applicable, **options)
    except ConfigError as exc:
        name = str(exc).split(":", 1)[0]
        line = lines.of(("random", name.split("[", 1)[0]))
        raise ConfigError(f"{path}:{line}: random.{exc}") from None
