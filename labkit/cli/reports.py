"""`labkit compare`, `labkit export`, `labkit serve` and `labkit scorecard`: runs side by side, a run's data
for other tools, the reports folder over HTTP on a headless box, and recovery per fault kind over the latest
runs."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import click

from labkit.cli._base import cli, run_action
from labkit.errors import ConfigError
from labkit.rundir import RUNS_FOLDER

__all__ = ["compare_command", "export_command", "scorecard_command", "serve_command"]

_RUN_DIR = click.Path(file_okay=False, exists=True, path_type=Path)
_SINCE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]


def _reports_dir_of(run_dir: Path) -> Path:
    """reports/ for a run under reports/runs/, else the folder that holds the run."""
    parent = run_dir.resolve().parent
    return parent.parent if parent.name == RUNS_FOLDER else parent


@cli.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=_RUN_DIR)
@click.option(
    "--fail-on",
    "fail_on",
    multiple=True,
    metavar="METRIC=THRESHOLD",
    help="Exit 1 only when METRIC regressed by more than THRESHOLD, in its unit (e2e_p95_ms=50, "
    "availability_pct=0.5); repeatable. A metric without one fails on any flagged regression.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for compare-<time>.html and .json (default: reports/comparisons).")  # fmt: skip
@click.option("--resamples", type=click.IntRange(100, 100_000), default=2000, show_default=True,
              help="Bootstrap resamples per metric.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the bootstrap.")
def compare_command(run_dirs: tuple[Path, ...], fail_on: tuple[str, ...], out_dir: Path | None,
                    resamples: int, seed: int) -> None:  # fmt: skip
    """Compare runs with the first (the baseline): client SLIs with bootstrap intervals, recovery per fault,
    latency distributions. Prints the page it wrote; exits 1 when a flagged regression exceeds --fail-on."""

    def action() -> None:
        from labkit.report import compare_runs, parse_fail_on, write_comparison

        try:
            comparison = compare_runs(
                run_dirs, fail_on=parse_fail_on(fail_on), resamples=resamples, seed=seed
            )
        except ConfigError as exc:  # exit 2, like any usage error: 1 means a regression
            raise click.UsageError(str(exc)) from exc
        for run_id, diffs in comparison.diffs.items():
            for d in diffs:
                if d.finding in ("regression", "improvement"):
                    unit = "points" if d.unit == "%" else d.unit
                    click.echo(f"{run_id}: {d.label} {d.finding} ({d.difference:+.2f} {unit})")
        page = write_comparison(comparison, out_dir or _reports_dir_of(run_dirs[0]) / "comparisons")
        click.echo(f"{len(comparison.regressions)} regression(s) flagged")
        click.echo(f"comparison: {page}")
        if comparison.failed:
            raise SystemExit(1)

    run_action(action)


@cli.command("export")
@click.argument("run_dir", type=_RUN_DIR)
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the tables (default: RUN_DIR/export/FORMAT).")  # fmt: skip
def export_command(run_dir: Path, fmt: str, out_dir: Path | None) -> None:
    """Write RUN_DIR's requests, journal, SLO results, recovery and Prometheus series as Parquet or CSV."""

    def action() -> None:
        from labkit.report import export_run

        for path in export_run(run_dir, fmt, out_dir):
            click.echo(str(path))

    run_action(action)


@cli.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--dir", "reports_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("reports"), show_default=True, help="The reports folder to serve.")  # fmt: skip
def serve_command(port: int, reports_dir: Path) -> None:
    """Serve the reports folder on 127.0.0.1 (the index at /) until Ctrl-C."""

    def action() -> None:
        from labkit.report import serve_reports

        server = serve_reports(reports_dir, port=port)
        click.echo(f"serving {reports_dir} at {server.url} (Ctrl-C to stop)")
        server.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            server.shutdown()
            server.server_close()

    run_action(action)


@cli.command("scorecard")
@click.option("--reports", "--dir", "reports_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("reports"), show_default=True, help="The reports folder (its runs/).")  # fmt: skip
@click.option("--last", type=click.IntRange(1, 10_000), default=None,
              help="The newest N runs with faults measured; an A/B run is one (default 20).")  # fmt: skip
@click.option("--scenario", default=None, metavar="NAME", help="Only runs of this scenario.")
@click.option("--since", type=click.DateTime(_SINCE_FORMATS), default=None, metavar="DATE",
              help="Only runs started at or after this UTC time: YYYY-MM-DD[THH:MM:SS].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the scorecard as JSON.")
def scorecard_command(reports_dir: Path, last: int | None, scenario: str | None, since: datetime | None,
                      as_json: bool) -> None:  # fmt: skip
    """Per fault kind over the latest chaos runs: time to detect and to recover, requests lost and error
    budget burned, each a median with its interquartile range and the runs and faults behind it, split by
    whether remediation acted. Exits 0 with a line saying so when no run has recovery measures."""

    def action() -> None:
        from labkit.report import DEFAULT_LAST, scorecard

        card = scorecard(reports_dir, last=last or DEFAULT_LAST, scenario=scenario, since=since)
        click.echo(json.dumps(card.as_dict(), indent=2) if as_json else card.text())

    run_action(action)
