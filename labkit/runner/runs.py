"""Batch runs of the scenario notebooks (what `labkit run` and `labkit report` do): papermill executes a
notebook into a new run directory, then the SLO report notebook is executed and rendered as one
self-contained HTML file, and `reports/index.html` is brought up to date.

Parameters are checked against the notebook's `parameters` cell and the scenario's spec before anything runs
(papermill itself only warns about unknown ones). A scenario shows its run's progress, not a cell bar."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import labkit.diskspace as diskspace
from labkit._version import __version__
from labkit.errors import ConfigError, LabkitError
from labkit.params import ParameterError
from labkit.rundir import INDEX_FILE, RUNS_FOLDER, RunDirectory, RunFile
from labkit.runner.cells import cell_rows, describe_failure, failure_message
from labkit.runner.html import export_html
from labkit.runner.kernel import KERNEL_NAME, ensure_kernelspec, kernel_manager_logging_to
from labkit.runner.notebooks import NotebookError, NotebookParameter, notebook_parameters, notebooks_dir
from labkit.runner.progress import run_progress
from labkit.scenarios.specs import REPORT_NOTEBOOK, RESERVED_PARAMETERS

__all__ = [
    "ReportRenderError",
    "RunFailedError",
    "RunInterruptedError",
    "RunPlan",
    "RunResult",
    "Scenario",
    "ScenarioRunner",
    "load_catalog",
    "render_report",
]

logger = logging.getLogger(__name__)


class ReportRenderError(LabkitError):
    """The report notebook failed or could not be rendered as HTML."""


class RunFailedError(LabkitError):
    """A scenario run failed; `result` describes it and its (partial, readable) run directory."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


class RunInterruptedError(RunFailedError):
    """A run was interrupted (Ctrl-C); its run directory is marked failed and left readable."""


