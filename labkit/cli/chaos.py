"""`labkit chaos plan`, `run` and `halt`: a schedule printed, run against the lab with load and steady-state
checks (and remediation), or every active fault ended at once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from labkit.cli._base import attached, cli, out_option, renamed_option, run_action
from labkit.config import LabConfig, resolve_lab_dir
from labkit.errors import ConfigError, LabkitError, LabNotRunningError
from labkit.lab.contract import MANAGED_SERVICES

if TYPE_CHECKING:
    from labkit.chaos import ExperimentSpec, RemediationPolicy
    from labkit.lab.backend import Backend

__all__ = ["chaos"]


@cli.group()
def chaos() -> None:
    """Chaos experiments: plan a schedule, run it with load and a steady-state check, halt every fault."""


DEFAULT_CHAOS_DURATION_S = 120.0


def _experiment_spec(
    seed: int | None, experiment: Path | None, duration_s: float | None, lab: LabConfig | None
) -> ExperimentSpec:
    """The experiment --seed or --file describes (read once), with --duration-s over the file's; a random
    schedule draws only the faults `lab` can apply (every fault when None)."""
    from labkit.chaos import ExperimentSpec, applicable_faults, load_experiment_file, random_schedule

    if (seed is None) == (experiment is None):
        raise LabkitError("give exactly one of --seed K (a random schedule) or --file EXPERIMENT.yaml")
    applicable = applicable_faults(lab) if lab is not None else None
    if experiment is not None:
        return load_experiment_file(experiment, applicable=applicable).spec(duration_s)
    total = duration_s if duration_s is not None else DEFAULT_CHAOS_DURATION_S
    try:
        schedule = random_schedule(int(seed or 0), total, applicable=applicable)
        return ExperimentSpec(schedule=schedule, duration_s=total)
    except ConfigError as exc:
        raise ConfigError(f"--duration-s: {exc}") from None


def _running_lab(backend: Backend) -> LabConfig | None:
    """The settings of the lab running in the lab directory (its engine says which faults apply), or None."""
    try:
        return backend.saved_config()
    except LabNotRunningError:
        return None


_experiment_option = click.option(
    "--file",
    "experiment",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="An experiment file (YAML or JSON) instead of a seed.",
)


def _duration_option(help: str) -> Any:
    return renamed_option("--duration-s", "--duration", "duration_s", type=float, default=None, help=help)


@chaos.command("plan")
@click.option("--seed", type=int, default=None, help="Random schedule from this seed (same seed, same plan).")
@_experiment_option
@_duration_option("The run's length in seconds.")
@click.pass_context
def chaos_plan(
    ctx: click.Context, seed: int | None, experiment: Path | None, duration_s: float | None
) -> None:
    """Print the schedule an experiment would run, without touching the lab. A random schedule draws only
    the faults the running lab can apply (none of the model service's kills when the lab does not run it);
    with no lab running, every fault."""

    def action() -> None:
        from labkit.chaos import plan_text

        spec = _experiment_spec(seed, experiment, duration_s, None)  # checked before the lab is looked at
        lab = _running_lab(attached(ctx)) if spec.schedule.seed is not None else None
        if lab is not None:
            spec = _experiment_spec(seed, experiment, duration_s, lab)
        click.echo(plan_text(spec.schedule, duration_s=spec.duration_s))

    run_action(action)


@chaos.command("run")
@click.option("--seed", type=int, default=None, help="Random schedule from this seed.")
@_experiment_option
@_duration_option("The method's length in seconds.")
@click.option(
    "--rate", type=float, default=None, help="Load during the run, requests/s [default: the file's, else 2]."
)
@click.option("--no-steady-state", is_flag=True, help="Skip the steady-state checks before and after.")
@click.option(
    "--remediate",
    type=click.Choice(MANAGED_SERVICES),
    default=None,
    help="Run automated remediation beside the load: restart this service when p95 latency breaches "
    "(or, with --on-alert, when that alert fires).",
)
@renamed_option(
    "--remediation-threshold-s",
    "--remediation-threshold",
    "remediation_threshold_s",
    type=float,
    default=None,
    help="p95 latency (seconds) above which remediation counts a breach [default: 3].",
)
@click.option(
    "--on-alert",
    "on_alert",
    metavar="ALERTNAME",
    default=None,
    help="Remediate when Alertmanager notifies this alert firing (e.g. SloErrorBudgetBurnPage), "
    "instead of polling p95; one of the alerts the lab's rules define.",
)
@click.option(
    "--remediation-dry-run", is_flag=True, help="Journal what remediation would do; restart nothing."
)
@out_option
@click.pass_context
def chaos_run(
    ctx: click.Context,
    seed: int | None,
    experiment: Path | None,
    duration_s: float | None,
    rate: float | None,
    no_steady_state: bool,
    remediate: str | None,
    remediation_threshold_s: float | None,
    on_alert: str | None,
    remediation_dry_run: bool,
    out: Path,
) -> None:
    """Run an experiment against the running lab; exit 1 unless its verdict is `completed`."""
    if on_alert is not None and remediation_threshold_s is not None:
        raise click.UsageError(
            "--on-alert and --remediation-threshold-s are two triggers for remediation; give one", ctx=ctx
        )
    if on_alert is not None and remediate is None and experiment is None:
        raise click.UsageError("--on-alert ALERTNAME needs --remediate SERVICE (what to restart)", ctx=ctx)

    def action() -> None:
        from labkit.chaos import run_experiment

        def experiment_for(lab: LabConfig | None) -> ExperimentSpec:
            spec = _experiment_spec(seed, experiment, duration_s, lab)
            changes: dict[str, Any] = {
                "remediation": _remediation(
                    spec.remediation, remediate, remediation_threshold_s, on_alert, remediation_dry_run
                )
            }
            if rate is not None:
                try:
                    spec = spec.replace(load={"rate": rate})
                except ConfigError as exc:
                    raise ConfigError(f"--rate {rate:g}: {exc}") from None
            if no_steady_state:
                changes["steady_state"] = {"enabled": False}
            return spec.replace(**changes)

        spec = experiment_for(None)  # every flag checked now, before the lab is looked at
        backend = attached(ctx)
        lab = backend.saved_config()  # a clear error before anything is injected when no lab runs
        if spec.schedule.seed is not None:
            spec = experiment_for(lab)  # a random schedule draws only the faults this lab can apply
        result = run_experiment(
            backend.lab.root, spec, out_dir=out, say=lambda msg: click.echo(msg, err=True)
        )
        click.echo(result.summary())
        if result.verdict not in ("held", "not checked"):
            raise LabkitError(f"experiment {result.verdict}: {result.reason}")

    run_action(action)


def _remediation(
    from_file: RemediationPolicy | None,
    target: str | None,
    threshold_s: float | None,
    on_alert: str | None,
    dry_run: bool,
) -> RemediationPolicy | None:
    """The remediation policy: the experiment file's, with the command line's choices on top (a trigger
    given on the command line, p95 threshold or alert, replaces the file's)."""
    from labkit.chaos import RemediationPolicy

    if from_file is None and target is None:
        if threshold_s is not None or on_alert is not None or dry_run:
            raise LabkitError(
                "--remediation-threshold-s, --on-alert and --remediation-dry-run need --remediate SERVICE "
                "(or a `remediation:` section in the experiment file)"
            )
        return None
    fields = from_file.model_dump() if from_file is not None else {}
    if on_alert is not None:
        fields.update(threshold_s=None, window_s=None, breaches_to_act=None)
    elif threshold_s is not None:
        fields["on_alert"] = None
    overrides: dict[str, Any] = {"target": target, "threshold_s": threshold_s, "on_alert": on_alert}
    overrides["dry_run"] = dry_run or None
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return RemediationPolicy.from_options(**fields)


@chaos.command("halt")
@click.pass_context
def chaos_halt(ctx: click.Context) -> None:
    """End every active fault of the lab at once (idempotent)."""

    def action() -> None:
        from labkit.chaos import halt_all

        report = halt_all(resolve_lab_dir(ctx.obj.get("lab_dir")))
        click.echo(report.summary())
        if not report.ok:
            raise LabkitError("some faults could not be ended: " + "; ".join(report.errors))

    run_action(action)
