"""A Docker lab that `labkit down` stopped needs nothing of its engine afterwards (issue 20, point 4): with
the engine stopped, `labkit status` says no lab runs, a local `labkit up` in the same lab directory starts,
and `labkit down` of the old lab is a no-op, not an error about the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from labkit.lab.contract import LABEL_LAB
from labkit.lab.labdir import LabDir
from tests.conftest import sim_lab_config
from tests.dockerd import engine_stopped

pytestmark = pytest.mark.integration

PORTS = ("model_port", "wrapper_port", "prometheus_port", "exporter_port", "alertmanager_port")


def _cli(lab_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labkit.cli", "--lab-dir", str(lab_dir), *args],
        capture_output=True, text=True, timeout=240, env=os.environ.copy(), check=False,
    )  # fmt: skip


def test_a_stopped_docker_lab_needs_no_engine(
    docker_client: Any, lab_images: dict[str, str], tmp_path: Path
) -> None:
    cfg = sim_lab_config(tmp_path, backend="docker")
    ports = [f"--{name.replace('_', '-')}={getattr(cfg, name)}" for name in PORTS]
    up = _cli(cfg.lab_dir, "up", "--backend", "docker", "--engine", "sim", *ports)
    try:
        assert up.returncode == 0, up.stderr
        down = _cli(cfg.lab_dir, "down")
        assert down.returncode == 0, down.stderr
        lab_id = json.loads(LabDir(cfg.lab_dir).config_file.read_text())["lab_id"]
        assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_LAB}={lab_id}"}) == []
        assert LabDir(cfg.lab_dir).read_state()["running"] is False

        with engine_stopped(os.environ["DOCKER_HOST"], tmp_path / "dockerd.log"):
            status = _cli(cfg.lab_dir, "status")
            assert status.returncode == 1 and "no lab is running in" in status.stderr, status.stderr
            again = _cli(cfg.lab_dir, "down")
            assert again.returncode == 0, again.stderr
            local = _cli(cfg.lab_dir, "up", "--engine", "sim", *ports)
            try:
                assert local.returncode == 0, local.stderr
                assert "ready" in _cli(cfg.lab_dir, "status").stdout
            finally:
                assert _cli(cfg.lab_dir, "down").returncode == 0
    finally:  # a failed step must not leave the lab's containers behind
        saved = LabDir(cfg.lab_dir).config_file
        if saved.exists() and json.loads(saved.read_text()).get("backend") == "docker":
            label = f"{LABEL_LAB}={json.loads(saved.read_text())['lab_id']}"
            for container in docker_client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
