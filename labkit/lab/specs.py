"""What the local backend runs: the command line, environment and readiness probe of each service.

Kept apart from the supervisor so that it can be read (and tested) without starting anything.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from labkit.config import LabConfig
from labkit.lab.contract import ServiceName
from labkit.lab.labdir import LabDir
from labkit.sockets import http_url, is_loopback_address

__all__ = ["ServiceSpec", "alertmanager_spec", "exposed_services", "llamacpp_server_spec", "service_specs"]


@dataclass(frozen=True)
class ServiceSpec:
    """One supervised service. `ready_path` answers 200 when it is ready to serve."""

    name: ServiceName
    argv: list[str]
    url: str
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    # When set, readiness also needs this model in the model list `ready_path` answers: Ollama's
    # /api/tags or the OpenAI-compatible /v1/models.
    model_name: str | None = None


def service_specs(config: LabConfig, lab: LabDir, *, for_containers: bool = False) -> list[ServiceSpec]:
    """The supervised services in start order (the exporter lives in the supervisor itself).

    `for_containers`: the Docker backend's command lines — the model image carries the embedded model
    (`--model-path` only when one was given) and runs an Ollama from its own image, not from PATH."""
    host = config.host
    specs: list[ServiceSpec] = []
    model_url = http_url(host, config.model_port)  # the lab's own model server (not an --ollama-url)
    if config.engine in ("llama", "sim"):
        argv = [
            sys.executable, "-m", "labkit.services.modelserver",
            "--host", host, "--port", str(config.model_port),
            "--engine", config.engine, "--model-name", config.model_name,
            "--num-parallel", str(config.num_parallel), "--max-queue", str(config.max_queue),
            "--keep-alive", config.keep_alive, "--seed", str(config.seed),
            "--sim-ttft-s", str(config.sim_ttft_s), "--sim-itl-s", str(config.sim_itl_s),
            "--sim-jitter", str(config.sim_jitter),
        ]  # fmt: skip
        if config.engine == "llama" and not (for_containers and config.model_path is None):
            argv += ["--model-path", str(config.resolved_model_path())]
        specs.append(ServiceSpec("model", argv, model_url, "/api/tags", model_name=config.model_name))
    elif config.engine == "llamacpp-server" and not for_containers:
        specs.append(llamacpp_server_spec(config, model_url))
    elif config.engine == "ollama" and config.supervised_model and not for_containers:  # binary on PATH
        env = {
            "OLLAMA_HOST": f"{host}:{config.model_port}",
            "OLLAMA_NUM_PARALLEL": str(config.num_parallel),
            "OLLAMA_MAX_QUEUE": str(config.max_queue),
            "OLLAMA_KEEP_ALIVE": config.keep_alive,
        }
        specs.append(
            ServiceSpec(
                "model",
                [config.ollama_binary(), "serve"],
                model_url,
                "/api/tags",
                env,
                model_name=config.model_name,
            )
        )
    wrapper_argv = [
        sys.executable, "-m", "labkit.services.wrapper",
        "--host", host, "--port", str(config.wrapper_port),
        "--backend-url", config.model_api_url, "--model", config.model_name,
        "--max-in-flight", str(config.max_in_flight),
        "--max-prompt-chars", str(config.max_prompt_chars),
        "--backend-timeout-s", str(config.backend_timeout_s),
        "--admin-token-file", str(lab.token_file),  # the fault API shares the lab's token
    ]  # fmt: skip
    if config.api_key_file is not None:
        key_file = lab.api_key_copy if for_containers else config.api_key_file
        wrapper_argv += ["--api-key-file", str(key_file)]
    if config.model_api == "openai":
        wrapper_argv += ["--backend-api", "openai"]
    if config.upstream_api_key_file is not None:
        upstream_key = lab.upstream_api_key_copy if for_containers else config.upstream_api_key_file
        wrapper_argv += ["--backend-api-key-file", str(upstream_key)]
    specs.append(ServiceSpec("wrapper", wrapper_argv, config.wrapper_url, "/ready"))
    specs.append(alertmanager_spec(config, lab, for_containers=for_containers))
    prometheus_argv = [
        config.prometheus_bin,
        f"--config.file={lab.prometheus_dir / 'prometheus.yml'}",
        f"--storage.tsdb.path={lab.prometheus_dir / 'data'}",
        f"--web.listen-address={host}:{config.prometheus_port}",
        # A lab left running keeps a bounded TSDB: the oldest blocks go past either bound.
        f"--storage.tsdb.retention.time={config.prometheus_retention_time}",
        f"--storage.tsdb.retention.size={config.prometheus_retention_size}",
        # ... and a bounded head: at one scrape a second its memory grows until its block is written, at 3 h
        # with Prometheus' 2-hour default (docs/decisions.md, "Prometheus' head: 30-minute blocks").
        f"--storage.tsdb.min-block-duration={config.prometheus_block_duration}",
        # No --web.enable-lifecycle: its /-/quit and /-/reload take no token, and the lab uses neither.
        "--log.level=warn",
        "--log.format=json",
    ]
    specs.append(ServiceSpec("prometheus", prometheus_argv, config.prometheus_url, "/-/ready"))
    return specs


def alertmanager_spec(config: LabConfig, lab: LabDir, *, for_containers: bool = False) -> ServiceSpec:
    """The lab's Alertmanager: its configuration and state in the lab directory, its API and UI on the lab's
    host and port, and no cluster (an empty --cluster.listen-address turns the gossip off, which would
    otherwise listen on 0.0.0.0:9094). In a container the image's own binary runs (argv[0] is dropped)."""
    binary = "alertmanager" if for_containers else config.alertmanager_binary()
    argv = [
        binary,
        f"--config.file={lab.alertmanager_dir / 'alertmanager.yml'}",
        f"--storage.path={lab.alertmanager_dir / 'data'}",
        f"--web.listen-address={config.host}:{config.alertmanager_port}",
        "--cluster.listen-address=",
        "--log.level=warn",
        "--log.format=json",
    ]
    return ServiceSpec("alertmanager", argv, config.alertmanager_url, "/-/ready")


