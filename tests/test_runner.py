"""labkit.runner without a kernel: parameters read from the notebook and checked before anything runs,
the `labkit` kernelspec created and repaired, and the offline HTML export."""

from __future__ import annotations

import base64
import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import labkit.runner
from labkit.cli import cli
from labkit.errors import ConfigError
from labkit.params import ParameterError
from labkit.runner.html import export_html
from labkit.runner.kernel import KernelSpecError, ensure_kernelspec
from labkit.runner.notebooks import NotebookError, NotebookParameter, convert_parameter, notebook_parameters
from labkit.runner.runs import ScenarioRunner

NOTEBOOKS = Path(__file__).parent / "data" / "notebooks"

# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@dataclass(frozen=True)
class FakeScenario:
    """A catalog entry shaped like labkit.scenarios.Scenario (labkit.runner.Scenario), pointing at a test
    notebook, with no spec: any value of a parameter's type is in range."""

    name: str
    notebook: str
    title: str
    quick: dict[str, Any] = field(default_factory=dict)

    def check_parameters(self, values: Mapping[str, Any]) -> None:
        pass

    def bound(self, name: str) -> str | None:
        return None


CATALOG = {
    "typed": FakeScenario(
        "typed", "typed_params.ipynb", "Typed parameters", {"requests": 1, "duration_s": 2}
    ),
    "broken": FakeScenario("broken", "fails_in_cell_3.ipynb", "Fails in cell 3"),
}


def _runner(tmp_path: Path, **options: Any) -> ScenarioRunner:
    return ScenarioRunner(catalog=CATALOG, notebooks=NOTEBOOKS, out=tmp_path / "reports" / "runs", **options)


def _notebook(tmp_path: Path, parameters_source: str, name: str = "nb.ipynb") -> Path:
    cell = new_code_cell(parameters_source)
    cell.metadata["tags"] = ["parameters"]
    nb = new_notebook(
        cells=[cell],
        metadata={"kernelspec": {"name": "labkit", "display_name": "labkit", "language": "python"}},
    )
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


# ---- converting values -----------------------------------------------------------------------------


def _param(type_name: str) -> NotebookParameter:
    return NotebookParameter("x", type_name, "0", "")


@pytest.mark.parametrize(
    ("type_name", "text", "expected"),
    [
        ("float", "1", 1.0),
        ("float", "2.5", 2.5),
        ("int", "3", 3),
        ("str", " spaced ", " spaced "),
        ("bool", "true", True),
        ("bool", "YES", True),
        ("bool", "1", True),
        ("bool", "false", False),
        ("bool", "no", False),
        ("bool", "0", False),
        ("list", "[1, 2]", [1, 2]),
        ("None", "plain words", "plain words"),
    ],
)
def test_values_convert_to_the_declared_type(type_name: str, text: str, expected: object) -> None:
    value = convert_parameter(_param(type_name), text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("type_name", "value"), [("float", "abc"), ("int", "3.5"), ("bool", "maybe"), ("int", True), ("str", 3)]
)
def test_a_value_of_the_wrong_type_is_refused_naming_parameter_and_type(
    type_name: str, value: object
) -> None:
    with pytest.raises(ParameterError, match=rf"parameter x expects {type_name} .*got {value!r}"):
        convert_parameter(_param(type_name), value)


def test_typed_values_pass_and_an_int_becomes_a_float() -> None:
    assert convert_parameter(_param("float"), 2) == 2.0
    assert type(convert_parameter(_param("float"), 2)) is float
    assert convert_parameter(_param("bool"), False) is False


# ---- reading the parameters cell ---------------------------------------------------------------------


def test_parameters_are_read_from_the_tagged_cell_with_types_defaults_and_help() -> None:
    params = notebook_parameters(NOTEBOOKS / "typed_params.ipynb")
    assert list(params) == [
        "duration_s",
        "requests",
        "stream",
        "label",
        "run_dir",
        "out_dir",
        "lab_dir",
        "engine",
    ]
    assert params["duration_s"] == NotebookParameter(
        "duration_s", "float", "60", "how long the method sends load, in seconds"
    )
    assert (params["requests"].type_name, params["stream"].type_name) == ("int", "bool")
    assert params["label"].default == '"default"'


def test_a_parameter_without_annotation_takes_the_type_of_its_default(tmp_path: Path) -> None:
    params = notebook_parameters(_notebook(tmp_path, "rate = 2.5  # per second\nname = 'x'\nn = 3\n"))
    assert {n: p.type_name for n, p in params.items()} == {"rate": "float", "name": "str", "n": "int"}


def test_a_line_papermill_cannot_read_is_an_error_not_a_missing_parameter(tmp_path: Path) -> None:
    # papermill skips a line with a second '=' (it only logs a warning); the runner would then refuse -p.
    nb = _notebook(tmp_path, 'lab_dir: str = ""  # "" = the default lab\nrate: float = 1.0\n')
    with pytest.raises(NotebookError, match=r"'lab_dir'.*line 1.*no '=' in the help"):
        notebook_parameters(nb)


