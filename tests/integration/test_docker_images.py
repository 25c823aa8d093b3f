"""The lab's images on a real Docker engine: built offline (debootstrap base, host wheels, no network in
any RUN step) by conftest's session fixtures `docker_client` and `lab_images`, then each run once with
host networking on 127.0.0.1. Skipped, saying why, where no engine answers and none can be started.

Up-to-date images are reused (their fingerprint label matches the checkout), so a warm run only starts
containers; a changed checkout rebuilds the Python images first (about a minute and a half on 2 cores).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import labkit
from labkit.config import DEFAULT_MODEL_NAME
from labkit.lab.base_image import OFFLINE_BASE
from labkit.lab.images import BASE_LABEL, FINGERPRINT_LABEL
from tests.conftest import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TEST_LABEL = {"io.labkit.test": "1"}


@pytest.fixture
def start(docker_client: Any) -> Iterator[Any]:
    """Starts containers labelled as this test's, and removes every one of them afterwards."""
    started: list[Any] = []

    def run(image: str, command: list[str], **options: Any) -> Any:
        container = docker_client.containers.run(image, command, detach=True, labels=TEST_LABEL, **options)
        started.append(container)
        return container

    try:
        yield run
    finally:
        for container in started:
            container.remove(force=True)


def finished(container: Any, timeout_s: float) -> tuple[int, str]:
    """Exit status and output of a container that runs to its end."""
    status = container.wait(timeout=timeout_s)["StatusCode"]
    return int(status), container.logs().decode()


def health_of(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"].get("Health", {}).get("Status", "none"))


def test_service_image_imports_the_wrapper_as_10001_without_host_packages(
    lab_images: dict[str, str], start: Any
) -> None:
    script = (
        "import os, shutil, importlib.util, labkit.services.wrapper, labkit.lab, labkit.config, docker;"
        "print(os.getuid(), os.getgid(), os.getcwd(), bool(shutil.which('stress-ng')),"
        " [m for m in ('pandas', 'matplotlib', 'papermill', 'nbconvert') if importlib.util.find_spec(m)],"
        " (labkit.config.stack_dir() / 'secrets').exists())"
    )
    container = start(lab_images["service"], ["python", "-c", script], network_mode="none")
    status, output = finished(container, 60)
    assert status == 0, output
    assert output.split("\n")[0] == "10001 10001 /home/labkit True [] False"


def test_images_are_labelled_with_their_version_and_sources(
    lab_images: dict[str, str], docker_client: Any
) -> None:
    for name, tag in lab_images.items():
        labels = docker_client.images.get(tag).labels
        assert labels["org.opencontainers.image.version"] == labkit.__version__
        assert labels["org.opencontainers.image.title"] == f"labkit-{name}"
        # Equality with image_fingerprint() would fail whenever the checkout is edited during the run.
        assert re.fullmatch(r"[0-9a-f]{64}", labels[FINGERPRINT_LABEL])
        assert labels[BASE_LABEL] == OFFLINE_BASE


def test_model_image_serves_smollm2_and_turns_healthy(lab_images: dict[str, str], start: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    container = start(
        lab_images["model"],
        [
            "python",
            "-m",
            "labkit.services.modelserver",
            "--engine",
            "llama",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        network_mode="host",
        environment={"LABKIT_HEALTH_URL": f"{url}/api/tags"},
    )

    def model_listed() -> bool:
        container.reload()
        assert container.status != "exited", container.logs().decode()[-2000:]
        names = [model["name"] for model in httpx.get(f"{url}/api/tags", timeout=2).json()["models"]]
        return DEFAULT_MODEL_NAME in names

    wait_for(model_listed, timeout_s=120, what=f"{DEFAULT_MODEL_NAME} in /api/tags")
    response = httpx.post(
        f"{url}/api/generate",
        json={"model": DEFAULT_MODEL_NAME, "prompt": "Hello", "stream": False, "options": {"num_predict": 4}},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.json()["done"] is True
    wait_for(lambda: health_of(container) == "healthy", timeout_s=60, what="the model container's health")


def test_prometheus_image_takes_flags_and_turns_healthy(lab_images: dict[str, str], start: Any) -> None:
    port = free_port()
    container = start(
        lab_images["prometheus"],
        [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        network_mode="host",
        environment={"LABKIT_HEALTH_URL": f"http://127.0.0.1:{port}/-/ready"},
    )
    wait_for(
        lambda: health_of(container) == "healthy", timeout_s=60, what="the prometheus container's health"
    )
    assert httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200


def test_without_a_health_url_the_check_fails_and_says_why(lab_images: dict[str, str], start: Any) -> None:
    container = start(lab_images["service"], ["sleep", "30"], network_mode="none")

    def last_check() -> dict[str, Any] | None:
        container.reload()
        log = container.attrs["State"].get("Health", {}).get("Log") or []
        return log[-1] if log else None

    check = wait_for(last_check, timeout_s=20, what="a first health check")
    assert isinstance(check, dict)
    assert check["ExitCode"] != 0
    assert "LABKIT_HEALTH_URL" in check["Output"]
    assert health_of(container) == "starting"  # failures in the 60 s start period do not count yet
