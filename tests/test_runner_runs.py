"""`labkit run` end to end on tiny notebooks (real kernels, no lab): the run directory of a completed and
of a failed run, `--all` going on after a failure, the report, the index, and Ctrl-C.

Kernel starts cost a second or two each, so one `--all` run is shared by most tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import nbformat
import psutil
import pytest
from click.testing import CliRunner, Result

import labkit.cli
import labkit.runner
from labkit.cli import cli
from labkit.runner.runs import ReportRenderError, ScenarioRunner
from tests.conftest import interruptible
from tests.test_runner import CATALOG, NOTEBOOKS

REPORT_CALLS: list[tuple[str, Path]] = []


def _fake_report_module() -> ModuleType:
    """Stands in for labkit.report (written alongside; the runner only needs these three names)."""
    module = ModuleType("labkit.report")

    @dataclass
    class RunData:
        path: Path

        @classmethod
        def load(cls, run_dir: Path) -> RunData:
            REPORT_CALLS.append(("load", Path(run_dir)))
            return cls(Path(run_dir))

    def headline(run: RunData) -> dict[str, Any]:
        return {"verdict": "met", "availability": 1.0, "requests": 3, "e2e_p95_s": 0.5, "ttft_p95_s": 0.1}

    def write_index(reports_dir: Path) -> Path:
        REPORT_CALLS.append(("index", Path(reports_dir)))
        index = Path(reports_dir) / "index.html"
        index.write_text("<html>index</html>")
        return index

    module.RunData = RunData  # type: ignore[attr-defined]
    module.headline = headline  # type: ignore[attr-defined]
    module.write_index = write_index  # type: ignore[attr-defined]
    return module


@dataclass(frozen=True)
class AllRun:
    result: Result
    reports: Path
    lab_dir: Path

    def run_dir(self, scenario: str) -> Path:
        (path,) = (self.reports / "runs").glob(f"*-{scenario}")
        return path

    def run_json(self, scenario: str) -> dict[str, Any]:
        return json.loads((self.run_dir(scenario) / "run.json").read_text())


LAB_CALLS: list[tuple[str | None, str | None]] = []


@contextlib.contextmanager
def _no_lab(ctx: click.Context, engine: str | None, backend: str | None = None) -> Iterator[None]:
    """Stands in for `labkit run`'s lab start: these notebooks need no lab; the call is recorded."""
    lab_dir = ctx.obj.get("lab_dir")
    LAB_CALLS.append((None if lab_dir is None else str(lab_dir), engine))
    yield


@pytest.fixture(scope="module")
def all_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AllRun]:
    """`labkit --lab-dir X run --all --engine sim -p duration_s 2` over [broken, typed], once."""
    tmp = tmp_path_factory.mktemp("runner")
    reports = tmp / "reports"
    REPORT_CALLS.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            labkit.runner.runs,
            "load_catalog",
            lambda: {"broken": CATALOG["broken"], "typed": CATALOG["typed"]},
        )
        mp.setitem(sys.modules, "labkit.report", _fake_report_module())
        mp.setenv("LABKIT_NOTEBOOKS_DIR", str(NOTEBOOKS))
        mp.setattr(labkit.cli.runs, "_lab_for_runs", _no_lab)
        LAB_CALLS.clear()
        result = CliRunner().invoke(
            cli,
            [
                "--lab-dir",
                str(tmp / "lab"),
                "run",
                "--all",
                "--engine",
                "sim",
                "-p",
                "duration_s",
                "2",
                "--out",
                str(reports / "runs"),
                "--no-progress",
            ],
        )
    assert [(str(tmp / "lab"), "sim")] == LAB_CALLS  # one lab for the whole batch
    yield AllRun(result, reports, tmp / "lab")


def test_all_goes_on_after_a_failure_and_exits_1_with_a_summary(all_run: AllRun) -> None:
    result = all_run.result
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    summary = lines[lines.index(next(ln for ln in lines if ln.startswith("SCENARIO"))) :]
    assert summary[1].split()[:3] == ["broken", "failed", "met"]
    assert summary[2].split()[:3] == ["typed", "completed", "met"]
    assert summary[2].endswith("report.html")
    assert f"index: {all_run.reports / 'index.html'}" in result.stdout
    assert "error: 1 of 2 scenarios did not complete" in result.stderr


