"""The `labkit` command group and what its subcommands share: one `error:` line per failure (exit 1; a usage
error exits 2), the lab of the lab directory, the --out option, and renamed flags that still work.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

import click

from labkit._version import __version__
from labkit.config import BackendName, Engine, resolve_lab_dir
from labkit.errors import LabkitError
from labkit.lab.backend import Backend
from labkit.lab.registry import attach_backend

__all__ = ["attached", "backend_option", "cli", "engine_option", "out_option", "renamed_option", "run_action"]


def run_action(action: Callable[[], None]) -> None:
    """Run a command's action: a LabkitError is one `error:` line and exit 1, Ctrl-C exit 130."""
    try:
        action()
    except LabkitError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted; nothing was left running", err=True)
        sys.exit(130)


class _OneLineErrors(click.Group):
    """A command group whose usage errors (a wrong type, an unknown choice or option, a missing argument)
    are one `error:` line, like labkit's own, with click's exit status 2 instead of its usage block."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            hint = f"; see `{exc.ctx.command_path} --help`" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message().rstrip('.')}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # an int is click's Exit (--help, --version)


@click.group(
    cls=_OneLineErrors,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="labkit")
@click.option(
    "--lab-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Lab state directory [env LABKIT_LAB_DIR; default $XDG_STATE_HOME/labkit].",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what labkit does.")
@click.pass_context
def cli(ctx: click.Context, lab_dir: Path | None, verbose: bool) -> None:
    """labkit — the LLM Reliability Lab."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    ctx.obj = {"lab_dir": lab_dir}


def attached(ctx: click.Context) -> Backend:
    """The lab in the lab directory (local or docker, as it was started), with its saved settings."""
    return attach_backend(resolve_lab_dir(ctx.obj.get("lab_dir")))


out_option = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/runs"),
    show_default=True,
    help="Folder the run directory is written under.",
)


def engine_option(help: str) -> Callable[[Any], Any]:
    """--engine, one of the lab's engines (labkit.config.Engine)."""
    return click.option("--engine", type=click.Choice(get_args(Engine)), default=None, help=help)


def backend_option(help: str) -> Callable[[Any], Any]:
    """--backend, one of the lab's backends (labkit.config.BackendName)."""
    return click.option("--backend", type=click.Choice(get_args(BackendName)), default=None, help=help)


def renamed_option(
    new: str, old: str, dest: str, *, old_flag_value: Any = None, **options: Any
) -> Callable[[Any], Any]:
    """The option `new` (its value in `dest`), and `old`, its former spelling: hidden, still accepted, with a
    warning that says to use `new` instead. Giving both is a usage error. An `old` that was a flag stands for
    `old_flag_value` (`--poisson` for `--arrival poisson`)."""
    required = bool(options.pop("required", False))
    instead = f"{new} {old_flag_value}" if old_flag_value is not None else new

    def remember_old(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if old_flag_value is not None:
            value = old_flag_value if value else None
        if value is None:
            return
        if ctx.get_parameter_source(dest) is click.core.ParameterSource.COMMANDLINE:  # the new one came first
            raise click.UsageError(f"give {instead} or {old}, not both", ctx=ctx)
        click.echo(f"warning: {old} is deprecated; use {instead}", err=True)
        ctx.meta.setdefault(_RENAMED, {})[dest] = value

    def take_old(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        former = ctx.meta.get(_RENAMED, {}).pop(dest, None)
        given = ctx.get_parameter_source(dest) is click.core.ParameterSource.COMMANDLINE
        if former is not None and given:
            raise click.UsageError(f"give {instead} or {old}, not both", ctx=ctx)
        if former is not None:
            return former
        if required and value is None:
            raise click.MissingParameter(ctx=ctx, param=param)
        return value

    def decorate(command: Any) -> Any:
        command = click.option(new, dest, callback=take_old, **options)(command)
        if old_flag_value is not None:
            old_kind: dict[str, Any] = {"is_flag": True, "default": None}
        else:
            old_kind = {"type": options["type"]} if "type" in options else {}
        return click.option(old, expose_value=False, hidden=True, callback=remember_old, **old_kind)(command)

    return decorate


_RENAMED = "labkit.renamed_options"
