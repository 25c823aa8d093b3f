"""Batch runs of the scenario notebooks (what `labkit run` and `labkit report` do): papermill executes a
notebook into a new run directory, then the SLO report notebook is executed and rendered as one
self-contained HTML file, and `reports/index.html` is brought up to date.

Parameters are checked against the notebook's `parameters` cell before anything runs (papermill itself
only warns about unknown ones), and the notebooks run on a kernelspec named `labkit` that starts this
very interpreter (papermill#251, #761: the wrong interpreter or `NoSuchKernel` inside virtualenvs).
"""

from __future__ import annotations

import ast
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Literal, Protocol

from labkit._version import __version__
from labkit.atomic import write_atomically
from labkit.errors import ConfigError, LabkitError
from labkit.rundir import INDEX_FILE, RUNS_FOLDER, RunDirectory, RunFile

__all__ = [
    "KERNEL_NAME",
    "REPORT_NOTEBOOK",
    "RESERVED_PARAMETERS",
    "KernelSpecError",
    "NotebookError",
    "NotebookParameter",
    "ParameterError",
    "ReportRenderError",
    "RunFailedError",
    "RunInterruptedError",
    "RunResult",
    "Scenario",
    "ScenarioRunner",
    "convert_parameter",
    "ensure_kernelspec",
    "export_html",
    "load_catalog",
    "notebook_parameters",
    "notebooks_dir",
    "render_report",
]

logger = logging.getLogger(__name__)

KERNEL_NAME = "labkit"
REPORT_NOTEBOOK = "05_slo_report.ipynb"

# Parameters the runner sets itself, and what a person passes instead of `-p NAME VALUE`.
RESERVED_PARAMETERS: dict[str, str] = {
    "run_dir": "labkit run makes a new run directory for every run (under --out)",
    "out_dir": "use --out DIR",
    "lab_dir": "use the global option: labkit --lab-dir DIR run ...",
    "engine": "use --engine llama|sim|ollama",
    "backend": "use --backend local|docker",
}

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_SCALARS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}


class NotebookError(LabkitError):
    """A notebook is missing or cannot be run as a scenario (e.g. its parameters cell is unreadable)."""


class ParameterError(ConfigError):
    """A parameter is unknown, reserved, or its value does not convert to the declared type."""


class KernelSpecError(LabkitError):
    """The `labkit` kernelspec cannot be made to start this interpreter."""


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


Summarizer = Callable[[Path], Mapping[str, Any] | None]
IndexWriter = Callable[[Path], object]


def load_catalog() -> Mapping[str, Scenario]:
    """The scenarios `labkit run` knows: labkit.scenarios.SCENARIOS (imported only when needed)."""
    from labkit.scenarios import SCENARIOS

    return SCENARIOS


# ---- notebooks and their parameters -------------------------------------------------------------


def notebooks_dir() -> Path:
    """The scenario notebooks: LABKIT_NOTEBOOKS_DIR, else `notebooks/` next to the package (a checkout)."""
    override = os.environ.get("LABKIT_NOTEBOOKS_DIR")
    if override:
        if not Path(override).is_dir():
            raise ConfigError(f"LABKIT_NOTEBOOKS_DIR={override} is not a directory; unset it or fix it")
        return Path(override).resolve()
    candidate = Path(__file__).resolve().parent.parent / "notebooks"
    if candidate.is_dir():
        return candidate
    raise ConfigError(
        f"labkit's notebooks are not at {candidate} (an installed wheel has none); "
        "run labkit from a checkout of the repository or set LABKIT_NOTEBOOKS_DIR"
    )


@dataclass(frozen=True)
class NotebookParameter:
    """One line of a notebook's `parameters` cell, as papermill reads it."""

    name: str
    type_name: str  # the annotation ("float", "int", ...) or, without one, the type of the default
    default: str  # the default as written in the notebook
    help: str

    def convert(self, value: object) -> Any:
        """`value` (a command-line string, or an already typed value) as this parameter's type."""
        return convert_parameter(self, value)


def convert_parameter(param: NotebookParameter, value: object) -> Any:
    """Convert `value` to `param`'s declared type; a ParameterError says what was expected.

    Strings convert as on a command line: float accepts "1" and "2.5", int "3", bool
    true/false/1/0/yes/no. A parameter of another declared type takes a Python literal
    ("[1, 2]"), or the text itself when it is not one."""
    kind = _SCALARS.get(param.type_name)

    def refuse(why: str = "") -> ParameterError:
        expected = {"bool": "true or false (also 1/0, yes/no)", "int": "an integer", "float": "a number"}
        return ParameterError(
            f"parameter {param.name} expects {param.type_name} ({expected.get(param.type_name, 'text')}), "
            f"got {value!r}{why}"
        )

    if not isinstance(value, str):
        if kind is None or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise refuse()
    text = value.strip()
    if kind is str:
        return value
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise refuse()
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise refuse() from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise refuse() from None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return value


