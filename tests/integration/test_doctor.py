"""`labkit doctor` on this machine for real: green as set up; with Prometheus taken off PATH it names the
fix and exits 1, and `make run` stops there before anything starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.llama]

ROOT = Path(__file__).resolve().parents[2]
_PORT_FIELDS = ("model_port", "wrapper_port", "prometheus_port", "exporter_port", "alertmanager_port")


@pytest.fixture
def lab_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a lab in a temporary lab directory on free ports, runs under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_")}
    ports = zip(_PORT_FIELDS, free_ports(len(_PORT_FIELDS)), strict=True)
    env.update({f"LABKIT_{field.upper()}": str(port) for field, port in ports})
    env.update(
        LABKIT_LAB_DIR=str(tmp_path / "lab"),
        LABKIT_OUT_DIR=str(tmp_path / "runs"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


def path_without(tmp_path: Path, binary: str) -> str:
    """A PATH of one folder with links to everything on the real PATH except `binary`."""
    folder = tmp_path / "path"
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            link = folder / entry.name
            if entry.name != binary and not link.exists() and not link.is_symlink():
                link.symlink_to(entry.path)
    assert shutil.which(binary, path=str(folder)) is None
    return str(folder)


def doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labkit.cli", "doctor", "--json"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


def test_doctor_is_green_on_this_machine(lab_env: dict[str, str]) -> None:
    done = doctor(lab_env)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert all(c["status"] != "FAIL" for c in checks.values()), checks
    for needed in ("python", "prometheus", "alertmanager", "model file", "llama engine", "disk"):
        assert checks[needed]["status"] == "OK", checks[needed]
    assert checks["gpu"]["status"] in ("OK", "INFO")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_without_prometheus_doctor_names_the_fix_and_make_run_starts_nothing(
    tmp_path: Path, lab_env: dict[str, str]
) -> None:
    env = {**lab_env, "PATH": path_without(tmp_path, "prometheus")}
    done = doctor(env)
    assert done.returncode == 1, done.stdout + done.stderr
    prometheus = next(c for c in json.loads(done.stdout) if c["name"] == "prometheus")
    assert prometheus["status"] == "FAIL"
    assert "apt-get install prometheus" in prometheus["fix"]

    # `make run` as the Makefile has it, its setup taken as done (-o setup) and its labkit this checkout's.
    bin_dir = tmp_path / "venv-bin"
    bin_dir.mkdir()
    (bin_dir / "labkit").write_text(f'#!/bin/sh\nexec {sys.executable} -m labkit.cli "$@"\n')
    (bin_dir / "labkit").chmod(0o755)
    before = {p.pid for p in psutil.process_iter()}
    project_runs = ROOT / "reports" / "runs"
    runs_before = set(project_runs.iterdir()) if project_runs.is_dir() else set()
    made = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "run", "-o", "setup", f"BIN={bin_dir}"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    output = made.stdout + made.stderr
    assert made.returncode != 0, output
    assert f"{bin_dir}/labkit doctor" in output
    assert "FAIL  prometheus" in output and "-> fix:" in output
    assert "labkit run kill_and_recover" not in output  # make stopped at the doctor
    # Nothing started: no lab directory, no run, no process of a lab left behind.
    assert not Path(env["LABKIT_LAB_DIR"]).exists()
    assert not Path(env["LABKIT_OUT_DIR"]).exists()
    assert (set(project_runs.iterdir()) if project_runs.is_dir() else set()) == runs_before
    started = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid not in before]
    assert not [p for p in started if env["LABKIT_LAB_DIR"] in " ".join(p.info["cmdline"] or [])]