def test_a_notebook_without_a_parameters_cell_is_refused(tmp_path: Path) -> None:
    nb = new_notebook(
        cells=[new_code_cell("x = 1")],
        metadata={"kernelspec": {"name": "labkit", "display_name": "labkit", "language": "python"}},
    )
    nbformat.write(nb, tmp_path / "plain.ipynb")
    with pytest.raises(NotebookError, match="no cell tagged `parameters`"):
        notebook_parameters(tmp_path / "plain.ipynb")


# ---- planning a run: everything is checked first -------------------------------------------------------


def test_quick_parameters_apply_and_user_values_win(tmp_path: Path) -> None:
    plan = _runner(tmp_path).plan("typed", {"duration_s": "7", "stream": "yes"}, quick=True)
    assert plan.parameters == {"requests": 1, "duration_s": 7.0, "stream": True}
    assert _runner(tmp_path).plan("typed").parameters == {}


def test_an_unknown_parameter_is_refused_listing_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ParameterError) as err:
        _runner(tmp_path).plan("typed", {"duraton_s": "5"})
    message = str(err.value)
    assert "no parameter 'duraton_s'" in message
    assert "duration_s, requests, stream, label" in message
    assert "run_dir" not in message  # reserved names are not offered
    assert "labkit run typed --help-params" in message


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("run_dir", "new run directory"),
        ("out_dir", "--out"),
        ("lab_dir", "--lab-dir"),
        ("engine", "--engine"),
    ],
)
def test_reserved_parameters_are_refused_naming_the_option_to_use(
    tmp_path: Path, name: str, hint: str
) -> None:
    with pytest.raises(ParameterError, match=rf"parameter {name} is set by labkit run; .*{hint}"):
        _runner(tmp_path).plan("typed", {name: "x"})