def _type_of_default(default: str) -> str:
    """The scalar type name of a default written without an annotation, else "None" (unknown)."""
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return "None"
    for name in ("bool", "int", "float", "str"):
        if type(value) is _SCALARS[name]:
            return name
    return "None"


def notebook_parameters(notebook: Path) -> dict[str, NotebookParameter]:
    """The parameters a notebook declares in its cell tagged `parameters`, in order.

    Papermill silently skips a line it cannot read (one with a second '=', as in `x: int = 1  # a = b`);
    such a line is an error here, because the runner would refuse a parameter the notebook has."""
    import nbformat
    import papermill

    if not notebook.is_file():
        raise NotebookError(f"notebook {notebook} does not exist")
    try:
        inspected = papermill.inspect_notebook(str(notebook))
    except ValueError as exc:  # no kernelspec in the notebook's metadata
        raise NotebookError(
            f"{notebook} cannot be inspected ({exc}); give it the kernelspec "
            f"{{name: {KERNEL_NAME}, language: python}} in its metadata"
        ) from exc
    params: dict[str, NotebookParameter] = {}
    for name, info in inspected.items():
        type_name = str(info["inferred_type_name"])
        if type_name == "None":
            type_name = _type_of_default(str(info["default"]))
        params[name] = NotebookParameter(name, type_name, str(info["default"]), str(info["help"]))

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise NotebookError(
            f"{notebook} has no cell tagged `parameters`; tag its first code cell `parameters` "
            "(one `name: type = default  # help` per line)"
        )
    for name, line in _assigned_names(cells[0].source):
        if name not in params:
            raise NotebookError(
                f"papermill cannot read parameter {name!r} in the parameters cell of {notebook.name} "
                f"(line {line}); write it as `name: type = default  # help`, with no '=' in the help"
            )
    return params