def test_a_failing_cell_is_named_with_its_number_first_line_and_error(all_run: AllRun) -> None:
    assert (
        "scenario broken failed in cell 3 of fails_in_cell_3.ipynb "
        '(raise ValueError("the lab answered 503")): ValueError: the lab answered 503'
        in all_run.result.stderr
    )
    record = all_run.run_json("broken")
    assert record["status"] == "failed"
    assert record["finished_at"] is not None
    assert record["error"] == {
        "cell": 3,
        "execution_count": 4,  # papermill's injected parameters cell ran as In [2]
        "source": 'raise ValueError("the lab answered 503")',
        "ename": "ValueError",
        "evalue": "the lab answered 503",
    }


def test_a_failed_run_directory_stays_readable(all_run: AllRun) -> None:
    run_dir = all_run.run_dir("broken")
    assert (run_dir / "partial.txt").read_text() == "cell 2 ran"
    assert not (run_dir / "never.txt").exists()
    nb = nbformat.read(run_dir / "notebook.ipynb", as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert [(e.ename, e.evalue) for e in errors] == [("ValueError", "the lab answered 503")]
    cells = json.loads((run_dir / "cells.json").read_text())["cells"]
    assert [(c["cell"], c["status"]) for c in cells] == [
        (1, "completed"),
        (None, "completed"),  # the injected parameters
        (2, "completed"),
        (3, "failed"),
        (4, "pending"),
    ]
    # The report of what exists is still rendered.
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()


def test_a_completed_run_writes_notebook_cells_run_json_and_report(all_run: AllRun) -> None:
    run_dir = all_run.run_dir("typed")
    record = all_run.run_json("typed")
    assert record["status"] == "completed"
    assert record["scenario"] == "typed"
    assert record["notebook"] == "typed_params.ipynb"
    assert record["run_id"] == run_dir.name
    assert record["error"] is None
    assert record["verdict"] == "met"
    assert record["headline"] == {"availability": 1.0, "requests": 3, "e2e_p95_s": 0.5, "ttft_p95_s": 0.1}
    assert record["parameters"] == {
        "duration_s": 2.0,
        "engine": "sim",
        "lab_dir": str(all_run.lab_dir.resolve()),
    }
    assert record["started_at"] <= record["finished_at"]

    nbformat.read(run_dir / "notebook.ipynb", as_version=4)  # a valid notebook
    cells = json.loads((run_dir / "cells.json").read_text())["cells"]
    assert [c["status"] for c in cells] == ["completed"] * 3
    assert all(isinstance(c["duration_s"], float) for c in cells)
    assert cells[0]["source"].startswith("duration_s: float = 60")

    html = (run_dir / "report.html").read_text()
    assert re.search(r'<img [^>]*src="data:image/png;base64,', html)
    assert '<script src="http' not in html
    assert "display(fig)" not in html  # code is hidden
    assert "files: cells.json" in html  # the report notebook saw the run directory


def test_the_notebook_receives_typed_values_and_the_runner_options(all_run: AllRun) -> None:
    run_dir = all_run.run_dir("typed")
    received = json.loads((run_dir / "received.json").read_text())
    assert received["types"] == ["float", "int", "bool"]
    assert received["duration_s"] == 2.0
    assert received["run_dir"] == str(run_dir)
    assert received["out_dir"] == str(all_run.reports / "runs")
    assert received["lab_dir"] == str(all_run.lab_dir.resolve())
    assert received["engine"] == "sim"


def test_the_index_is_updated_after_every_run_and_headlines_read_each(all_run: AllRun) -> None:
    assert REPORT_CALLS.count(("index", all_run.reports)) == 2
    loaded = [p for kind, p in REPORT_CALLS if kind == "load"]
    assert loaded == [all_run.run_dir("broken"), all_run.run_dir("typed")]


def test_a_single_run_applies_quick_parameters_and_its_report_can_be_rendered_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(labkit.runner.runs, "load_catalog", lambda: CATALOG)
    monkeypatch.setitem(sys.modules, "labkit.report", _fake_report_module())
    monkeypatch.setenv("LABKIT_NOTEBOOKS_DIR", str(NOTEBOOKS))
    monkeypatch.setattr(labkit.cli.runs, "_lab_for_runs", _no_lab)
    out = tmp_path / "reports" / "runs"
    result = CliRunner().invoke(
        cli, ["run", "typed", "--quick", "-p", "requests", "5", "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    received = json.loads((run_dir / "received.json").read_text())
    assert (received["duration_s"], received["requests"], received["engine"]) == (2.0, 5, "llama")
    assert json.loads((run_dir / "run.json").read_text())["quick"] is True
    assert result.stdout.splitlines() == [
        "verdict: met",
        f"report: {run_dir / 'report.html'}",
        f"index:  {tmp_path / 'reports' / 'index.html'}",
    ]

    (run_dir / "report.html").unlink()
    again = CliRunner().invoke(cli, ["report", str(run_dir), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[0] == f"report: {run_dir / 'report.html'}"
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()


def test_a_failing_report_notebook_still_renders_what_it_drew(tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.read(NOTEBOOKS / "05_slo_report.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell('raise RuntimeError("no requests.jsonl")'))
    nbformat.write(nb, notebooks / "05_slo_report.ipynb")
    run_dir = tmp_path / "reports" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    indexed: list[Path] = []
    runner = ScenarioRunner(catalog={}, notebooks=notebooks, progress=False, write_index=indexed.append)
    with pytest.raises(
        ReportRenderError, match=r"failed in cell 4 .*RuntimeError: no requests.jsonl.*report.html"
    ):
        runner.render_report(run_dir)
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()
    assert indexed == []  # a failed report does not touch the index


_INTERRUPTED_RUN = """
import sys
from pathlib import Path
import contextlib
import labkit.cli.runs
import labkit.runner.runs
from labkit.cli import main
from tests.test_runner import FakeScenario
labkit.cli.runs._lab_for_runs = lambda ctx, engine, backend: contextlib.nullcontext()
labkit.runner.runs.load_catalog = lambda: {"slow": FakeScenario("slow", "slow.ipynb", "Slow")}
sys.argv = ["labkit", "run", "slow", "--out", sys.argv[1], "--no-progress"]
main()
"""


def test_ctrl_c_marks_the_run_interrupted_and_leaves_no_kernel(tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.read(NOTEBOOKS / "fails_in_cell_3.ipynb", as_version=4)
    nb.cells[2].source = textwrap.dedent(
        """\
        import os
        import time

        Path(run_dir, "kernel.pid").write_text(str(os.getpid()))
        time.sleep(120)"""
    )
    nbformat.write(nb, notebooks / "slow.ipynb")
    nbformat.write(
        nbformat.read(NOTEBOOKS / "05_slo_report.ipynb", as_version=4), notebooks / "05_slo_report.ipynb"
    )
    out = tmp_path / "runs"
    env = {**os.environ, "LABKIT_NOTEBOOKS_DIR": str(notebooks)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_RUN, str(out)],
        cwd=Path(__file__).parent.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("*/kernel.pid")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        (pid_file,) = out.glob("*/kernel.pid")
        kernel = psutil.Process(int(pid_file.read_text()))
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    assert "error: scenario slow was interrupted in cell 3 (import os)" in stderr
    record = json.loads((pid_file.parent / "run.json").read_text())
    assert record["status"] == "failed"
    assert record["error"] == {
        "cell": 3,
        "source": "import os",
        "ename": "KeyboardInterrupt",
        "evalue": "interrupted",
    }
    cells = json.loads((pid_file.parent / "cells.json").read_text())["cells"]
    assert [c["status"] for c in cells] == ["completed", "completed", "completed", "interrupted", "pending"]
    kernel_gone = not kernel.is_running() or kernel.status() == psutil.STATUS_ZOMBIE
    if not kernel_gone:
        kernel.kill()
    assert kernel_gone


def test_a_lab_that_cannot_start_is_reported_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wrapper's port is taken: `labkit run` says so and what to do; no run directory, no kernel."""
    monkeypatch.setattr(labkit.runner.runs, "load_catalog", lambda: CATALOG)
    monkeypatch.setenv("LABKIT_NOTEBOOKS_DIR", str(NOTEBOOKS))
    out = tmp_path / "reports" / "runs"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("LABKIT_WRAPPER_PORT", str(port))
        result = CliRunner().invoke(
            cli,
            ["--lab-dir", str(tmp_path / "lab"), "run", "typed", "--engine", "sim", "--out", str(out)],
        )
    assert result.exit_code == 1
    assert f"port {port} (for the wrapper service) is in use" in result.output, result.output
    assert "LABKIT_WRAPPER_PORT" in result.output
    assert not out.exists()
