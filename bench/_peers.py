"""Peer tools the benchmarks run side by side with the lab, each in a virtual environment of its own.

A peer is installed from PyPI into `~/.cache/labkit/bench-peers/<name>-<version>` (or `$LABKIT_BENCH_PEERS`)
the first time a full `make bench` needs it, and reused after: never into the lab's own environment, never a
test dependency. An environment whose installation did not finish has no marker file and is made again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PEERS_HOME = Path(os.environ.get("LABKIT_BENCH_PEERS", Path.home() / ".cache" / "labkit" / "bench-peers"))
_MARKER = ".labkit-installed"


def folder_mb(path: Path) -> float:
    """Disk use of a folder in MB (what a peer's environment costs to install)."""
    total = sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 1e6


def peer_venv(name: str, requirements: list[str], log: Path) -> Path:
    """The `bin/` folder of the peer's virtual environment, installing it first when it is not there yet."""
    home = PEERS_HOME / name
    if (home / _MARKER).is_file():
        return home / "bin"
    shutil.rmtree(home, ignore_errors=True)
    home.parent.mkdir(parents=True, exist_ok=True)
    print(f"[bench] installing {' '.join(requirements)} into {home} (once) ...", file=sys.stderr, flush=True)
    with log.open("ab") as out:
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, stdout=out, stderr=out)
        done = subprocess.run(
            [str(home / "bin" / "pip"), "install", "--quiet", *requirements], stdout=out, stderr=out
        )
    if done.returncode != 0:
        raise RuntimeError(f"pip could not install {requirements} for the {name} peer; see {log}")
    frozen = subprocess.run([str(home / "bin" / "pip"), "freeze"], capture_output=True, text=True, check=True)
    (home / _MARKER).write_text(frozen.stdout)
    return home / "bin"