def _assigned_names(source: str) -> list[tuple[str, int]]:
    """(name, line) of every top-level assignment in a parameters cell; none if it is not plain Python."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found: list[tuple[str, int]] = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            found += [(t.id, node.lineno) for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found.append((node.target.id, node.lineno))
    return found


# ---- the kernel -----------------------------------------------------------------------------------


def ensure_kernelspec(name: str = KERNEL_NAME, *, prefix: Path | None = None) -> Path:
    """Make sure the kernelspec `name` starts this interpreter, creating or repairing it; its directory.

    Without `prefix`: the spec Jupyter resolves `name` to is used when it starts this interpreter, else one
    is written in this environment (sys.prefix) and resolved again, so that a spec of the same name
    earlier on the Jupyter path (JUPYTER_PATH, the user's) cannot silently win. With `prefix`: the spec in
    `prefix`/share/jupyter/kernels is created or repaired, and nothing is resolved."""
    if prefix is not None:
        kernel_dir = prefix / "share" / "jupyter" / "kernels" / name
        if not _starts_this_interpreter(kernel_dir / "kernel.json"):
            _install_kernelspec(name, prefix)
        return kernel_dir
    found = _resolve_kernelspec(name)
    if found is not None and _starts_this_interpreter(found / "kernel.json"):
        return found
    _install_kernelspec(name, Path(sys.prefix))
    found = _resolve_kernelspec(name)
    if found is None or not _starts_this_interpreter(found / "kernel.json"):
        raise KernelSpecError(
            f"Jupyter finds the {name!r} kernel at {found}, which does not start {sys.executable}; "
            f"remove it (`jupyter kernelspec remove {name}`) or unset JUPYTER_PATH, then run again"
        )
    return found


def _resolve_kernelspec(name: str) -> Path | None:
    from jupyter_client.kernelspec import KernelSpecManager

    found = KernelSpecManager().find_kernel_specs().get(name)
    return None if found is None else Path(found)


def _install_kernelspec(name: str, prefix: Path) -> None:
    from ipykernel.kernelspec import install

    kernel_dir = prefix / "share" / "jupyter" / "kernels" / name
    logger.info("installing the %s kernelspec in %s for %s", name, kernel_dir, sys.executable)
    try:
        install(kernel_name=name, display_name=f"Python ({name})", prefix=str(prefix))
    except OSError as exc:
        raise KernelSpecError(
            f"cannot write the {name!r} kernelspec in {kernel_dir} ({exc}); run labkit from a virtual "
            f"environment you own (`make setup`), or register this interpreter once with "
            f"`{sys.executable} -m ipykernel install --user --name {name}`"
        ) from exc
    if not _starts_this_interpreter(kernel_dir / "kernel.json"):
        raise KernelSpecError(f"the {name!r} kernelspec in {kernel_dir} does not start {sys.executable}")


def _kernel_manager_logging_to(log: IO[bytes]) -> type:
    """A kernel manager whose kernel writes its stderr to `log`: ipykernel logs a warning for every kernel
    on loopback TCP, and a KeyboardInterrupt when papermill shuts it down, which do not belong on the
    terminal of a batch run, but do belong in the run directory."""
    from jupyter_client.manager import AsyncKernelManager

    class _LoggedKernelManager(AsyncKernelManager):  # type: ignore[misc]
        async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
            kw.setdefault("stderr", log)
            await super().start_kernel(**kw)

    return _LoggedKernelManager


def _starts_this_interpreter(kernel_json: Path) -> bool:
    try:
        spec = json.loads(kernel_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    argv = spec.get("argv") if isinstance(spec, dict) else None
    return (
        isinstance(argv, list)
        and argv[:1] == [sys.executable]
        and "ipykernel_launcher" in argv
        and "{connection_file}" in argv
    )


# ---- HTML -------------------------------------------------------------------------------------------

# JupyterLab's template loads require.js and MathJax from a CDN (and mermaid and the widget manager when
# needed); a report must open offline, so those blocks are emptied. Math in markdown shows as TeX source.
_OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""


class _NbconvertLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """nbconvert's log under labkit's logger, with its notice about images without alternative text (every
    matplotlib figure has none; nbconvert adds a generic one) at debug level instead of warning."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(msg, str) and msg.startswith("Alternative text is missing"):
            level = logging.DEBUG
        super().log(level, msg, *args, **kwargs)


def export_html(notebook: Path, html: Path, *, title: str | None = None) -> Path:
    """Render an executed notebook as one self-contained HTML file: code hidden, outputs only, images
    inline (outputs are base64 already; markdown images are embedded), no script or style from the web."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({"labkit_offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="labkit_offline.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
        log=_NbconvertLog(logger, {}),
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(notebook.parent)}})
    write_atomically(html, body)
    return html


# ---- runs -------------------------------------------------------------------------------------------


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


def _first_line(source: str, width: int = 80) -> str:
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def _default_value(param: NotebookParameter) -> Any:
    """A parameter's default as the notebook would see it, or None when it is not a plain literal."""
    try:
        return param.convert(ast.literal_eval(param.default))
    except (ValueError, SyntaxError, ConfigError):
        return None


def _check_ranges(
    scenario: Scenario, declared: Mapping[str, NotebookParameter], values: Mapping[str, Any], *, quick: bool
) -> None:
    """ParameterError when a value is out of the scenario's range (a catalog entry with a
    `check_parameters(values)` method, as labkit.scenarios.Scenario has), judged together with the
    notebook's defaults of the parameters not given (`kill_at_s` must stay below `duration_s`)."""
    check = getattr(scenario, "check_parameters", None)
    if check is None:
        return
    defaults = {name: _default_value(p) for name, p in declared.items() if name not in RESERVED_PARAMETERS}
    try:
        check({**{k: v for k, v in defaults.items() if v is not None}, **values})
    except ConfigError as exc:
        given = " (with --quick)" if quick else ""
        raise ParameterError(f"{exc}{given}") from exc


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
            lines.append(f"{definition:<46} {p.help}".rstrip())
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
        _check_ranges(scenario, declared, values, quick=quick)
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
        run_dir = RunDirectory.create(self.out, plan.scenario)
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
        run_dir.write_run_record(record)
        self.say(f"running {plan.notebook.name} into {run_dir.path}")
        result = self._run_scenario_notebook(plan, run_dir, {**plan.parameters, **injected})
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
            rows = _cell_rows(output, interrupted=True)
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
            rows = _cell_rows(output)
            result.status = "failed"
            result.error = _describe_failure(exc, output)
            result.message = _failure_message(plan, result.error, run_dir.path)
        else:
            rows = _cell_rows(output)
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
        import papermill

        with open(kernel_log, "ab") as log:
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters=dict(parameters),
                kernel_name=self.kernel_name,
                language="python",
                progress_bar=self.progress,
                log_output=False,
                cwd=str(self.cwd),
                kernel_manager_class=_kernel_manager_logging_to(log),
            )

    def _summarize_into(self, result: RunResult) -> None:
        """The run's verdict and headline SLIs, when the report library can read them."""
        summarize = self._summarize or _default_summarizer()
        if summarize is None:
            return
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
        write_index = self._write_index or _default_index_writer()
        if write_index is None:
            return None
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
            error = _describe_failure(exc, output)
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


