"""stack/docker-compose.yml and its generated files: Compose accepts it, every labkit service carries the
lab's labels, a healthcheck and a restart policy, nothing is published beyond 127.0.0.1, and the committed
Prometheus config and rules are what generators.compose generates now (promtool accepts both).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from generators.compose import (
    COMPOSE_LAB_ID,
    COMPOSE_PORTS,
    COMPOSE_RULES_DIR,
    COMPOSE_SCRAPE_INTERVAL_S,
    compose_files,
    main,
    stale_compose_files,
)
from generators.dashboard import DASHBOARD_FILE
from labkit.config import stack_dir

STACK = stack_dir()
COMPOSE_FILE = STACK / "docker-compose.yml"
LABKIT_SERVICES = ("model", "wrapper", "prometheus", "exporter")
LABELS = ("io.labkit.lab", "io.labkit.service", "io.labkit.url", "io.labkit.ready_path")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return promtool


def _compose_command() -> list[str]:
    """`docker compose` (the v2 plugin) where it works, else Debian's `docker-compose` (v1.29)."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is not None:
        return [legacy]
    pytest.skip("neither `docker compose` nor `docker-compose` is installed (Debian package docker-compose)")


# ---- generated files -------------------------------------------------------------------------------


def test_committed_prometheus_config_and_rules_are_what_the_code_generates() -> None:
    assert stale_compose_files() == [], (
        "stale generated files: regenerate them with python -m generators.compose"
    )


