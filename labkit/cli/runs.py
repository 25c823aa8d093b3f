"""`labkit run` and `labkit report`: scenario notebooks run with papermill into run directories, their SLO
reports rendered, reports/index.html brought up to date."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from labkit.cli._base import backend_option, cli, engine_option, out_option, run_action
from labkit.diskspace import check_free_space
from labkit.errors import ConfigError, LabkitError
from labkit.rundir import INDEX_FILE
from labkit.verdicts import AB_VERDICT_TEXT

if TYPE_CHECKING:
    from labkit.runner.runs import RunResult

__all__ = ["report_command", "run_command"]


def _print_result(result: RunResult) -> None:
    for problem in result.problems:
        click.echo(f"warning: {problem}", err=True)
    if result.verdict is not None:
        click.echo(f"verdict: {_verdicts(result)}")
    for line in _headline_lines(result.headline or {}):
        click.echo(line)
    if result.report_html is not None:
        click.echo(f"report: {result.report_html}")
    if result.index_html is not None:
        click.echo(f"index:  {result.index_html}")


def _verdicts(result: RunResult) -> str:
    """`steady state held; SLOs violated` (labkit.verdicts), or the one word a run.json holds."""
    headline = result.headline or {}
    words = [f"{what} {headline[key]}" for key, what in (("steady_state", "steady state"), ("slos", "SLOs"))
             if headline.get(key)]  # fmt: skip
    return "; ".join(words) or str(result.verdict)


def _headline_lines(headline: dict[str, Any]) -> list[str]:
    """What a capacity search or a remediation A/B found, from run.json's headline: one line each."""
    lines = []
    knee = headline.get("max_rate_meeting_slos")
    if isinstance(knee, int | float):
        low, high = headline.get("max_rate_meeting_slos_low"), headline.get("max_rate_meeting_slos_high")
        interval = (
            f" [{low:.3g} to {high:.3g}]"
            if isinstance(low, int | float) and isinstance(high, int | float)
            else ""
        )
        lines.append(
            f"capacity: {knee:.3g} requests/s meet every SLO{interval}; "
            f"limited by {headline.get('limiting_slo') or 'nothing found above it'}"
        )
    verdicts = headline.get("ab_verdicts")
    if isinstance(verdicts, dict):
        for kind, word in verdicts.items():
            diff = (headline.get("mttr_difference_s") or {}).get(kind)
            low = (headline.get("mttr_difference_low_s") or {}).get(kind)
            high = (headline.get("mttr_difference_high_s") or {}).get(kind)
            numbers = (
                f" (time to recover {diff:+.1f} s with remediation, interval {low:+.1f} to {high:+.1f} s)"
                if None not in (diff, low, high)
                else ""
            )
            lines.append(f"remediation A/B, {kind}: {AB_VERDICT_TEXT.get(str(word), word)}{numbers}")
    return lines


def _print_summary(results: list[RunResult]) -> None:
    click.echo(f"\n{'SCENARIO':<26}{'STATUS':<11}{'VERDICT':<10}{'REPORT'}")
    for r in results:
        status = r.status if r.ok or r.status == "failed" else "incomplete"
        report = r.report_html or r.run_dir
        click.echo(f"{r.scenario:<26}{status:<11}{r.verdict or '-':<10}{report}")
    index = next((r.index_html for r in reversed(results) if r.index_html is not None), None)
    if index is not None:
        click.echo(f"index: {index}")
    for r in results:
        if not r.ok:
            click.echo(f"{r.scenario}: {r.message or '; '.join(r.problems)}", err=True)