class Scenario(Protocol):
    """What the runner needs of a catalog entry (labkit.scenarios.Scenario is one)."""

    @property
    def name(self) -> str: ...

    @property
    def notebook(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def quick(self) -> Mapping[str, Any]: ...

    def check_parameters(self, values: Mapping[str, Any]) -> None:
        """ParameterError (a ConfigError) when `values` (over the defaults) are not the scenario's."""

    def bound(self, name: str) -> str | None:
        """What values parameter `name` may take, in words (`in (0, 3600] s`); None: any of its type."""


Summarizer = Callable[[Path], Mapping[str, Any] | None]
IndexWriter = Callable[[Path], object]


def load_catalog() -> Mapping[str, Scenario]:
    """The scenarios `labkit run` knows: labkit.scenarios.SCENARIOS (imported only when needed)."""
    from labkit.scenarios.catalog import SCENARIOS

    return SCENARIOS


@dataclass(frozen=True)
class RunPlan:
    """A validated run: the notebook to execute and its converted parameters (not yet the reserved ones)."""

    scenario: str
    title: str
    notebook: Path
    declared: Mapping[str, NotebookParameter]
    parameters: Mapping[str, Any]
    quick: bool


@dataclass
class RunResult:
    """What one run left behind. `ok` when the notebook completed and the report and index were written."""

    scenario: str
    run_dir: Path
    status: Literal["completed", "failed"]
    message: str | None = None  # why it failed, in one line
    error: dict[str, Any] | None = None
    report_html: Path | None = None
    index_html: Path | None = None
    verdict: str | None = None
    headline: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)  # report, headline or index failures

    @property
    def ok(self) -> bool:
        return self.status == "completed" and not self.problems


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ScenarioRunner:
    """Runs scenarios from a catalog (default: labkit.scenarios.SCENARIOS and the repository's notebooks).

    `summarize(run_dir)` returns the headline SLIs of a run (and its `verdict`), `write_index(reports_dir)`
    writes reports/index.html; both default to labkit.report's. `say` receives progress lines."""

    def __init__(
        self,
        *,
        catalog: Mapping[str, Scenario] | None = None,
        notebooks: Path | None = None,
        out: Path = Path("reports/runs"),
        lab_dir: Path | None = None,
        engine: str | None = None,
        backend: str | None = None,
        kernel_name: str = KERNEL_NAME,
        report_notebook: str = REPORT_NOTEBOOK,
        cwd: Path | None = None,
        progress: bool = True,
        say: Callable[[str], None] | None = None,
        summarize: Summarizer | None = None,
        write_index: IndexWriter | None = None,
    ) -> None:
        self._catalog = catalog
        self._notebooks = notebooks
        self.out = out.resolve()
        self.lab_dir = lab_dir
        self.engine = engine
        self.backend = backend
        self.kernel_name = kernel_name
        self.report_notebook = report_notebook
        self._cwd = cwd
        self.progress = progress
        self.say: Callable[[str], None] = say or logger.info
        self._summarize = summarize
        self._write_index = write_index
        self._kernel_ready = False

    # -- catalog

    @property
    def catalog(self) -> Mapping[str, Scenario]:
        if self._catalog is None:
            self._catalog = load_catalog()
        return self._catalog

    @property
    def notebooks(self) -> Path:
        if self._notebooks is None:
            self._notebooks = notebooks_dir()
        return self._notebooks

    @property
    def cwd(self) -> Path:
        """Where notebooks run: the repository root (the parent of notebooks/)."""
        return (self._cwd or self.notebooks.parent).resolve()

    @property
    def reports_dir(self) -> Path:
        """Where reports/index.html goes: the parent of the runs folder."""
        return self.out.parent

    def scenario(self, name: str) -> Scenario:
        try:
            return self.catalog[name]
        except KeyError:
            raise ConfigError(
                f"unknown scenario {name!r}; the scenarios are: {', '.join(self.catalog)}"
            ) from None

    def notebook_path(self, file_name: str) -> Path:
        path = self.notebooks / file_name
        if not path.is_file():
            raise NotebookError(f"notebook {path} does not exist; set LABKIT_NOTEBOOKS_DIR or restore it")
        return path

    def parameters(self, name: str) -> dict[str, NotebookParameter]:
        """The parameters scenario `name`'s notebook declares."""
        return notebook_parameters(self.notebook_path(self.scenario(name).notebook))

    def describe_parameters(self, name: str) -> str:
        """What `labkit run NAME --help-params` prints (like `papermill --help-notebook`)."""
        scenario = self.scenario(name)
        params = self.parameters(name)
        lines = [
            f"{scenario.name}: {scenario.title}",
            f"notebook: {self.notebook_path(scenario.notebook)}",
            "",
        ]
        lines.append("Parameters (-p NAME VALUE):")
        own = [p for p in params.values() if p.name not in RESERVED_PARAMETERS]
        for p in own:
            type_name = "unknown type" if p.type_name == "None" else p.type_name
            definition = f"  {p.name}: {type_name} (default {p.default})"
            bound = scenario.bound(p.name)
            lines.append(f"{definition:<46} {p.help}{f'; {bound}' if bound else ''}".rstrip())
        if not own:
            lines.append("  (none)")
        reserved = [n for n in RESERVED_PARAMETERS if n in params]
        if reserved:
            lines += ["", "Set by labkit run (not with -p):"]
            lines += [f"  {n:<10} {RESERVED_PARAMETERS[n]}" for n in reserved]
        if scenario.quick:
            quick = ", ".join(f"{k}={v!r}" for k, v in scenario.quick.items())
            lines += ["", f"--quick sets: {quick}"]
        return "\n".join(lines)

    # -- planning: everything is checked before anything runs

    def plan(
        self, name: str, parameters: Mapping[str, object] | None = None, *, quick: bool = False
    ) -> RunPlan:
        """Check scenario `name` and `parameters` (user values over the catalog's quick ones when `quick`)."""
        plan = self._plan(name, parameters, quick=quick)
        if self.engine is not None and "engine" not in plan.declared:
            raise ParameterError(f"scenario {name} does not take an engine; leave out --engine")
        if self.backend is not None and "backend" not in plan.declared:
            raise ParameterError(f"scenario {name} does not take a backend; leave out --backend")
        return plan

    def _plan(self, name: str, parameters: Mapping[str, object] | None, *, quick: bool) -> RunPlan:
        scenario = self.scenario(name)
        notebook = self.notebook_path(scenario.notebook)
        declared = notebook_parameters(notebook)
        user = dict(parameters or {})
        for pname in user:
            if pname in RESERVED_PARAMETERS:
                raise ParameterError(f"parameter {pname} is set by labkit run; {RESERVED_PARAMETERS[pname]}")
            if pname not in declared:
                valid = [n for n in declared if n not in RESERVED_PARAMETERS]
                raise ParameterError(
                    f"scenario {name} has no parameter {pname!r}; its parameters are: "
                    f"{', '.join(valid) or '(none)'} (see `labkit run {name} --help-params`)"
                )
        values: dict[str, Any] = {}
        if quick:
            for pname, value in scenario.quick.items():
                if pname not in declared:
                    raise NotebookError(
                        f"the quick parameters of scenario {name} name {pname!r}, which "
                        f"{notebook.name} does not declare; fix labkit.scenarios or the notebook"
                    )
                values[pname] = declared[pname].convert(value)
        for pname, value in user.items():
            values[pname] = declared[pname].convert(value)
        try:  # judged with the spec's defaults of the parameters not given (kill_at_s < duration_s)
            scenario.check_parameters(values)
        except ConfigError as exc:
            raise ParameterError(f"{exc}{' (with --quick)' if quick else ''}") from exc
        return RunPlan(name, scenario.title, notebook, declared, values, quick)

    def plan_all(
        self, parameters: Mapping[str, object] | None = None, *, quick: bool = False
    ) -> list[RunPlan]:
        """A plan for every scenario in catalog order. Each `parameters` entry, and --engine, goes to the
        scenarios that declare it, and must be declared by at least one."""
        user = dict(parameters or {})
        declared = {name: self.parameters(name) for name in self.catalog}
        if self.engine is not None and not any("engine" in d for d in declared.values()):
            raise ParameterError("no scenario takes an engine; leave out --engine")
        if self.backend is not None and not any("backend" in d for d in declared.values()):
            raise ParameterError("no scenario takes a backend; leave out --backend")
        for pname in user:
            if pname in RESERVED_PARAMETERS:
                raise ParameterError(f"parameter {pname} is set by labkit run; {RESERVED_PARAMETERS[pname]}")
            if not any(pname in d for d in declared.values()):
                names = sorted({n for d in declared.values() for n in d} - set(RESERVED_PARAMETERS))
                raise ParameterError(
                    f"no scenario has a parameter {pname!r}; the parameters are: {', '.join(names)}"
                )
        return [
            self._plan(name, {k: v for k, v in user.items() if k in declared[name]}, quick=quick)
            for name in self.catalog
        ]

    # -- running

    def run(
        self, name: str, parameters: Mapping[str, object] | None = None, *, quick: bool = False
    ) -> RunResult:
        """Run scenario `name` into a new run directory, render its report and update the index.

        Raises RunFailedError (the notebook failed), RunInterruptedError (Ctrl-C) or ReportRenderError
        (the run completed but its report, headline or index failed)."""
        result = self.execute(self.plan(name, parameters, quick=quick))
        self.raise_for(result)
        return result

    def run_all(
        self,
        parameters: Mapping[str, object] | None = None,
        *,
        quick: bool = False,
        on_result: Callable[[RunResult], None] | None = None,
    ) -> list[RunResult]:
        """Run every scenario in catalog order, each into its own run directory, going on after a failure.
        Ctrl-C stops the batch (RunInterruptedError). Check `ok` of each result."""
        plans = self.plan_all(parameters, quick=quick)
        results: list[RunResult] = []
        for i, plan in enumerate(plans, 1):
            self.say(f"== {plan.scenario} ({i}/{len(plans)}): {plan.title}")
            result = self.execute(plan)
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results

    @staticmethod
    def raise_for(result: RunResult) -> None:
        """Raise the error a failed or incomplete result stands for; nothing when `result.ok`."""
        if result.status == "failed":
            raise RunFailedError(result.message or f"scenario {result.scenario} failed", result)
        if result.problems:
            raise ReportRenderError(
                f"scenario {result.scenario} completed, but: {'; '.join(result.problems)} "
                f"(rerun `labkit report {result.run_dir}` once fixed)"
            )

    def execute(self, plan: RunPlan) -> RunResult:
        """Run a plan: notebook.ipynb, cells.json and run.json, then the report and the index.
        A failing notebook gives a failed result (the report of what exists is still rendered);
        Ctrl-C marks the run failed, updates the index and raises RunInterruptedError."""
        self._ensure_kernel()
        diskspace.check_free_space(self.out, what=f"labkit run {plan.scenario}")
        run_dir = RunDirectory.create(self.out, plan.scenario)
        reserve = diskspace.SpaceReserve(run_dir.path).claim()
        injected = self._injected(plan, run_dir)
        record: dict[str, Any] = {
            "run_id": run_dir.run_id,
            "scenario": plan.scenario,
            "title": plan.title,
            "notebook": plan.notebook.name,
            # run_dir and out_dir are where run.json itself lies; the rest is what the run was asked to do.
            "parameters": {
                **plan.parameters,
                **{k: v for k, v in injected.items() if k not in ("run_dir", "out_dir")},
            },
            "quick": plan.quick,
            "status": "running",
            "started_at": _now(),
            "finished_at": None,
            "error": None,
            "verdict": None,
            "headline": None,
            "labkit_version": __version__,
        }
        try:
            return self._execute(plan, run_dir, record, {**plan.parameters, **injected})
        except OSError as exc:
            if not diskspace.is_disk_full(exc):
                raise
            error = diskspace.record_disk_full(run_dir, {**record, "finished_at": _now()}, reserve)
            self.update_index([])
            raise error from None
        finally:
            reserve.release()

    def _execute(
        self, plan: RunPlan, run_dir: RunDirectory, record: dict[str, Any], parameters: dict[str, Any]
    ) -> RunResult:
        run_dir.write_run_record(record)
        self.say(f"running {plan.notebook.name} into {run_dir.path}")
        result = self._run_scenario_notebook(plan, run_dir, parameters)
        if result.status == "failed":
            diskspace.raise_if_disk_full(result.error, run_dir.path)
        record.update(status=result.status, error=result.error)
        run_dir.write_run_record(record)

        interrupted = result.error is not None and result.error.get("ename") == "KeyboardInterrupt"
        if not interrupted:  # after Ctrl-C, a person wants the prompt back, not another notebook
            try:
                result.report_html = self.render_report(run_dir.path, update_index=False)
            except LabkitError as exc:
                result.problems.append(f"report: {exc}")
                partial = run_dir.file(RunFile.REPORT)
                result.report_html = partial if partial.exists() else None
            self._summarize_into(result)
        record.update(finished_at=_now(), verdict=result.verdict, headline=result.headline)
        if result.problems:
            record["problems"] = result.problems
        run_dir.write_run_record(record)
        result.index_html = self.update_index(result.problems)
        if interrupted:
            raise RunInterruptedError(result.message or "interrupted", result)
        diskspace.raise_if_disk_full(result.problems, run_dir.path)
        return result

    def _run_scenario_notebook(
        self, plan: RunPlan, run_dir: RunDirectory, parameters: Mapping[str, Any]
    ) -> RunResult:
        """Execute the scenario's notebook into run_dir/notebook.ipynb and write cells.json; a failure
        (a cell's error, a dead kernel, Ctrl-C) becomes the result's `error` and `message`."""
        result = RunResult(plan.scenario, run_dir.path, "completed")
        output = run_dir.file(RunFile.NOTEBOOK)
        try:
            self._execute_notebook(
                plan.notebook, output, parameters, kernel_log=run_dir.file(RunFile.KERNEL_LOG)
            )
        except KeyboardInterrupt:
            rows = cell_rows(output, interrupted=True)
            cell = next((r for r in rows if r["status"] == "interrupted"), None)
            result.status = "failed"
            result.error = {
                "cell": None if cell is None else cell["cell"],
                "source": None if cell is None else cell["source"],
                "ename": "KeyboardInterrupt",
                "evalue": "interrupted",
            }
            where = "" if cell is None else f" in cell {cell['cell']} ({cell['source']})"
            result.message = (
                f"scenario {plan.scenario} was interrupted{where}; the partial run is in {run_dir.path} "
                f"(`labkit report {run_dir.path}` renders its report)"
            )
        except Exception as exc:  # every failure is recorded in run.json, then reported
            rows = cell_rows(output)
            result.status = "failed"
            result.error = describe_failure(exc, output)
            result.message = failure_message(plan.scenario, plan.notebook.name, result.error, run_dir.path)
        else:
            rows = cell_rows(output)
        # Papermill keeps the same timings in notebook.ipynb's metadata; this is for people who do not
        # open notebooks.
        run_dir.write_json(RunFile.CELLS, {"notebook": plan.notebook.name, "cells": rows})
        return result

    def _ensure_kernel(self) -> None:
        if not self._kernel_ready:
            if self.kernel_name == KERNEL_NAME:
                ensure_kernelspec(self.kernel_name)
            self._kernel_ready = True

    def _injected(self, plan: RunPlan, run_dir: RunDirectory) -> dict[str, Any]:
        """The reserved parameters the notebook declares, from the runner's own options."""
        values: dict[str, Any] = {"run_dir": str(run_dir.path), "out_dir": str(self.out)}
        if self.lab_dir is not None:
            values["lab_dir"] = str(self.lab_dir.resolve())
        if self.engine is not None:
            values["engine"] = self.engine
        if self.backend is not None:
            values["backend"] = self.backend
        return {k: v for k, v in values.items() if k in plan.declared}

    def _execute_notebook(
        self, notebook: Path, output: Path, parameters: Mapping[str, Any], *, kernel_log: Path
    ) -> None:
        from labkit.runner.notebook_io import execute_notebook

        live = self.progress and output.name == RunFile.NOTEBOOK  # a scenario's: its phase, elapsed, faults
        with open(kernel_log, "ab") as log, run_progress(output.parent, enabled=live):
            execute_notebook(
                notebook,
                output,
                parameters=dict(parameters),
                kernel_name=self.kernel_name,
                language="python",
                progress_bar=self.progress and not live,
                log_output=False,
                cwd=str(self.cwd),
                kernel_manager_class=kernel_manager_logging_to(log),
            )

    def _summarize_into(self, result: RunResult) -> None:
        """The run's verdict and headline SLIs, when the report library can read them."""
        summarize = self._summarize or _summarize
        try:
            summary = summarize(result.run_dir)
        except Exception as exc:  # a headline is optional; the run itself stands
            if result.status == "completed":
                result.problems.append(f"headline: {type(exc).__name__}: {exc}")
            logger.info("no headline for %s: %s", result.run_dir, exc, exc_info=True)
            return
        if summary is not None:
            headline = dict(summary)
            verdict = headline.pop("verdict", None)
            result.verdict = None if verdict is None else str(verdict)
            result.headline = headline

    def update_index(self, problems: list[str] | None = None) -> Path | None:
        """Rewrite reports/index.html (labkit.report.write_index); its path, or None without labkit.report.
        A failure is appended to `problems` when given, else raised as ReportRenderError."""
        write_index = self._write_index or _write_index
        if self.out.name != RUNS_FOLDER:
            # The index lists <reports>/runs/*: runs kept elsewhere (--out /tmp/x) are not part of one.
            logger.info("no index: %s is not a reports/runs folder", self.out)
            return None
        try:
            written = write_index(self.reports_dir)
        except Exception as exc:  # reported to the caller, who decides
            message = f"index: {type(exc).__name__}: {exc}"
            if problems is None:
                raise ReportRenderError(message) from exc
            problems.append(message)
            return None
        return written if isinstance(written, Path) else self.reports_dir / INDEX_FILE

    # -- the report

    def render_report(self, run_dir: Path, *, update_index: bool = True) -> Path:
        """Execute the report notebook on `run_dir` into run_dir/report.ipynb and render report.html.
        When the report notebook fails, what it drew so far is still rendered, then ReportRenderError."""
        run_dir = Path(run_dir).resolve()
        if not run_dir.is_dir():
            raise ConfigError(f"no run directory at {run_dir}")
        notebook = self.notebook_path(self.report_notebook)
        declared = notebook_parameters(notebook)
        if "run_dir" not in declared:
            raise NotebookError(
                f"{notebook.name} has no run_dir parameter; the report cannot be told its run"
            )
        parameters = {"run_dir": str(run_dir), "out_dir": str(run_dir.parent)}
        self._ensure_kernel()
        output = run_dir / RunFile.REPORT_NOTEBOOK
        self.say(f"rendering the report: {notebook.name} into {output}")
        failure: str | None = None
        try:
            self._execute_notebook(
                notebook,
                output,
                {k: v for k, v in parameters.items() if k in declared},
                kernel_log=run_dir / RunFile.KERNEL_LOG,
            )
        except Exception as exc:  # the partial report is rendered, then the error raised
            error = describe_failure(exc, output)
            failure = (
                f"the report notebook {notebook.name} failed in cell {error.get('cell')} "
                f"({error.get('source', '')}): {error['ename']}: {error['evalue']}"
            )
        html = run_dir / RunFile.REPORT
        if output.exists():
            try:
                export_html(output, html, title=f"labkit report: {run_dir.name}")
            except Exception as exc:  # nbconvert's errors have no common base
                raise ReportRenderError(
                    f"cannot render {output} as HTML: {type(exc).__name__}: {exc}"
                ) from exc
        if failure is not None:
            where = f"; what it drew so far is in {html}" if html.exists() else ""
            raise ReportRenderError(failure + where)
        if update_index:
            self.update_index()
        return html


def render_report(run_dir: Path, **options: Any) -> Path:
    """Re-render `run_dir`'s report (report.ipynb, report.html) and update the index; `options` go to
    ScenarioRunner (e.g. notebooks=...)."""
    return ScenarioRunner(out=Path(run_dir).resolve().parent, **options).render_report(Path(run_dir))


def _summarize(run_dir: Path) -> Mapping[str, Any] | None:
    """The run's verdict and headline SLIs (labkit.report, imported when a run ends: pandas, matplotlib)."""
    from labkit.report import RunData, headline

    return _as_mapping(headline(RunData.load(run_dir)))


def _write_index(reports_dir: Path) -> Path:
    from labkit.report import write_index

    return write_index(reports_dir)


def _as_mapping(value: object) -> Mapping[str, Any] | None:
    """A headline as a dict, whether it is one, a pydantic model or a dataclass."""
    if value is None or isinstance(value, Mapping):
        return value
    if hasattr(value, "model_dump"):
        return dict(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"labkit.report.headline returned a {type(value).__name__}, not a mapping")
