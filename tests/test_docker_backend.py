"""The Docker backend's container specifications, without an engine: what each container sees and runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labkit.config import LabConfig
from labkit.errors import ConfigError
from labkit.lab.contract import LABEL_LAB, LABEL_SERVICE
from labkit.lab.docker import CONTAINER_LAB, DockerBackend
from labkit.lab.manager.docker_agent import ContainerService
from tests.conftest import sim_lab_config


def _specs(config: LabConfig) -> dict[str, dict[str, Any]]:
    return DockerBackend(config, client=object())._container_specs("0123456789abcdef0123")


def test_containers_see_the_lab_directory_at_a_path_of_their_own(engine_socket: Path, tmp_path: Path) -> None:
    # A lab under a folder the image also has with another owner (like /root) must still be reachable.
    cfg = sim_lab_config(tmp_path / "root-like" / "deep")
    specs = _specs(cfg)
    assert list(specs) == ["model", "wrapper", "alertmanager", "prometheus", "exporter"]
    host_lab = str(cfg.lab_dir)
    for name, spec in specs.items():
        binds = [v["bind"] for v in spec.get("volumes", {}).values()]
        assert all(b.startswith(("/lab", "/var/run/docker.sock")) for b in binds), (name, binds)
        assert not any(host_lab in arg for arg in spec["command"]), (name, spec["command"])
        assert spec["labels"][LABEL_LAB] == "0123456789abcdef0123" and spec["labels"][LABEL_SERVICE] == name
        assert spec["network_mode"] == "host" and spec["restart_policy"] == {"Name": "unless-stopped"}
        assert not spec["user"].startswith("0:")
        assert spec["environment"]["LABKIT_HEALTH_URL"].startswith("http://127.0.0.1:")
    assert f"--admin-token-file={CONTAINER_LAB.token_file}" in " ".join(specs["wrapper"]["command"]).replace(
        "--admin-token-file ", "--admin-token-file="
    )
    assert (
        f"--config.file={CONTAINER_LAB.prometheus_dir / 'prometheus.yml'}" in specs["prometheus"]["command"]
    )
    # Alertmanager: the image's binary, the lab's config and state, its token read-only, no gossip.
    alertmanager = specs["alertmanager"]
    assert alertmanager["image"].startswith("labkit/alertmanager:")
    assert alertmanager["command"] == [
        f"--config.file={CONTAINER_LAB.alertmanager_dir / 'alertmanager.yml'}",
        f"--storage.path={CONTAINER_LAB.alertmanager_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{cfg.alertmanager_port}",
        "--cluster.listen-address=",
        "--log.level=warn",
        "--log.format=json",
    ]
    assert alertmanager["volumes"][str(cfg.lab_dir / "token")] == {"bind": "/lab/token", "mode": "ro"}
    assert alertmanager["volumes"][str(cfg.lab_dir / "alertmanager")]["bind"] == "/lab/alertmanager"
    agent = specs["exporter"]
    assert agent["pid_mode"] == "host"
    assert agent["volumes"][str(engine_socket)]["bind"] == "/var/run/docker.sock"
    # Only the agent gets the engine's socket and the host's PID namespace.
    for name in ("model", "wrapper", "alertmanager", "prometheus"):
        assert "pid_mode" not in specs[name] and str(engine_socket) not in specs[name].get("volumes", {})


def test_a_model_file_of_the_host_is_mounted_read_only_under_models(
    engine_socket: Path, tmp_path: Path
) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 16)
    spec = _specs(sim_lab_config(tmp_path, engine="llama", model_path=model))["model"]
    assert spec["volumes"] == {str(model): {"bind": "/models/tiny.gguf", "mode": "ro"}}
    command = spec["command"]
    assert command[command.index("--model-path") + 1] == "/models/tiny.gguf"


def test_the_api_key_is_copied_into_the_lab_and_mounted_read_only(
    engine_socket: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    key_file.chmod(0o600)
    cfg = sim_lab_config(tmp_path, api_key_file=key_file)
    backend = DockerBackend(cfg, client=object())
    backend.lab.root.mkdir(parents=True)
    backend._copy_api_key()
    copy = backend.lab.api_key_copy
    assert copy.read_text().strip() == "s3cret-key" and copy.stat().st_mode & 0o777 == 0o600
    spec = backend._container_specs("0123456789abcdef0123")["wrapper"]
    command = spec["command"]
    inside = command[command.index("--api-key-file") + 1]
    assert inside == str(CONTAINER_LAB.api_key_copy)
    assert spec["volumes"][str(copy)] == {"bind": inside, "mode": "ro"}
    assert "s3cret-key" not in " ".join(command)
    backend._mark_stopped()  # `down`: the copy goes with the lab
    assert not copy.exists()
    backend._copy_api_key()
    # A later lab without a key leaves no copy of the old one behind.
    DockerBackend(sim_lab_config(tmp_path), client=object())._copy_api_key()
    assert not copy.exists()


def test_the_embedded_model_is_the_images_own(engine_socket: Path, tmp_path: Path) -> None:
    spec = _specs(sim_lab_config(tmp_path, engine="llama"))["model"]
    assert "--model-path" not in spec["command"] and spec["image"].startswith("labkit/model:")
    assert spec["command"][:3] == ["python", "-m", "labkit.services.modelserver"]


def test_gpus_are_requested_for_the_model_container_only(engine_socket: Path, tmp_path: Path) -> None:
    specs = _specs(sim_lab_config(tmp_path, gpus="0,1"))
    (request,) = specs["model"]["device_requests"]
    assert request["DeviceIDs"] == ["0", "1"] and request["Capabilities"] == [["gpu"]]
    assert all("device_requests" not in specs[n] for n in ("wrapper", "prometheus", "exporter"))
    (every,) = _specs(sim_lab_config(tmp_path, gpus="all"))["model"]["device_requests"]
    assert every["Count"] == -1


def test_bad_gpus_and_a_tcp_engine_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="--gpus takes"):
        sim_lab_config(tmp_path, gpus="first")
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    with pytest.raises(ConfigError, match="unix socket"):
        DockerBackend(sim_lab_config(tmp_path), client=object())._socket_path()


class _FakeContainer:
    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs
        self.labels = {
            LABEL_SERVICE: "model",
            "io.labkit.url": "http://127.0.0.1:1",
            "io.labkit.ready_path": "/",
        }
        self.short_id = "abc"


def _attrs(
    status: str, restarts: int = 0, started: str = "2026-11-27T21:00:00.5Z", pid: int = 42
) -> dict[str, Any]:
    return {
        "State": {"Status": status, "Pid": pid, "StartedAt": started, "ExitCode": 0},
        "RestartCount": restarts,
    }


def test_container_state_follows_docker() -> None:
    changes: list[str] = []
    svc = ContainerService(_FakeContainer(_attrs("running")), lambda: changes.append(svc.state))
    assert svc.state == "starting" and svc.pid == 42 and svc.started_at == pytest.approx(1795813200.5)
    svc.ever_ready, svc.state = True, "ready"
    svc._apply(_attrs("paused"))
    assert svc.state == "paused"
    svc._apply(_attrs("running"))
    assert svc.state == "ready"  # unpaused: the probe goes on from there
    svc._apply(_attrs("restarting", restarts=1, pid=0))
    assert svc.state == "restarting" and svc.pid is None and svc.restarts == 1
    svc._apply(_attrs("running", restarts=1, started="2026-11-27T21:00:09Z", pid=43))
    assert svc.state == "starting" and svc.pid == 43  # a new process is probed again
    svc._apply(_attrs("exited", restarts=1, pid=0))
    assert svc.state == "stopped" and svc.pid is None


def test_a_container_that_never_became_ready_fails_after_three_restarts() -> None:
    svc = ContainerService(_FakeContainer(_attrs("running")), lambda: None)
    svc._apply(_attrs("running", restarts=3, started="2026-11-27T21:00:05Z"))
    assert svc.state == "failed" and "restarted 3 times" in svc.detail


def test_an_agent_that_restarts_does_not_fail_a_service_killed_before() -> None:
    """A new agent finds a container Docker restarted 5 times over the lab's life: that is history, not a
    service that never starts."""
    svc = ContainerService(_FakeContainer(_attrs("running", restarts=5)), lambda: None)
    assert svc.state == "starting" and svc.restarts == 5
    svc._apply(_attrs("running", restarts=7, started="2026-11-27T21:00:05Z"))
    assert svc.state == "starting"
    svc._apply(_attrs("running", restarts=8, started="2026-11-27T21:00:09Z"))
    assert svc.state == "failed" and "restarted 3 times" in svc.detail
