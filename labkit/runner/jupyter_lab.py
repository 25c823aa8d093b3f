"""`make lab`: JupyterLab on the notebooks with the `labkit` kernel, listening on 127.0.0.1 only, behind a new
token each start, kept in the lab directory (0600) and printed once with the URL to open.

The token and the address go into a config file of this start (`--config`: loaded after the user's own
Jupyter config, so a `c.IdentityProvider.token = ""` there cannot open a password-less server). As root (a
fresh VM, a container) JupyterLab refuses to start without `--allow-root`: it is passed then, and only then.

    python -m labkit.runner.jupyter_lab [--port 8888] [--notebook-dir notebooks] [--lab-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from labkit.atomic import write_atomically
from labkit.config import resolve_lab_dir
from labkit.errors import ConfigError, LabkitError
from labkit.sockets import http_url, port_is_free

__all__ = ["JUPYTER_HOST", "JUPYTER_PORT", "JupyterLabLaunch", "jupyter_lab_command", "prepare_jupyter_lab"]

JUPYTER_HOST = "127.0.0.1"
JUPYTER_PORT = 8888
# Under the lab directory: this start's config (token included), mode 0600.
_CONFIG_FILE = Path("jupyter") / "jupyter_lab_config.json"


@dataclass(frozen=True)
class JupyterLabLaunch:
    """One start of JupyterLab: its command line, its config file (0600) and the URL with the token."""

    command: list[str]
    config_file: Path
    token: str
    port: int

    @property
    def url(self) -> str:
        return f"{http_url(JUPYTER_HOST, self.port)}/lab?token={self.token}"


def running_as_root() -> bool:
    return os.geteuid() == 0


def jupyter_lab_command(config_file: Path, *, notebook_dir: Path, port: int, as_root: bool) -> list[str]:
    """JupyterLab's command line: this interpreter, loopback only, no browser, no other port when `port` is
    taken (the URL printed must be the one that answers), `--allow-root` only as root."""
    command = [
        sys.executable, "-m", "jupyterlab",
        f"--config={config_file}",
        f"--notebook-dir={notebook_dir}",
        f"--ip={JUPYTER_HOST}",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--no-browser",
    ]  # fmt: skip
    if as_root:
        command.append("--allow-root")
    return command


def prepare_jupyter_lab(
    *, notebook_dir: Path, port: int = JUPYTER_PORT, lab_dir: Path | None = None, as_root: bool | None = None
) -> JupyterLabLaunch:
    """Check what JupyterLab needs (the package, the notebooks, a free port), write this start's config with
    a new token under the lab directory (0600), and return its command line; nothing is started."""
    if importlib.util.find_spec("jupyterlab") is None:
        raise ConfigError(
            f"JupyterLab is not installed in {sys.prefix}; run `make lab` (it installs the notebook extra) "
            "or `pip install -e '.[notebook]'`"
        )
    if not notebook_dir.is_dir():
        raise ConfigError(
            f"no notebook folder {notebook_dir}; run from the project's root, or pass --notebook-dir"
        )
    if not port_is_free(JUPYTER_HOST, port):
        raise ConfigError(
            f"port {port} is in use by another program (another JupyterLab?); start on another one "
            f"(`make lab JUPYTER_PORT={port + 1}`, or --port) or stop that program"
        )
    token = secrets.token_urlsafe(32)
    config_file = resolve_lab_dir(lab_dir) / _CONFIG_FILE
    write_atomically(config_file, json.dumps({"IdentityProvider": {"token": token}}) + "\n", mode=0o600)
    root = running_as_root() if as_root is None else as_root
    command = jupyter_lab_command(config_file, notebook_dir=notebook_dir.resolve(), port=port, as_root=root)
    return JupyterLabLaunch(command=command, config_file=config_file, token=token, port=port)


def main(argv: list[str] | None = None) -> int:
    from labkit.runner.kernel import ensure_kernelspec

    ap = argparse.ArgumentParser(prog="python -m labkit.runner.jupyter_lab", description=__doc__)
    ap.add_argument("--port", type=int, default=JUPYTER_PORT, help=f"[{JUPYTER_PORT}]")
    ap.add_argument("--notebook-dir", type=Path, default=Path("notebooks"), help="[notebooks]")
    ap.add_argument("--lab-dir", type=Path, default=None, help="[LABKIT_LAB_DIR or $XDG_STATE_HOME/labkit]")
    args = ap.parse_args(argv)
    try:
        launch = prepare_jupyter_lab(notebook_dir=args.notebook_dir, port=args.port, lab_dir=args.lab_dir)
        print(f"kernel: {ensure_kernelspec()}")
    except LabkitError as exc:
        print(f"make lab: {exc}", file=sys.stderr)
        return 1
    print(f"JupyterLab: open {launch.url}")
    print(
        f"  (the token changes at each start; this one is also in {launch.config_file}, readable only by you)"
    )
    sys.stdout.flush()
    os.execv(sys.executable, launch.command)  # JupyterLab takes this process: Ctrl-C stops it as usual
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