def llamacpp_server_spec(config: LabConfig, url: str) -> ServiceSpec:
    """llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`, its `server` extra) on
    the lab's model port: the same GGUF file, context size, threads and seed as labkit's llama engine, the
    lab's model name as its alias (what /v1/models lists and requests name)."""
    # Imported here: the model server's package pulls in its web stack, which `labkit status` never needs.
    from labkit.services.modelserver import ModelServerSettings

    defaults = ModelServerSettings()
    threads = str(defaults.n_threads)
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(config.resolved_model_path()), "--model_alias", config.model_name,
        "--host", config.host, "--port", str(config.model_port),
        "--n_ctx", str(defaults.n_ctx), "--n_threads", threads, "--n_threads_batch", threads,
        "--seed", str(config.seed),
        # Its default lets every new request abort the stream in progress; the lab's requests queue instead
        # (one at a time, as labkit's model server with --num-parallel 1 and Ollama's default).
        "--interrupt_requests", "False",
        "--verbose", "False",
    ]  # fmt: skip
    # uvicorn.run in llama_cpp/server/__main__.py takes HOST and PORT from the environment over the flags.
    env = {"HOST": config.host, "PORT": str(config.model_port)}
    return ServiceSpec("model", argv, url, "/v1/models", env, model_name=config.model_name)


def exposed_services(config: LabConfig) -> list[str]:
    """The services of `config` that other machines could reach, as `name (host:port)`; [] when they all
    bind a loopback address. The exporter is listed with its control API (token-protected) and its open
    /metrics; an Ollama the lab did not start is not the lab's to expose."""
    if is_loopback_address(config.host, resolve=True):
        return []
    ports = {
        "wrapper": config.wrapper_port,
        "alertmanager": config.alertmanager_port,
        "prometheus": config.prometheus_port,
    }
    if config.supervised_model:
        ports = {"model": config.model_port, **ports}
    ports["exporter"] = config.exporter_port
    host = f"[{config.host}]" if ":" in config.host else config.host  # the address bound, not a client's
    return [f"{name} ({host}:{port})" for name, port in ports.items()]
