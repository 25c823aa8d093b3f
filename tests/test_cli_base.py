"""The command line's shared pieces (labkit/cli/_base.py): a renamed flag still works under its old name,
with a warning naming the new one, and the two together are a usage error."""

from __future__ import annotations

from typing import Any

import click
from click.testing import CliRunner

from labkit.cli import cli
from labkit.cli._base import renamed_option


@click.command()
@renamed_option("--duration-s", "--duration", "duration_s", type=float, default=None, help="seconds")
@renamed_option("--arrival", "--poisson", "arrival", old_flag_value="poisson", default="constant")
@renamed_option("--timeout-s", "--timeout", "timeout_s", type=float, required=True)
def toy(**values: Any) -> None:
    click.echo(repr(sorted(values.items())))


def _run(*args: str) -> Any:
    return CliRunner().invoke(toy, list(args))


def test_the_new_spelling_takes_its_value_and_the_old_one_is_hidden() -> None:
    result = _run("--duration-s", "5", "--timeout-s", "1")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == "[('arrival', 'constant'), ('duration_s', 5.0), ('timeout_s', 1.0)]\n"
    shown = CliRunner().invoke(toy, ["--help"]).stdout
    assert "--duration-s" in shown and "--duration " not in shown and "--poisson" not in shown


def test_the_old_spelling_still_works_and_says_what_to_use_instead() -> None:
    result = _run("--duration", "5", "--poisson", "--timeout", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "[('arrival', 'poisson'), ('duration_s', 5.0), ('timeout_s', 1.0)]\n"
    assert result.stderr.splitlines() == [
        "warning: --duration is deprecated; use --duration-s",
        "warning: --poisson is deprecated; use --arrival poisson",
        "warning: --timeout is deprecated; use --timeout-s",
    ]


def test_both_spellings_at_once_is_a_usage_error_in_either_order() -> None:
    for args in (["--duration-s", "5", "--duration", "5"], ["--duration", "5", "--duration-s", "5"]):
        result = _run(*args, "--timeout-s", "1")
        assert result.exit_code == 2 and "give --duration-s or --duration, not both" in result.output


def test_a_required_option_may_come_under_its_old_name() -> None:
    assert _run().exit_code == 2 and "--timeout-s" in _run().output
    assert _run("--timeout", "2").exit_code == 0


def test_the_lab_s_commands_use_one_name_per_concept() -> None:
    """Flags are their fields' names (`duration_s` is `--duration-s` everywhere); the old ones are hidden."""
    for command in (["load"], ["chaos", "plan"], ["chaos", "run"]):
        shown = CliRunner().invoke(cli, [*command, "--help"]).stdout
        assert "--duration-s" in shown and "--duration " not in shown, command
    assert "--timeout-s" in CliRunner().invoke(cli, ["load", "--help"]).stdout
    assert "--remediation-threshold-s" in CliRunner().invoke(cli, ["chaos", "run", "--help"]).stdout
