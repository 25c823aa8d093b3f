"""The Docker backend: the lab's services as containers on a Docker engine, through the Docker SDK.

Same services, ports and lab directory as the local backend; every container carries the labels
`io.labkit.lab=<lab id>` and `io.labkit.service=<name>`, and `down` removes exactly those. Containers use
host networking, each service bound to its 127.0.0.1 port as in the local lab (so the lab's traffic never
leaves loopback; compose users keep a bridge network, see stack/docker-compose.yml). The `exporter` container
is the lab's agent (`labkit.lab.manager.docker_agent`): it reads Docker's RestartCount, holds pause TTLs and
serves the control API that chaos, remediation and `labkit status` use on either backend.

Images come from `stack/docker` (`labkit images build`; `--offline` builds them with no registry).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from labkit.atomic import write_atomically
from labkit.config import LabConfig
from labkit.errors import BackendError, ConfigError
from labkit.lab.backend import Backend
from labkit.lab.contract import (
    LABEL_LAB,
    LABEL_MODEL,
    LABEL_READY,
    LABEL_SERVICE,
    LABEL_URL,
    ServiceName,
)
from labkit.lab.docker_engine import DEFAULT_SOCKET, docker_client, engine_url
from labkit.lab.labdir import LabDir
from labkit.lab.specs import service_specs
from labkit.secret_files import read_token_file
from labkit.sockets import http_url

__all__ = ["CONTAINER_UID", "DockerBackend"]

logger = logging.getLogger(__name__)

# The images' non-root user (stack/docker/Dockerfile). A root caller runs every container as this user and
# hands it the lab directory; anyone else runs them as themselves (the files stay theirs).
CONTAINER_UID = 10001
# Where the containers see the lab directory. Not the host's own path: that may pass through folders the
# image has too, with other owners (a lab under /root: the image's /root is 0700 and the containers'
# user could not reach it).
CONTAINER_LAB = LabDir(Path("/lab"))
STOP_TIMEOUT_S = 8
CONTAINER_SOCKET = DEFAULT_SOCKET  # where the agent container sees the engine's socket


class DockerBackend(Backend):
    """Runs the lab as containers. All host-side state lives in `config.lab_dir`, as for the local backend."""

    name = "docker"
    manager_name = "agent"
    manager_service = "exporter"

    def __init__(self, config: LabConfig, client: Any = None) -> None:
        super().__init__(config)
        self._client = client

    @property
    def client(self) -> Any:
        """The engine the lab was started on (its address is saved in the lab directory, so that `labkit down`
        from another shell finds it); for a new lab, DOCKER_HOST's or the default one."""
        if self._client is None:
            self._client = docker_client(self._saved_engine())
        return self._client

    def _saved_engine(self) -> str | None:
        saved = self._saved()
        return saved.get("docker_host") if saved else None

    def _saved_extras(self) -> dict[str, Any]:
        return {"docker_host": self._engine_url()}

    def _services_lab(self) -> LabDir:
        return CONTAINER_LAB

    def _engine_url(self) -> str:
        return engine_url()

    # ---- the lab's containers --------------------------------------------------------------------
    def _lab_id(self) -> str | None:
        saved = self._saved()
        return saved.get("lab_id") if saved else None

    def containers(self, lab_id: str | None = None) -> list[Any]:
        """Every container of this lab (running or not), found by its label and nothing else."""
        lab_id = lab_id or self._lab_id()
        if lab_id is None:
            return []
        return list(self.client.containers.list(all=True, filters={"label": f"{LABEL_LAB}={lab_id}"}))

    def _container(self, service: str) -> Any | None:
        for container in self.containers():
            if container.labels.get(LABEL_SERVICE) == service:
                return container
        return None

    def is_running(self) -> bool:
        if self._lab_id() is None or self.stopped_by_down():  # `down` removed its containers
            return False
        agent = self._container("exporter")
        return agent is not None and agent.status == "running"

    def log_source(self, service: str) -> str:
        return f"the {service} container (`labkit logs {service}`)"

    def logs(self, service: ServiceName, lines: int = 100) -> str:
        container = self._container(service)
        if container is None:
            return ""
        raw: bytes = container.logs(tail=lines, stdout=True, stderr=True)
        return raw.decode("utf-8", errors="replace").rstrip("\n")

    def log_lines(self, service: ServiceName) -> Iterator[str]:
        # The json-file driver keeps max-file files of max-size each; `docker logs` reads them all.
        container = self._container(service)
        if container is None:
            return iter(())
        raw: bytes = container.logs(stdout=True, stderr=True)
        return iter(raw.decode("utf-8", errors="replace").splitlines())

    # ---- up ----------------------------------------------------------------------------------------
    def _socket_path(self) -> Path:
        url = self._engine_url()
        parsed = urlparse(url)
        if parsed.scheme != "unix":
            raise ConfigError(
                f"the Docker backend needs the engine's unix socket (DOCKER_HOST={url}): the lab's agent "
                "container mounts it to read restart counts and pause services"
            )
        return Path(parsed.path)

    def _images(self) -> dict[str, str]:
        cfg = self.config
        images = {
            "wrapper": cfg.service_image,
            "exporter": cfg.service_image,
            "alertmanager": cfg.alertmanager_image,
            "prometheus": cfg.prometheus_image,
        }
        if cfg.supervised_model:
            images["model"] = cfg.resolved_model_image
        return images

    def _preflight(self) -> None:
        import docker.errors

        cfg = self.config
        self._check_engine()
        if self._client is None or self._saved_engine() != self._engine_url():
            self._client = docker_client()  # a new lab runs on DOCKER_HOST's engine
        self._socket_path()
        self._check_lab_dir_is_the_labs()
        missing = []
        for image in sorted(set(self._images().values())):
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                missing.append(image)
        if missing:
            labkit_images = [m for m in missing if m.startswith("labkit/")]
            hint = (
                "build them with `labkit images build` (no registry here: `labkit images build --offline`)"
                if labkit_images
                else "pull them (`docker pull IMAGE`) or pass another image"
            )
            raise ConfigError(f"the Docker engine has no image {', '.join(missing)}; {hint}")
        self._check_images_current()
        if cfg.model_path is not None:
            cfg.resolved_model_path()

    def _check_engine(self) -> None:
        """llama-cpp-python's server is not in labkit/model (its image carries the bindings, not the
        server extra's web stack); the local backend runs it."""
        if self.config.engine == "llamacpp-server":
            raise ConfigError(
                "engine 'llamacpp-server' runs on the local backend only (the labkit/model image has no "
                "llama-cpp-python server extra); use --backend local, or run the server yourself and "
                "attach it with --openai-url URL/v1"
            )

    def _check_lab_dir_is_the_labs(self) -> None:
        """As root, `up` hands the lab directory to the containers' user: only a directory that holds
        nothing but a lab's files (or does not exist yet) may be handed over."""
        if os.geteuid() != 0 or not self.lab.root.exists():
            return
        foreign = sorted(p.name for p in self.lab.root.iterdir() if p.name not in LabDir.entries())
        if foreign:
            raise ConfigError(
                f"{self.lab.root} holds files that are not a lab's ({', '.join(foreign[:5])}); the Docker "
                "backend gives its lab directory to the containers' user, so pass a --lab-dir of its own"
            )

    def _check_images_current(self) -> None:
        """labkit's own images must hold this checkout's code; an older build would run old code silently."""
        from labkit.lab.images import IMAGE_TAGS, image_states

        wanted = set(self._images().values())
        stale = [IMAGE_TAGS[name] for name, state in image_states(self.client).items()
                 if state == "stale" and IMAGE_TAGS[name] in wanted]  # fmt: skip
        if stale:
            raise ConfigError(
                f"{', '.join(stale)} {'was' if len(stale) == 1 else 'were'} built from other code than "
                "this checkout's; rebuild with `labkit images build` (offline: `--offline`)"
            )

    def _start(self, lab_id: str, say: Callable[[str], None]) -> Callable[[], str | None]:
        self._copy_api_key()
        self._hand_over_lab_dir()
        for service, spec in self._container_specs(lab_id).items():
            container = self.client.containers.run(**spec)
            say(f"  {service:<12} container {container.short_id} ({spec['image']})")
        return lambda: self._agent_gone(lab_id)

    def _user(self) -> str:
        uid = os.geteuid()
        return f"{CONTAINER_UID}:{CONTAINER_UID}" if uid == 0 else f"{uid}:{os.getegid()}"

    def _copy_api_key(self) -> None:
        """The wrapper container reads the API key from the lab directory (0600, handed to its user with the
        rest), not from a host path it cannot see."""
        keys = (
            (self.lab.api_key_copy, self.config.api_key_file, "API key", "--api-key-file"),
            (
                self.lab.upstream_api_key_copy,
                self.config.upstream_api_key_file,
                "upstream API key",
                "--upstream-api-key-file",
            ),
        )
        for copy, given, what, flag in keys:
            if given is not None:
                write_atomically(copy, read_token_file(given, what=what, flag=flag) + "\n", mode=0o600)
            else:
                copy.unlink(missing_ok=True)  # an earlier lab's key does not linger

    def _hand_over_lab_dir(self) -> None:
        """As root, give the containers' user the lab directory (state, token, Prometheus' data); the token
        stays 0600. Anyone else runs the containers as themselves, so nothing changes hands."""
        if os.geteuid() != 0:
            return
        # Never through a link (lchown), and only what a lab directory holds (checked in preflight).
        for path in [self.lab.root, *self.lab.root.rglob("*")]:
            os.chown(path, CONTAINER_UID, CONTAINER_UID, follow_symlinks=False)

    def _container_specs(self, lab_id: str) -> dict[str, dict[str, Any]]:
        """`containers.run` keyword arguments per service, in start order."""
        from docker.types import DeviceRequest, LogConfig

        cfg = self.config
        lab_root = str(self.lab.root)
        inside = CONTAINER_LAB
        common: dict[str, Any] = {
            "detach": True,
            "network_mode": "host",
            "restart_policy": {"Name": "unless-stopped"},
            "user": self._user(),
            # The same bound as the local backend's rotated files: max-file counts the current file too.
            "log_config": LogConfig(
                type="json-file", config={"max-size": str(cfg.log_max_bytes), "max-file": str(cfg.log_files)}
            ),
            # As compose's x-hardening: no service needs a capability (ports above 1024; the agent signals
            # processes of its own uid), and no setuid binary may give one back.
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
        }
        specs: dict[str, dict[str, Any]] = {}

        def add(service: str, image: str, command: list[str], url: str, ready: str, **extra: Any) -> None:
            labels = {LABEL_LAB: lab_id, LABEL_SERVICE: service, LABEL_URL: url, LABEL_READY: ready}
            labels.update(extra.pop("labels", {}))
            env = {"LABKIT_HEALTH_URL": url + ready, **extra.pop("environment", {})}
            specs[service] = {
                **common,
                "image": image,
                "command": command,
                "name": f"labkit-{lab_id[:12]}-{service}",
                "labels": labels,
                "environment": env,
                **extra,
            }

        by_name = {spec.name: spec for spec in service_specs(cfg, inside, for_containers=True)}
        model_url = http_url(cfg.host, cfg.model_port)
        gpu: dict[str, Any] = {}
        if cfg.gpus:
            ids = None if cfg.gpus == "all" else [i.strip() for i in cfg.gpus.split(",")]
            gpu["device_requests"] = [
                DeviceRequest(count=-1 if ids is None else None, device_ids=ids, capabilities=[["gpu"]])
            ]
        if cfg.engine == "ollama" and cfg.supervised_model:
            self.lab.ollama_dir.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                os.chown(self.lab.ollama_dir, CONTAINER_UID, CONTAINER_UID)
        if cfg.engine in ("llama", "sim"):
            argv = _in_container(by_name["model"].argv)
            volumes = {}
            if cfg.model_path is not None:  # else the image's embedded SmolLM2
                host_path = cfg.resolved_model_path()
                in_container = f"/models/{host_path.name}"
                volumes[str(host_path)] = {"bind": in_container, "mode": "ro"}
                argv = [in_container if arg == str(host_path) else arg for arg in argv]
            add(
                "model", cfg.resolved_model_image, argv, model_url, "/api/tags",
                labels={LABEL_MODEL: cfg.model_name}, volumes=volumes, **gpu,
            )  # fmt: skip
        elif cfg.engine == "ollama" and cfg.supervised_model:  # the ollama/ollama image, models in a volume
            add(
                "model", cfg.resolved_model_image, ["serve"], model_url, "/api/tags",
                labels={LABEL_MODEL: cfg.model_name},
                environment={
                    "OLLAMA_HOST": f"{cfg.host}:{cfg.model_port}",
                    "OLLAMA_NUM_PARALLEL": str(cfg.num_parallel),
                    "OLLAMA_MAX_QUEUE": str(cfg.max_queue),
                    "OLLAMA_KEEP_ALIVE": cfg.keep_alive,
                    "HOME": "/home/labkit",
                },
                # Its models and keys live in the lab directory, which survives labs (pull with
                # `docker exec <container> ollama pull MODEL`).
                volumes={str(self.lab.ollama_dir): {"bind": "/home/labkit/.ollama", "mode": "rw"}},
                **gpu,
            )  # fmt: skip
        wrapper_volumes = {str(self.lab.token_file): {"bind": str(inside.token_file), "mode": "ro"}}
        if cfg.api_key_file is not None:
            wrapper_volumes[str(self.lab.api_key_copy)] = {"bind": str(inside.api_key_copy), "mode": "ro"}
        if cfg.upstream_api_key_file is not None:
            wrapper_volumes[str(self.lab.upstream_api_key_copy)] = {
                "bind": str(inside.upstream_api_key_copy),
                "mode": "ro",
            }
        add(
            "wrapper", cfg.service_image, _in_container(by_name["wrapper"].argv),
            cfg.wrapper_url, "/ready", volumes=wrapper_volumes,
        )  # fmt: skip
        # Alertmanager: its folder (alertmanager.yml, its state) and the token it sends the agent's receiver.
        add(
            "alertmanager", cfg.alertmanager_image, by_name["alertmanager"].argv[1:],
            cfg.alertmanager_url, "/-/ready",
            volumes={
                str(self.lab.alertmanager_dir): {"bind": str(inside.alertmanager_dir), "mode": "rw"},
                str(self.lab.token_file): {"bind": str(inside.token_file), "mode": "ro"},
            },
        )  # fmt: skip
        add(
            "prometheus", cfg.prometheus_image, by_name["prometheus"].argv[1:],
            cfg.prometheus_url, "/-/ready",
            volumes={str(self.lab.prometheus_dir): {"bind": str(inside.prometheus_dir), "mode": "rw"}},
        )  # fmt: skip
        socket = self._socket_path()
        agent = [
            "python", "-m", "labkit.lab.manager.docker_agent", "--lab-id", lab_id,
            "--host", cfg.host, "--port", str(cfg.exporter_port),
            "--token-file", str(inside.token_file), "--lab-dir", str(inside.root),
        ]  # fmt: skip
        if not cfg.supervised_model:
            agent += ["--external-model-url", cfg.model_url]
        add(
            "exporter", cfg.service_image, agent, cfg.exporter_url, "/metrics",
            volumes={
                lab_root: {"bind": str(inside.root), "mode": "rw"},
                str(socket): {"bind": CONTAINER_SOCKET, "mode": "rw"},
            },
            environment={"DOCKER_HOST": f"unix://{CONTAINER_SOCKET}"},
            # It signals the other containers' main processes by their host PIDs (a kill the restart
            # policy sees), and reads the engine's socket, which its group may use.
            pid_mode="host",
            group_add=[str(os.stat(socket).st_gid)] if stat.S_ISSOCK(os.stat(socket).st_mode) else [],
        )  # fmt: skip
        return specs

    def _agent_gone(self, lab_id: str) -> str | None:
        agent = None
        for container in self.containers(lab_id):
            if container.labels.get(LABEL_SERVICE) == "exporter":
                agent = container
        if agent is None:
            return "the lab's agent container is gone (removed during start-up)"
        if agent.status in ("exited", "dead") or agent.attrs.get("RestartCount"):
            return f"the lab's agent container exited during start-up:\n{self.logs('exporter', 20)}"
        return None

    # ---- down --------------------------------------------------------------------------------------
    def _teardown(self, lab_id: str) -> int:
        """Remove every container of lab `lab_id` (and only those); how many were removed."""
        import docker.errors

        try:
            containers = self.containers(lab_id)
        except BackendError:
            if self.stopped_by_down():  # `down` removed them; its engine is gone since: nothing to stop
                return 0
            raise
        except docker.errors.DockerException as exc:
            raise BackendError(f"cannot list the lab's containers: {exc}") from exc

        # Stopped together without threads (this also runs from an atexit backstop, when no new thread or
        # executor may start): SIGTERM to all, wait for each until one shared deadline, then remove. The
        # restart policy is switched off first, so nothing comes back in between.
        for container in containers:
            with contextlib.suppress(docker.errors.APIError):
                container.update(restart_policy={"Name": "no"})
            with contextlib.suppress(docker.errors.APIError):
                if container.status in ("running", "paused", "restarting"):
                    if container.status == "paused":
                        container.unpause()
                    container.kill(signal="SIGTERM")
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for container in containers:
            with contextlib.suppress(Exception):  # a timeout or a container already gone
                container.wait(timeout=max(0.1, deadline - time.monotonic()))
        for container in containers:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        for network in self.client.networks.list(filters={"label": f"{LABEL_LAB}={lab_id}"}):
            network.remove()
        return len(containers)


def _in_container(argv: list[str]) -> list[str]:
    """A local command line (`sys.executable -m ...`) as the image runs it (`python -m ...`)."""
    return ["python", *argv[1:]] if argv and argv[0] == sys.executable else list(argv)