def test_an_unknown_scenario_lists_the_scenarios(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown scenario 'nope'; the scenarios are: typed, broken"):
        _runner(tmp_path).plan("nope")


def test_engine_for_a_notebook_without_an_engine_parameter_is_refused(tmp_path: Path) -> None:
    _notebook(tmp_path, "duration_s: float = 1  # seconds\n", name="no_engine.ipynb")
    runner = ScenarioRunner(
        catalog={"x": FakeScenario("x", "no_engine.ipynb", "X")}, notebooks=tmp_path, engine="sim"
    )
    with pytest.raises(ParameterError, match="does not take an engine; leave out --engine"):
        runner.plan("x")


def test_run_all_sends_each_parameter_to_the_scenarios_that_declare_it(tmp_path: Path) -> None:
    plans = _runner(tmp_path).plan_all({"requests": "4", "duration_s": "3"})
    assert [(p.scenario, dict(p.parameters)) for p in plans] == [
        ("typed", {"requests": 4, "duration_s": 3.0}),
        ("broken", {"duration_s": 3.0}),
    ]
    with pytest.raises(ParameterError, match="no scenario has a parameter 'nope'"):
        _runner(tmp_path).plan_all({"nope": "1"})


def test_run_all_sends_engine_to_the_scenarios_that_take_one(tmp_path: Path) -> None:
    _notebook(tmp_path, "duration_s: float = 1  # seconds\n", name="no_engine.ipynb")
    (tmp_path / "typed_params.ipynb").write_bytes((NOTEBOOKS / "typed_params.ipynb").read_bytes())
    catalog = {"x": FakeScenario("x", "no_engine.ipynb", "X"), "typed": CATALOG["typed"]}
    runner = ScenarioRunner(catalog=catalog, notebooks=tmp_path, engine="sim")
    assert [(p.scenario, "engine" in p.declared) for p in runner.plan_all()] == [
        ("x", False),
        ("typed", True),
    ]


def test_help_params_lists_types_defaults_help_reserved_and_quick(tmp_path: Path) -> None:
    text = _runner(tmp_path).describe_parameters("typed")
    assert "duration_s: float (default 60)" in text
    assert "how long the method sends load, in seconds" in text
    assert "stream: bool (default False)" in text
    assert "Set by labkit run (not with -p):" in text
    assert "engine     use --engine" in text
    assert "--quick sets: requests=1, duration_s=2" in text


@pytest.fixture
def cli_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    """`labkit run` on the test notebooks (the real catalog needs a lab)."""
    monkeypatch.setattr(labkit.runner.runs, "load_catalog", lambda: CATALOG)
    monkeypatch.setenv("LABKIT_NOTEBOOKS_DIR", str(NOTEBOOKS))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "unknown scenario 'nope'"),
        (["typed", "-p", "bogus", "1"], "no parameter 'bogus'"),
        (["typed", "-p", "duration_s", "abc"], "parameter duration_s expects float (a number), got 'abc'"),
        (["typed", "-p", "run_dir", "/tmp/x"], "parameter run_dir is set by labkit run"),
        (["--all", "-p", "bogus", "1"], "no scenario has a parameter 'bogus'"),
        (["typed", "--backend", "docker"], "scenario typed does not take a backend; leave out --backend"),
        ([], "give one SCENARIO or --all"),
    ],
)
def test_the_cli_refuses_before_any_run_directory_exists(
    cli_catalog: None, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "reports" / "runs"
    result = CliRunner().invoke(cli, ["run", *args, "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert not out.exists()


def test_the_cli_lists_scenarios_and_parameters(cli_catalog: None) -> None:
    listed = CliRunner().invoke(cli, ["run", "--list"])
    assert listed.exit_code == 0
    assert "typed" in listed.stdout and "Fails in cell 3" in listed.stdout
    params = CliRunner().invoke(cli, ["run", "typed", "--help-params"])
    assert params.exit_code == 0
    assert "requests: int (default 3)" in params.stdout


@pytest.mark.parametrize("module", ["cells", "html", "kernel", "notebooks", "runs"])
def test_each_module_s_surface_is_sorted_and_exists(module: str) -> None:
    names = importlib.import_module(f"labkit.runner.{module}").__all__
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n))
    assert all(hasattr(importlib.import_module(f"labkit.runner.{module}"), name) for name in names)


# ---- the kernelspec ----------------------------------------------------------------------------------


def _kernel_json(prefix: Path) -> Path:
    return prefix / "share" / "jupyter" / "kernels" / "labkit" / "kernel.json"


def test_a_missing_kernelspec_is_created_for_this_interpreter(tmp_path: Path) -> None:
    kernel_dir = ensure_kernelspec(prefix=tmp_path)
    assert kernel_dir == _kernel_json(tmp_path).parent
    spec = json.loads(_kernel_json(tmp_path).read_text())
    assert spec["argv"][0] == sys.executable
    assert "ipykernel_launcher" in spec["argv"]


def test_a_kernelspec_for_another_interpreter_is_repaired(tmp_path: Path) -> None:
    stale = _kernel_json(tmp_path)
    stale.parent.mkdir(parents=True)
    stale.write_text(
        json.dumps(
            {
                "argv": ["/usr/bin/python3.9", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "old",
                "language": "python",
            }
        )
    )
    ensure_kernelspec(prefix=tmp_path)
    assert json.loads(stale.read_text())["argv"][0] == sys.executable


def test_a_correct_kernelspec_is_left_alone(tmp_path: Path) -> None:
    ensure_kernelspec(prefix=tmp_path)
    spec = _kernel_json(tmp_path)
    spec.write_text(spec.read_text().replace('"display_name"', '"display_name_kept"'))
    ensure_kernelspec(prefix=tmp_path)
    assert "display_name_kept" in spec.read_text()


def test_a_kernelspec_of_the_same_name_earlier_on_the_jupyter_path_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shadow = tmp_path / "kernels" / "labkit" / "kernel.json"
    shadow.parent.mkdir(parents=True)
    shadow.write_text(json.dumps({"argv": ["/elsewhere/python"], "display_name": "x", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    with pytest.raises(KernelSpecError, match=r"jupyter kernelspec remove labkit.*JUPYTER_PATH"):
        ensure_kernelspec()


def test_a_kernelspec_found_first_that_starts_this_interpreter_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_kernelspec(prefix=tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    assert ensure_kernelspec() == _kernel_json(tmp_path).parent


# ---- HTML ------------------------------------------------------------------------------------------


def test_the_html_report_is_one_offline_file_without_code(tmp_path: Path) -> None:
    (tmp_path / "diagram.png").write_bytes(PNG)
    figure = new_output(
        "display_data", data={"image/png": base64.b64encode(PNG).decode(), "text/plain": "<Figure>"}
    )
    nb = new_notebook(
        cells=[
            new_markdown_cell("# A report\n![the architecture](diagram.png)"),
            new_code_cell("secret_code_line = 1", outputs=[figure]),
        ],
        metadata={"kernelspec": {"name": "labkit", "display_name": "labkit", "language": "python"}},
    )
    nbformat.write(nb, tmp_path / "report.ipynb")
    html = export_html(tmp_path / "report.ipynb", tmp_path / "report.html", title="labkit report: r1")
    text = html.read_text()
    assert text.count('src="data:image/png;base64,') == 2  # the figure and the markdown image
    assert 'src="diagram.png"' not in text
    assert "secret_code_line" not in text
    assert "<title>labkit report: r1</title>" in text
    for remote in ('<script src="http', "src='http", 'href="http', "url(http", 'import("http'):
        assert remote not in text, remote


def test_the_index_is_only_written_for_a_reports_runs_folder(tmp_path: Path) -> None:
    """The index lists <reports>/runs/*: a run kept elsewhere (--out /tmp/x) does not rewrite an index."""
    written: list[Path] = []
    elsewhere = ScenarioRunner(catalog={}, out=tmp_path / "x", write_index=written.append)
    assert elsewhere.update_index() is None and written == []
    runs = ScenarioRunner(catalog={}, out=tmp_path / "reports" / "runs", write_index=written.append)
    assert runs.update_index() == tmp_path / "reports" / "index.html"
    assert written == [tmp_path / "reports"]