@cli.command("run")
@click.argument("scenario", required=False)
@click.option(
    "-p",
    "--parameter",
    "pairs",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Set a notebook parameter (repeatable); --help-params lists them.",
)
@click.option("--all", "run_all", is_flag=True, help="Run every scenario in order, going on after a failure.")
@click.option("--quick", is_flag=True, help="Each scenario's small CI parameters (a -p still wins).")
@engine_option("Model engine of a lab the notebook starts [default: the notebook's, llama].")
@backend_option("Where a lab the notebook starts runs: local processes (default) or Docker containers.")
@out_option
@click.option("--help-params", is_flag=True, help="List SCENARIO's parameters, then exit.")
@click.option("--list", "list_scenarios", is_flag=True, help="List the scenarios, then exit.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.pass_context
def run_command(
    ctx: click.Context,
    scenario: str | None,
    pairs: tuple[tuple[str, str], ...],
    run_all: bool,
    quick: bool,
    engine: str | None,
    backend: str | None,
    out: Path,
    help_params: bool,
    list_scenarios: bool,
    no_progress: bool,
) -> None:
    """Run SCENARIO's notebook with papermill into a new run directory under --out, render its report
    (report.html: code hidden, one self-contained file) and update the index next to --out.

    A notebook attaches to the running lab, or starts one and takes it down again. Parameters are checked
    before anything runs. Exit status 1 when a run fails; its partial run directory stays readable.

    \b
    labkit run --list                          the scenarios
    labkit run baseline --help-params          its parameters, types and defaults
    labkit run baseline -p duration_s 30 --engine sim
    labkit run --all --quick                   every scenario, small (CI)
    """

    def action() -> None:
        from labkit.runner.runs import RunFailedError, ScenarioRunner

        runner = ScenarioRunner(
            out=out,
            lab_dir=ctx.obj.get("lab_dir"),
            engine=engine,
            backend=backend,
            progress=not no_progress,
            say=lambda line: click.echo(line, err=True),
        )
        if list_scenarios:
            for s in runner.catalog.values():
                click.echo(f"{s.name:<26}{s.title}")
            return
        if run_all == (scenario is not None):
            raise ConfigError(
                "give one SCENARIO or --all; `labkit run --list` shows the scenarios: "
                + ", ".join(runner.catalog)
            )
        if help_params:
            if scenario is None:
                raise ConfigError("--help-params needs a SCENARIO")
            click.echo(runner.describe_parameters(scenario))
            return
        parameters = dict(pairs)  # a name given twice keeps its last value, as in papermill
        # Everything is checked before anything runs: the parameters, then the lab (started here if none
        # runs, once for all the scenarios, and stopped again at the end).
        plans = (
            [runner.plan(scenario, parameters, quick=quick)]
            if scenario is not None
            else runner.plan_all(parameters, quick=quick)
        )
        needs_lab = any("lab_dir" in plan.declared for plan in plans)
        check_free_space(runner.out, what="labkit run")  # before a lab starts for nothing
        with _lab_for_runs(ctx, engine, backend) if needs_lab else contextlib.nullcontext():
            if scenario is not None:
                try:
                    result = runner.run(scenario, parameters, quick=quick)
                except RunFailedError as exc:
                    _print_result(exc.result)
                    raise
                _print_result(result)
                return
            results = runner.run_all(parameters, quick=quick, on_result=_print_result)
        _print_summary(results)
        failed = [r.scenario for r in results if not r.ok]
        if failed:
            raise LabkitError(
                f"{len(failed)} of {len(results)} scenarios did not complete ({', '.join(failed)}); "
                "their run directories hold the notebooks with the tracebacks"
            )

    run_action(action)


@contextlib.contextmanager
def _lab_for_runs(ctx: click.Context, engine: str | None, backend: str | None) -> Iterator[None]:
    """The lab the notebooks use: the running one, or one started now (a clear error before any run when
    it cannot start) and taken down when the runs end, whatever happened."""
    from labkit.chaos import halt_all
    from labkit.scenarios import open_lab

    session = open_lab(
        ctx.obj.get("lab_dir"),
        engine=engine or "llama",
        backend=backend or "local",
        say=lambda line: click.echo(line, err=True),
    )
    if engine is not None and session.config.engine != engine:
        raise ConfigError(
            f"the lab running in {session.lab_dir} uses engine {session.config.engine}, not {engine}; "
            "leave out --engine to use it, or stop it first with `labkit down`"
        )
    if backend is not None and session.backend.name != backend:
        raise ConfigError(
            f"the lab running in {session.lab_dir} runs on the {session.backend.name} backend, not "
            f"{backend}; leave out --backend to use it, or stop it first with `labkit down`"
        )
    try:
        yield
    finally:
        # A notebook interrupted mid-fault may not have ended its faults (their TTLs would): end them now.
        halted = halt_all(session.lab_dir)
        if halted.lab_running and (halted.unpaused or halted.stress_stopped or halted.wrapper_faults_ended):
            click.echo(f"ended faults a run left behind: {halted.summary()}", err=True)
        if session.started_here:
            click.echo("stopping the lab this run started", err=True)
        session.close()


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def report_command(run_dir: Path, no_progress: bool) -> None:
    """Render RUN_DIR's report again (report.ipynb, report.html) and update the index next to its folder."""

    def action() -> None:
        from labkit.runner.runs import ScenarioRunner

        runner = ScenarioRunner(out=run_dir.resolve().parent, progress=not no_progress)
        click.echo(f"report: {runner.render_report(run_dir)}")
        index = runner.reports_dir / INDEX_FILE
        if index.exists():
            click.echo(f"index:  {index}")

    run_action(action)
