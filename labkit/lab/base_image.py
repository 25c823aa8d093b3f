"""The offline base image `labkit/base:bookworm`, made with no registry: debootstrap a bookworm minbase root
file system (python3, stress-ng), trim it as Debian's -slim images are, tar it and `docker import` it.

`labkit images build --offline` builds the lab's images on it (labkit.lab.images).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.errors

from labkit.errors import BackendError, ConfigError
from labkit.lab.docker_engine import image_exists, image_id, remove_replaced

__all__ = ["DEFAULT_MIRROR", "OFFLINE_BASE", "OFFLINE_BASE_PACKAGES", "build_offline_base"]

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

OFFLINE_BASE = "labkit/base:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# libgomp1: llama.cpp's CPU backend links OpenMP; ca-certificates: the agent's and httpx's TLS, if ever used.
OFFLINE_BASE_PACKAGES: tuple[str, ...] = (
    "python3",
    "python3-venv",
    "stress-ng",
    "ca-certificates",
    "libgomp1",
)


def build_offline_base(
    client: Any, *, progress: Progress = print, mirror: str = DEFAULT_MIRROR, force: bool = False
) -> str:
    """Make `labkit/base:bookworm` without a registry: debootstrap a bookworm minbase root file system
    with python3 and stress-ng, tar it and `docker import` it. Returns the tag (kept if it exists)."""
    if not force and image_exists(client, OFFLINE_BASE):
        progress(f"{OFFLINE_BASE} exists; not rebuilt (pass --force-base to rebuild it)")
        return OFFLINE_BASE
    debootstrap = _check_debootstrap_usable(mirror)
    old_id = image_id(client, OFFLINE_BASE)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="labkit-base-"))
    rootfs = workdir / "rootfs"
    try:
        progress(f"debootstrap bookworm minbase from {mirror} (about a minute)")
        _run_debootstrap(debootstrap, rootfs, mirror)
        _trim_rootfs(rootfs)
        tarball = workdir / "rootfs.tar"
        _tar_rootfs(rootfs, tarball)
        progress(f"docker import {OFFLINE_BASE} ({tarball.stat().st_size / 2**20:.0f} MiB)")
        repository, tag = OFFLINE_BASE.split(":")
        try:
            client.api.import_image(
                src=str(tarball),
                repository=repository,
                tag=tag,
                changes=[
                    # An imported image has no PATH; the Dockerfiles extend it (PATH=/opt/labkit/bin:$PATH).
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "ENV LANG=C.UTF-8",
                    'CMD ["python3"]',
                ],
            )
        except docker.errors.APIError as exc:
            raise BackendError(f"docker import of {OFFLINE_BASE} failed: {exc}") from None
    finally:
        _remove_workdir(workdir)
    if not image_exists(client, OFFLINE_BASE):
        raise BackendError(f"docker import reported no error, but {OFFLINE_BASE} is not in the engine")
    remove_replaced(client, old_id, OFFLINE_BASE, progress)
    progress(f"{OFFLINE_BASE} built in {time.monotonic() - started:.0f} s")
    return OFFLINE_BASE


def _check_debootstrap_usable(mirror: str) -> str:
    """debootstrap's path, or a ConfigError saying what is missing: the tool, root, or the mirror."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ConfigError(
            "debootstrap is not installed; run `apt-get install debootstrap` to build the offline base "
            f"image {OFFLINE_BASE}, or build without --offline (or with --base IMAGE) where a registry "
            "is reachable"
        )
    if os.geteuid() != 0:
        raise ConfigError(
            f"debootstrap must run as root to build {OFFLINE_BASE}; run the build as root (e.g. with "
            "sudo), or build without --offline where a registry is reachable"
        )
    release = f"{mirror.rstrip('/')}/dists/bookworm/Release"
    try:
        with urllib.request.urlopen(release, timeout=15) as response:
            response.read(1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"the Debian mirror {mirror} is unreachable ({release}: {reason}); pass --mirror URL with a "
            "reachable bookworm mirror (a local one works: file:///path or http://127.0.0.1:...)"
        ) from None
    return debootstrap


def _run_debootstrap(debootstrap: str, rootfs: Path, mirror: str) -> None:
    argv = [
        debootstrap,
        "--variant=minbase",
        f"--include={','.join(OFFLINE_BASE_PACKAGES)}",
        "bookworm",
        str(rootfs),
        mirror,
    ]
    logger.info("running %s", argv)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
    except subprocess.TimeoutExpired:
        raise BackendError(f"debootstrap from {mirror} took over an hour; try a closer --mirror") from None
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        log = rootfs / "debootstrap" / "debootstrap.log"
        raise BackendError(
            f"debootstrap failed with status {result.returncode}; check that {mirror} serves bookworm "
            f"(or pass --mirror URL). Its last lines:\n{tail}"
            + (f"\n(full log: {log})" if log.exists() else "")
        )


def _trim_rootfs(rootfs: Path) -> None:
    """Drop what no image needs (~160 MB, half the root file system): the downloaded .debs, the package lists
    (`apt-get update` brings them back where a mirror is reachable), and documentation, man pages and
    translations, as Debian's own -slim images do; the copyright files stay. A dpkg configuration keeps
    later `apt-get install`s from bringing documentation back."""
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/man", "usr/share/info"):
        _empty_folder(rootfs / folder, keep=lambda path: path.name in {"lock", "partial"})
    _empty_folder(rootfs / "usr/share/locale", keep=lambda path: path.name == "locale.alias")
    _empty_folder(rootfs / "usr/share/doc", keep=lambda path: path.name == "copyright")
    (rootfs / "etc/dpkg/dpkg.cfg.d/labkit-slim").write_text(
        "# labkit's offline base: no documentation, as in Debian's -slim images\n"
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
        "path-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n"
    )


def _empty_folder(folder: Path, *, keep: Callable[[Path], bool]) -> None:
    """Delete the files under `folder` (recursively, symlinks included) except those `keep` accepts,
    then the folders left empty; `folder` itself stays."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink() or path.is_file():
            if not keep(path):
                path.unlink()
        elif path.is_dir() and not keep(path) and not any(path.iterdir()):
            path.rmdir()


def _tar_rootfs(rootfs: Path, tarball: Path) -> None:
    # Numeric owners: the image must keep the rootfs's uids, whatever names the host gives them.
    argv = ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    if result.returncode != 0:
        raise BackendError(f"tar of the base root file system failed: {result.stderr.strip()}")


def _remove_workdir(workdir: Path) -> None:
    """Remove a debootstrap work folder, unless a mount is still inside it: a debootstrap killed midway
    can leave /proc or /sys mounted in the target, and deleting through a mount deletes the host's files."""
    mounts = _mounts_under(workdir)
    if mounts:
        logger.error(
            "not removing %s: %s still mounted there; unmount them (umount PATH), then delete it",
            workdir,
            ", ".join(mounts),
        )
        return
    shutil.rmtree(workdir, ignore_errors=False)


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder.resolve()) + "/"
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1].replace("\\040", " ") for line in lines if len(line.split()) > 1]
    return [point for point in points if point.startswith(prefix)]