# ---- failures and cells ---------------------------------------------------------------------------


def _source_numbers(cells: Sequence[Any]) -> list[int | None]:
    """For each cell of an executed notebook (papermill's error markers removed): its 1-based number in
    the notebook as written, or None for the cell papermill injected."""
    numbers: list[int | None] = []
    n = 0
    for cell in cells:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            numbers.append(None)
        else:
            n += 1
            numbers.append(n)
    return numbers


def _executed_cells(output: Path) -> list[Any]:
    import nbformat

    try:
        nb = nbformat.read(str(output), as_version=4)
    except (OSError, ValueError):
        return []
    return [c for c in nb.cells if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]


def _describe_failure(exc: Exception, output: Path) -> dict[str, Any]:
    """run.json's `error`: which cell (numbered as in the notebook as written), its first line, the error."""
    from papermill.exceptions import PapermillExecutionError

    if not isinstance(exc, PapermillExecutionError):
        return {"cell": None, "ename": type(exc).__name__, "evalue": str(exc)}
    numbers = _source_numbers(_executed_cells(output))
    index = int(exc.cell_index)
    return {
        "cell": numbers[index] if index < len(numbers) else index + 1,
        "execution_count": exc.exec_count,
        "source": _first_line(str(exc.source)),
        "ename": str(exc.ename),
        "evalue": str(exc.evalue),
    }


def _failure_message(plan: RunPlan, error: Mapping[str, Any], run_dir: Path) -> str:
    if error.get("cell") is None:
        what = f"could not run {plan.notebook.name}: {error['ename']}: {error['evalue']}"
    else:
        what = (
            f"failed in cell {error['cell']} of {plan.notebook.name} ({error.get('source', '')}): "
            f"{error['ename']}: {error['evalue']}"
        )
    return f"scenario {plan.scenario} {what}; the traceback is in {run_dir / 'notebook.ipynb'}"


def _cell_rows(output: Path, *, interrupted: bool = False) -> list[dict[str, Any]]:
    """One row per code cell of an executed notebook: number as written, first line, status, duration.

    When a run stops early papermill marks the cells that never started "completed"; here a cell without
    a start time is "pending", and after Ctrl-C the last cell that started is "interrupted"."""
    cells = _executed_cells(output)
    rows: list[dict[str, Any]] = []
    for number, cell in zip(_source_numbers(cells), cells, strict=True):
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata", {}).get("papermill", {})
        started = meta.get("start_time")
        rows.append(
            {
                "cell": number,
                "execution_count": cell.get("execution_count"),
                "source": _first_line(cell.source),
                "tags": list(cell.get("metadata", {}).get("tags", [])),
                "status": meta.get("status", "pending") if started else "pending",
                "start_time": started,
                "duration_s": meta.get("duration"),
            }
        )
    if interrupted:
        ran = [row for row in rows if row["start_time"]]
        if ran and ran[-1]["status"] != "failed":
            ran[-1]["status"] = "interrupted"
    return rows


# ---- labkit.report, when present -------------------------------------------------------------------


def _report_module() -> ModuleType | None:
    try:
        return importlib.import_module("labkit.report")
    except ModuleNotFoundError as exc:
        if exc.name != "labkit.report":
            raise
        logger.warning("labkit.report is not installed: no headline and no reports/index.html")
        return None


def _default_summarizer() -> Summarizer | None:
    module = _report_module()
    if module is None:
        return None

    def summarize(run_dir: Path) -> Mapping[str, Any] | None:
        value = module.headline(module.RunData.load(run_dir))
        return _as_mapping(value)

    return summarize


def _default_index_writer() -> IndexWriter | None:
    module = _report_module()
    return None if module is None else module.write_index


def _as_mapping(value: object) -> Mapping[str, Any] | None:
    """A headline as a dict, whether it is one, a pydantic model or a dataclass."""
    import dataclasses

    if value is None or isinstance(value, Mapping):
        return value
    if hasattr(value, "model_dump"):
        return dict(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"labkit.report.headline returned a {type(value).__name__}, not a mapping")