def test_check_names_a_stale_file_and_writing_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--stack-dir", str(tmp_path), "--check"]) == 1  # nothing written yet
    assert main(["--stack-dir", str(tmp_path)]) == 0
    assert main(["--stack-dir", str(tmp_path), "--check"]) == 0
    rules = tmp_path / "prometheus/compose/rules/slo.yml"
    rules.write_text(rules.read_text(encoding="utf-8") + "# edited by hand\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["--stack-dir", str(tmp_path), "--check"]) == 1
    assert f"stale: {rules}" in capsys.readouterr().err


def test_scrape_targets_are_the_compose_services_at_their_labelled_urls(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((STACK / "prometheus/compose/prometheus.yml").read_text(encoding="utf-8"))
    assert config["global"]["external_labels"] == {"lab": COMPOSE_LAB_ID}
    assert config["rule_files"] == [f"{COMPOSE_RULES_DIR}/*.yml"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {name: [f"{name}:{port}"] for name, port in COMPOSE_PORTS.items()}
    for name, port in COMPOSE_PORTS.items():
        assert compose["services"][name]["labels"]["io.labkit.url"] == f"http://{name}:{port}"


def test_prometheus_mounts_the_generated_config_and_rules_where_the_config_reads_them(
    compose: dict[str, Any],
) -> None:
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus/compose/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    assert f"./prometheus/compose/rules:{COMPOSE_RULES_DIR}:ro" in volumes
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["services"]["prometheus"]["command"]
    for relative in compose_files():
        assert (STACK / relative).is_file(), relative


def test_promtool_accepts_the_compose_config_and_rules(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = STACK / "prometheus/compose/rules/slo.yml"
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The config names the rules by their path inside the container; point it at the committed folder.
    config = (STACK / "prometheus/compose/prometheus.yml").read_text(encoding="utf-8")
    path = tmp_path / "prometheus.yml"
    path.write_text(config.replace(COMPOSE_RULES_DIR, str(rules.parent)), encoding="utf-8")
    checked = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout and "rules found" in checked.stdout


# ---- the compose file --------------------------------------------------------------------------------


def test_compose_accepts_the_file(tmp_path: Path) -> None:
    command = _compose_command()
    copy = tmp_path / "stack"
    shutil.copytree(STACK, copy, ignore=shutil.ignore_patterns("secrets"))
    (copy / "secrets").mkdir(mode=0o700)
    (copy / "secrets/labkit_token").write_text("a-token-for-the-test\n", encoding="utf-8")
    result = subprocess.run(
        [*command, "-f", str(copy / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_refuses_an_unknown_option(tmp_path: Path) -> None:
    # The check above proves something only if Compose validates what it reads.
    command = _compose_command()
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  model:\n    image: x\n    privileged_please: true\n", encoding="utf-8")
    result = subprocess.run(
        [*command, "-f", str(broken), "config", "-q"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode != 0


def test_the_five_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*LABKIT_SERVICES, "grafana"}


@pytest.mark.parametrize("name", [*LABKIT_SERVICES, "grafana"])
def test_every_service_has_the_lab_labels_a_healthcheck_and_a_restart_policy(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    labels = service["labels"]
    for label in LABELS:
        assert labels.get(label), (name, label)
    assert labels["io.labkit.lab"] == COMPOSE_LAB_ID and labels["io.labkit.service"] == name
    assert labels["io.labkit.ready_path"].startswith("/")
    assert service["restart"] in ("unless-stopped", "on-failure")
    check = service["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL") and check["interval"] and check["retries"] >= 1
    if name != "grafana":
        # The labkit images' HEALTHCHECK reads LABKIT_HEALTH_URL: the service's readiness URL on loopback,
        # as labkit's Docker backend sets it.
        url = service["environment"]["LABKIT_HEALTH_URL"]
        assert url == f"http://127.0.0.1:{COMPOSE_PORTS[name]}{labels['io.labkit.ready_path']}", url
        assert "LABKIT_HEALTH_URL" in check["test"][-1]
    else:
        assert "http://127.0.0.1:3000/api/health" in check["test"]


def test_the_model_label_names_the_model_the_wrapper_asks_for(compose: dict[str, Any]) -> None:
    model = compose["services"]["model"]
    name = model["labels"]["io.labkit.model_name"]
    assert model["command"][model["command"].index("--model-name") + 1] == name
    wrapper = compose["services"]["wrapper"]["command"]
    assert wrapper[wrapper.index("--model") + 1] == name
    assert (
        wrapper[wrapper.index("--backend-url") + 1] == compose["services"]["model"]["labels"]["io.labkit.url"]
    )


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
            published += 1
        assert "network_mode" not in service, name  # compose's bridge network, never the host's
    assert published == 5


def test_no_service_is_privileged_and_each_drops_every_capability(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert not service.get("privileged", False), name
        assert service["cap_drop"] == ["ALL"] and "cap_add" not in service, name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_only_the_exporter_gets_the_docker_socket_and_the_hosts_pids(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        mounts = " ".join(service.get("volumes", []))
        assert ("docker.sock" in mounts) == (name == "exporter"), name
        assert (service.get("pid") == "host") == (name == "exporter"), name
    exporter = compose["services"]["exporter"]
    assert exporter["group_add"] == ["${DOCKER_GID:-999}"]
    command = exporter["command"]
    assert command[:3] == ["python", "-m", "labkit.lab.manager.docker_agent"]
    assert command[command.index("--lab-id") + 1] == COMPOSE_LAB_ID
    assert command[command.index("--port") + 1] == str(COMPOSE_PORTS["exporter"])


def test_the_lab_token_is_a_secret_from_a_file_for_the_wrapper_and_the_exporter(
    compose: dict[str, Any],
) -> None:
    assert compose["secrets"] == {"labkit_token": {"file": "${LABKIT_TOKEN_FILE:-./secrets/labkit_token}"}}
    for name in ("wrapper", "exporter"):
        service = compose["services"][name]
        assert service["secrets"] == ["labkit_token"], name
        assert "/run/secrets/labkit_token" in service["command"], name
    for name in ("model", "prometheus", "grafana"):
        assert "secrets" not in compose["services"][name], name


def test_the_secret_folder_is_never_committed(tmp_path: Path) -> None:
    git = shutil.which("git")
    root = STACK.parent
    if git is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        [git, "check-ignore", "-q", "stack/secrets/labkit_token"], cwd=root, check=False, timeout=30
    )
    assert result.returncode == 0, "stack/secrets/ must be in .gitignore"


def test_named_volumes_for_data_and_read_only_mounts_for_configuration(compose: dict[str, Any]) -> None:
    assert set(compose["volumes"]) == {"prometheus-data", "grafana-data"}
    assert "prometheus-data:/prometheus" in compose["services"]["prometheus"]["volumes"]
    grafana = compose["services"]["grafana"]["volumes"]
    assert "grafana-data:/var/lib/grafana" in grafana
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):  # configuration from this folder: never writable by a container
                assert volume.endswith(":ro"), (name, volume)
                assert (STACK / source).exists(), (name, volume)


def test_images_are_overridable_and_grafana_is_pinned(compose: dict[str, Any]) -> None:
    images = {name: service["image"] for name, service in compose["services"].items()}
    assert images["model"] == "${LABKIT_MODEL_IMAGE:-labkit/model:0.1.0}"
    assert images["wrapper"] == images["exporter"] == "${LABKIT_SERVICE_IMAGE:-labkit/service:0.1.0}"
    assert images["prometheus"] == "${LABKIT_PROMETHEUS_IMAGE:-labkit/prometheus:0.1.0}"
    default = images["grafana"].removeprefix("${LABKIT_GRAFANA_IMAGE:-").removesuffix("}")
    repository, tag = default.split(":")
    assert repository == "grafana/grafana" and tag.startswith("11.") and len(tag.split(".")) == 3


def test_grafana_is_provisioned_read_only_with_anonymous_access_off(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "${GRAFANA_ANONYMOUS_ENABLED:-false}"
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./grafana/dashboards:/etc/grafana/dashboards:ro" in grafana["volumes"]
    providers = yaml.safe_load(
        (STACK / "grafana/provisioning/dashboards/labkit.yml").read_text(encoding="utf-8")
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/etc/grafana/dashboards/" + Path(DASHBOARD_FILE).name


def test_grafanas_datasource_is_the_compose_prometheus_at_the_scrape_interval() -> None:
    provisioned = yaml.safe_load(
        (STACK / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )
    (source,) = provisioned["datasources"]
    assert (
        source["type"] == "prometheus" and source["url"] == f"http://prometheus:{COMPOSE_PORTS['prometheus']}"
    )
    # Grafana's $__rate_interval is only right when Grafana knows the scrape interval.
    assert source["jsonData"]["timeInterval"] == f"{COMPOSE_SCRAPE_INTERVAL_S:g}s"
