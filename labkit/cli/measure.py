"""`labkit load`, `labkit capacity` and `labkit slo`: send load and record every request; find the highest
rate that meets every SLO; judge a run against the SLOs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from labkit.cli._base import attached, cli, out_option, renamed_option, run_action
from labkit.errors import LabNotRunningError
from labkit.measure.load_apis import ARRIVALS, LOAD_APIS, RAMPS, LoadApi, wrapper_api_url
from labkit.rundir import RunFile

__all__ = ["capacity", "load", "slo"]


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


_PROFILE_OPTION = click.option(
    "--profile",
    type=click.Choice(["production", "lab"]),
    default="production",
    show_default=True,
    help="Alert windows: the SRE Workbook's for a 30-day period, or the lab's (each / 30; SLO.md).",
)


@slo.command("rules")
@_SPEC_OPTION
@_PROFILE_OPTION
def slo_rules(spec_path: Path | None, profile: str) -> None:
    """Print Prometheus recording and alerting rules (multi-window burn rates) for the SLO spec."""

    def action() -> None:
        # Imported here: pandas comes with labkit.measure.slo, and every other command would pay for it.
        from labkit.measure.slo.alerts import alert_profile
        from labkit.measure.slo.rules import rules_yaml

        click.echo(rules_yaml(spec_path=spec_path, profile=alert_profile(profile).name), nl=False)

    run_action(action)


@slo.command("validate")
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@_PROFILE_OPTION
def slo_validate(spec_file: Path, profile: str) -> None:
    """Check SPEC_FILE (errors as FILE:LINE: message, exit 1) and print the rules it would produce."""

    from labkit.measure.slo.spec import SloSpecError

    def action() -> None:
        from labkit.measure.slo.alerts import alert_profile
        from labkit.measure.slo.rules import rules_yaml
        from labkit.measure.slo.spec import load_slo_spec

        try:
            slos = load_slo_spec(spec_file)
            text = rules_yaml(slos, profile=alert_profile(profile).name)
        except SloSpecError as exc:
            # FILE:LINE: message alone, as compilers print it, so that editors can jump to the line
            click.echo(str(exc), err=True)
            sys.exit(1)
        click.echo(text, nl=False)
        click.echo(f"{spec_file}: {len(slos)} SLO(s) valid", err=True)

    run_action(action)


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
            click.echo(f"report: {run_dir / RunFile.SLO}")
        verdicts.append(report.verdict)

    run_action(action)
    if verdicts != ["met"]:
        sys.exit(1)


def _target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--api, --url and --model: what `labkit load` and `labkit capacity` send to."""
    options = [
        click.option(
            "--api",
            type=click.Choice(LOAD_APIS),
            default="generate",
            show_default=True,
            help="The API to speak: the wrapper's POST /generate, or OpenAI-compatible chat or text "
            "completions.",
        ),
        click.option(
            "--url",
            default=None,
            help="Target: a wrapper's base URL (--api generate), or an OpenAI base URL such as "
            "http://127.0.0.1:11434/v1 [default: the running lab's wrapper].",
        ),
        click.option(
            "--model", default=None, help="Model to ask for [default: the only one GET {url}/models lists]."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _target(
    ctx: click.Context, url: str | None, api_key_file: Path | None, api: LoadApi
) -> tuple[str, Path | None]:
    """The URL to send to and the API key file: --url's and --api-key-file's, else the running lab's."""
    if url is not None:
        return url, api_key_file
    try:
        saved = attached(ctx).saved_config()
    except LabNotRunningError as exc:
        raise LabNotRunningError(f"{exc}, or pass --url URL of a wrapper or an OpenAI base URL") from exc
    return wrapper_api_url(saved.wrapper_url, api), api_key_file or saved.api_key_file


@cli.command()
@_target_options
@click.option(
    "--rate", type=float, default=None, help="Open loop: requests per second (a ramp's first rate)."
)
@renamed_option(
    "--duration-s",
    "--duration",
    "duration_s",
    type=float,
    default=None,
    help="Seconds to send requests for [required, except with --arrival trace: the trace's own length].",
)
@click.option(
    "--concurrency", type=int, default=None, help="Closed loop instead: N workers sending back to back."
)
@renamed_option(
    "--arrival",
    "--poisson",
    "arrival",
    old_flag_value="poisson",
    type=click.Choice(ARRIVALS),
    default="constant",
    show_default=True,
    help="Open loop: constant spacing, seeded Poisson arrivals, a ramp (--rate to --rate-end), bursty gamma "
    "gaps (--burstiness), or a trace's offsets (--trace).",
)
@click.option(
    "--rate-end",
    type=float,
    default=None,
    help="--arrival ramp: the rate at the end of --duration-s, requests per second.",
)
@click.option(
    "--ramp",
    type=click.Choice(RAMPS),
    default=None,
    help="--arrival ramp: linear or exponential (geometric) from --rate to --rate-end [default: linear].",
)
@click.option(
    "--burstiness",
    type=float,
    default=None,
    help="--arrival gamma: the gaps' gamma shape, as vllm bench serve's: 1 Poisson, below 1 burstier, "
    "above 1 more regular.",
)
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='--arrival trace: a JSON Lines file, {"offset_s": S} per request, optional "prompt_tokens" (or '
    '"prompt") and "max_tokens" that win over the workload\'s.',
)
@click.option(
    "--stream/--no-stream",
    default=None,
    help="Streamed answers (client-side TTFT and ITL) [default: on for the OpenAI APIs, off for generate].",
)
@click.option(
    "--prompt",
    "prompts",
    multiple=True,
    help="A prompt to send (repeat for several, chosen per request) [default: five short questions].",
)
@click.option(
    "--prompt-tokens",
    default=None,
    metavar="MEAN[:STDDEV]",
    help="Synthetic prompts instead: this many tokens each (normal, seeded, at least 1).",
)
@click.option(
    "--prompts",
    "prompts_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='Prompts from a JSON Lines file instead: {"prompt": ...} or {"messages": [...]} per line, '
    'optional "max_tokens".',
)
@click.option(
    "--max-tokens",
    default="32",
    show_default=True,
    metavar="N|MEAN:STDDEV",
    help="Tokens per answer: a count, or a normal distribution (seeded, at least 1).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seeds arrivals, prompts and token counts."
)
@renamed_option(
    "--timeout-s",
    "--timeout",
    "timeout_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds a request may take, from its intended send.",
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the target's API key, sent as a Bearer token [default: the lab's key, without --url].",
)
@click.option("--allow-non-loopback", is_flag=True, help="Permit a target that is not this machine.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@out_option
@click.pass_context
def load(
    ctx: click.Context,
    url: str | None,
    api_key_file: Path | None,
    prompts: tuple[str, ...],
    stream: bool | None,
    no_progress: bool,
    out: Path,
    **options: Any,
) -> None:
    """Send open-loop (--rate) or closed-loop (--concurrency) load and record every request.

    The prompts are one of: --prompt TEXT (repeatable), --prompt-tokens MEAN[:STDDEV] or --prompts FILE.
    The open loop's shape is --arrival: constant, poisson, ramp (--rate-end, --ramp), gamma (--burstiness)
    or trace (--trace FILE.jsonl); docs/load.md, "Load shapes".
    """
    if options["duration_s"] is None and options["arrival"] != "trace":  # a trace lasts its own length
        raise click.UsageError("Missing option '--duration-s' (needed unless --arrival trace).", ctx=ctx)

    def action() -> None:
        from labkit.measure.load import LoadSpec, run_load
        from labkit.rundir import RunDirectory

        target, key_file = _target(ctx, url, api_key_file, options["api"])
        spec = LoadSpec(
            url=target,
            api_key_file=key_file,
            mode="open" if options["concurrency"] is None else "closed",
            prompts=prompts or None,
            stream=stream,
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
        if spec.rate_end is not None:
            target_rate = f" (target {spec.rate:g} to {spec.rate_end:g}/s, {spec.ramp})"
        availability = "-" if s["availability"] is None else f"{s['availability']:.2%}"
        model = result.model or "the wrapper's default"
        click.echo(f"api {spec.api}  model {model}  target {spec.target}")
        click.echo(
            f"requests {s['requests']}  ok {s['ok']}  availability {availability}  rate {rate}{target_rate}"
        )
        for name in ("ttft_s", "itl_s", "e2e_s", "queue_delay_s"):
            q = s[name]
            cells = "  ".join(f"{p} {'-' if v is None else f'{v * 1000:.1f} ms'}" for p, v in q.items())
            click.echo(f"{name.removesuffix('_s'):<12}{cells}")
        kinds = ", ".join(f"{k} {n}" for k, n in s["error_kinds"].items()) or "none"
        click.echo(f"errors      {kinds}")
        click.echo(f"run directory: {result.run_dir.path}")

    run_action(action)


def _rates(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if not value:
        return None
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give rates in requests/s separated by commas, e.g. 1,2,4"
        ) from None


@cli.command()
@_target_options
@click.option("--point-s", type=float, default=30.0, show_default=True, help="Seconds of load per point.")
@click.option(
    "--min-requests",
    type=int,
    default=10,
    show_default=True,
    help="A point lasts for at least this many requests.",
)
@click.option(
    "--start-rate", type=float, default=1.0, show_default=True, help="The sweep's first rate (req/s)."
)
@click.option(
    "--rates",
    callback=_rates,
    default=None,
    help="The sweep's rates instead of doubling, e.g. 1,2,4,8 (req/s).",
)
@click.option(
    "--max-rate", type=float, default=1000.0, show_default=True, help="The sweep doubles no further."
)
@click.option(
    "--precision",
    type=float,
    default=0.05,
    show_default=True,
    help="Bisect until the first failing rate is within this share above the last passing one.",
)
@click.option(
    "--repeats",
    type=int,
    default=1,
    show_default=True,
    help="Knee measurements; 2 or more give a t-interval.",
)
@click.option(
    "--max-search-s", type=float, default=1800.0, show_default=True, help="The search's time bound."
)
@click.option("--max-points", type=int, default=40, show_default=True, help="Points at most.")
@click.option(
    "--arrival",
    type=click.Choice(["constant", "poisson"]),
    default="constant",
    show_default=True,
    help="Arrivals within a point.",
)
@click.option(
    "--max-tokens", default="64", show_default=True, metavar="N|MEAN:STDDEV", help="Tokens per answer."
)
@click.option(
    "--stream/--no-stream",
    default=True,
    show_default=True,
    help="Streamed answers (client-side TTFT and ITL).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seeds arrivals and prompts (+ point index)."
)
@click.option("--timeout-s", type=float, default=60.0, show_default=True, help="Seconds a request may take.")
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the target's API key, sent as a Bearer token [default: the lab's key, without --url].",
)
@click.option("--allow-non-loopback", is_flag=True, help="Permit a target that is not this machine.")
@_SPEC_OPTION
@out_option
@click.pass_context
def capacity(
    ctx: click.Context,
    url: str | None,
    api_key_file: Path | None,
    spec_path: Path | None,
    out: Path,
    **options: Any,
) -> None:
    """Find the highest offered rate at which every SLO holds: a sweep, then a bisection, over open-loop
    points; an over-saturated point is stopped early. Prints each point as it finishes, then the knee with
    its interval and the SLO that broke first; the run directory holds capacity.json and one folder per
    point (render its report with `labkit report RUN_DIR`). docs/capacity.md explains the search.
    """

    def action() -> None:
        from labkit.measure.capacity import CapacitySpec, find_capacity
        from labkit.measure.load import LoadSpec
        from labkit.rundir import RunDirectory

        target, key_file = _target(ctx, url, api_key_file, options["api"])
        load_fields = (
            "api",
            "model",
            "arrival",
            "max_tokens",
            "stream",
            "seed",
            "timeout_s",
            "allow_non_loopback",
        )
        load = LoadSpec(
            url=target,
            api_key_file=key_file,
            rate=options["start_rate"],
            duration_s=options["point_s"],
            **{name: options[name] for name in load_fields},
        )
        search_fields = (
            "point_s",
            "min_requests",
            "start_rate",
            "rates",
            "max_rate",
            "precision",
            "repeats",
            "max_search_s",
            "max_points",
        )
        spec = CapacitySpec(load=load, slo_spec=spec_path, **{name: options[name] for name in search_fields})
        run_dir = RunDirectory.create(out, "capacity")
        click.echo(
            f"capacity search of {load.target}, {spec.point_s:g} s per point; run directory {run_dir.path}"
        )
        try:
            find_capacity(spec, run_dir, say=click.echo)
        except KeyboardInterrupt:
            click.echo(f"search interrupted; the points so far are in {run_dir.path}", err=True)
            raise
        click.echo(f"run directory: {run_dir.path}")

    run_action(action)
