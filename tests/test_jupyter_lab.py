"""`make lab`'s launcher (labkit.runner.jupyter_lab): loopback only, a token in a 0600 config file that a
user's Jupyter config cannot blank, `--allow-root` only as root, and clear errors before anything starts."""

from __future__ import annotations

import json
import socket
import stat
import sys
from pathlib import Path

import pytest

from labkit.errors import ConfigError
from labkit.runner import jupyter_lab
from labkit.runner.jupyter_lab import JUPYTER_HOST, jupyter_lab_command, prepare_jupyter_lab

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def jupyterlab_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether JupyterLab is installed is not what these tests check (the integration test starts it)."""
    monkeypatch.setattr(jupyter_lab.importlib.util, "find_spec", lambda name: object())


def test_allow_root_is_passed_as_root_and_only_then(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    as_root = jupyter_lab_command(config, notebook_dir=NOTEBOOKS, port=8888, as_root=True)
    as_user = jupyter_lab_command(config, notebook_dir=NOTEBOOKS, port=8888, as_root=False)
    assert "--allow-root" in as_root and "--allow-root" not in as_user
    for command in (as_root, as_user):
        assert command[:3] == [sys.executable, "-m", "jupyterlab"]
        assert f"--ip={JUPYTER_HOST}" in command and JUPYTER_HOST == "127.0.0.1"
        # the printed URL must be the one that answers: no silent move to another port
        assert "--ServerApp.port_retries=0" in command and "--port=8888" in command
        assert f"--config={config}" in command
        assert not any("token" in part for part in command)  # not on the command line: `ps` shows it


def test_each_start_writes_a_new_token_readable_only_by_its_owner(
    tmp_path: Path, jupyterlab_found: None
) -> None:
    first = prepare_jupyter_lab(notebook_dir=NOTEBOOKS, port=_free_port(), lab_dir=tmp_path, as_root=False)
    second = prepare_jupyter_lab(notebook_dir=NOTEBOOKS, port=_free_port(), lab_dir=tmp_path, as_root=True)
    assert first.config_file == second.config_file and first.config_file.is_relative_to(tmp_path)
    assert stat.S_IMODE(second.config_file.stat().st_mode) == 0o600
    assert json.loads(second.config_file.read_text()) == {"IdentityProvider": {"token": second.token}}
    assert first.token != second.token and len(second.token) >= 32
    assert second.url == f"http://127.0.0.1:{second.port}/lab?token={second.token}"
    assert "--allow-root" in second.command and "--allow-root" not in first.command


def test_a_taken_port_is_an_error_that_names_the_way_out(tmp_path: Path, jupyterlab_found: None) -> None:
    with socket.socket() as taken:
        taken.bind((JUPYTER_HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"port {port} is in use.*JUPYTER_PORT={port + 1}"):
            prepare_jupyter_lab(notebook_dir=NOTEBOOKS, port=port, lab_dir=tmp_path)
    assert not (tmp_path / "jupyter").exists()  # nothing written


def test_missing_jupyterlab_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jupyter_lab.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"JupyterLab is not installed.*make lab"):
        prepare_jupyter_lab(notebook_dir=NOTEBOOKS, port=_free_port(), lab_dir=tmp_path)


def test_main_prints_the_error_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert jupyter_lab.main(["--notebook-dir", str(tmp_path / "none"), "--lab-dir", str(tmp_path)]) == 1
    assert "make lab:" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((JUPYTER_HOST, 0))
        return int(sock.getsockname()[1])
