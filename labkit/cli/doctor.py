"""`labkit doctor`: what this machine has and needs for a lab, one line per check with the command that fixes
it (labkit.lab.doctor); exit 1 when the main command cannot run. `make run` runs it first."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from labkit.cli._base import backend_option, cli, engine_option, run_action
from labkit.config import load_config, resolve_lab_dir

__all__ = ["doctor"]


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON list of checks {name, status, detail, fix}.")
@backend_option("The backend to check for: local processes (default) or Docker containers (engine, images).")
@engine_option("The engine to check for [default: llama, the embedded SmolLM2].")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where run directories go, for the free-space check [default: $LABKIT_OUT_DIR, else reports/runs].",
)
@click.pass_context
def doctor(
    ctx: click.Context, as_json: bool, backend: str | None, engine: str | None, out: Path | None
) -> None:
    """Check this machine before a lab starts: Python, Prometheus, Alertmanager, stress-ng, free ports, the
    model and a real load of it, GPU, disk, Docker. Exit 1 when `make run` cannot run."""

    def action() -> None:
        from labkit.lab.doctor import failed, format_check, run_checks
        from labkit.scenarios.session import resolve_out_dir

        config = load_config(lab_dir=resolve_lab_dir(ctx.obj.get("lab_dir")), backend=backend, engine=engine)
        checks = run_checks(config, runs_dir=resolve_out_dir(out))
        if as_json:
            click.echo(json.dumps([check.as_dict() for check in checks], indent=2))
        else:
            width = max(len(check.name) for check in checks) + 2
            for check in checks:
                click.echo(format_check(check, width=width))
        if failed(checks):
            if not as_json:
                click.echo("doctor: the lab cannot run here until each FAIL above is fixed", err=True)
            sys.exit(1)

    run_action(action)
