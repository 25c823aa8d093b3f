"""SECURITY.md's promises, each checked where it can fail without starting a lab: no shell or unsafe loading
in the code, loopback by default with a warning naming what an exposed lab exposes, the token checked in
constant time and never read from a URL, chaos only by service name, Docker containers by label and not as
root. tests/integration/test_security_lab.py checks the same on a running lab."""

from __future__ import annotations

import ast
import hmac
import logging
import os
import re
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from labkit.config import LabConfig
from labkit.lab.contract import LABEL_LAB, LABEL_SERVICE, ServiceState, ServiceStatus
from labkit.lab.docker import CONTAINER_UID, DockerBackend
from labkit.lab.images import _DOCKERFILES
from labkit.lab.labdir import LabDir
from labkit.lab.manager.control import ControlServer
from labkit.lab.specs import ServiceSpec, exposed_services, service_specs
from labkit.sockets import is_loopback_address
from tests.conftest import sim_lab_config
from tests.test_wrapper import serving

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token-for-the-security-tests"

# ---------------------------------------------------------------------------------------- source scan

# Calls that run a shell, evaluate text as code, or unpickle: none of them belongs in labkit.
_FORBIDDEN_CALLS = {
    "os.system": "runs a shell",
    "os.popen": "runs a shell",
    "subprocess.getoutput": "runs a shell",
    "subprocess.getstatusoutput": "runs a shell",
    "asyncio.create_subprocess_shell": "runs a shell",
    "eval": "evaluates text as code",
    "exec": "evaluates text as code",
    "yaml.unsafe_load": "builds arbitrary objects from YAML",
    "yaml.unsafe_load_all": "builds arbitrary objects from YAML",
    "yaml.full_load": "builds Python objects from YAML",
    "yaml.full_load_all": "builds Python objects from YAML",
    "pickle.load": "unpickles (runs code)",
    "pickle.loads": "unpickles (runs code)",
    "pandas.read_pickle": "unpickles (runs code)",
    "marshal.loads": "loads code objects",
    "shelve.open": "unpickles (runs code)",
    "tempfile.mktemp": "races on the file name (use mkstemp)",
    "ssl._create_unverified_context": "turns TLS verification off",
}
_FORBIDDEN_METHODS = {"subprocess_shell": "runs a shell", "read_pickle": "unpickles (runs code)"}
_FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "shelve", "marshal"}
_SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader"}


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def unsafe_calls(source: str, filename: str) -> list[str]:
    """`file:line: what` for every shell, eval/exec, unsafe YAML load, pickle or similar in `source`."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name -> the module or object it stands for
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in _FORBIDDEN_MODULES:
                    found.append(f"{filename}:{node.lineno}: import {a.name} (unpickles, runs code)")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            if node.module.split(".")[0] in _FORBIDDEN_MODULES:
                found.append(f"{filename}:{node.lineno}: from {node.module} import (unpickles, runs code)")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{filename}:{node.lineno}"
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                found.append(f"{where}: shell={ast.unparse(kw.value)} (pass an argument list, no shell)")
            if kw.arg == "verify" and isinstance(kw.value, ast.Constant) and kw.value.value is False:
                found.append(f"{where}: verify=False (turns TLS verification off)")
        dotted = _dotted(node.func)
        if dotted is None:
            continue
        head, _, rest = dotted.partition(".")
        name = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
        if name in _FORBIDDEN_CALLS:
            found.append(f"{where}: {name}() {_FORBIDDEN_CALLS[name]}")
        elif isinstance(node.func, ast.Attribute) and node.func.attr in _FORBIDDEN_METHODS:
            found.append(f"{where}: .{node.func.attr}() {_FORBIDDEN_METHODS[node.func.attr]}")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = next((kw.value for kw in node.keywords if kw.arg == "Loader"), None)
            if loader is None and len(node.args) > 1:
                loader = node.args[1]
            loader_name = (_dotted(loader) or "") if loader is not None else ""
            if loader_name.rpartition(".")[2] not in _SAFE_YAML_LOADERS:
                found.append(f"{where}: {name}() without SafeLoader (use yaml.safe_load)")
    return found


def _python_files() -> Iterator[Path]:
    for folder in ("labkit", "bench", "stack"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def test_the_scanner_finds_each_unsafe_pattern() -> None:
    """The scan below can fail: every pattern it looks for is found in a sample, and safe code is not."""
    unsafe = """
import os, subprocess, yaml, pickle
from os import system as run
import pandas as pd
subprocess.run("ls", shell=True)
subprocess.Popen(["ls"], shell=flag)
os.system("ls")
run("ls")
os.popen("ls")
eval(text)
exec(text)
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
yaml.load(text, yaml.UnsafeLoader)
yaml.unsafe_load(text)
pickle.loads(blob)
pd.read_pickle(path)
httpx.get(url, verify=False)
loop.subprocess_shell(factory, "ls")
"""
    found = unsafe_calls(unsafe, "sample.py")
    lines = sorted({int(f.split(":")[1]) for f in found})
    assert lines == [2, *range(5, 20)], "\n".join(found)
    safe = """
import subprocess, yaml
subprocess.run(["ls"], shell=False, check=True)
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
yaml.load(text, yaml.CSafeLoader)
re.compile("x").sub("", text)
"""
    assert unsafe_calls(safe, "safe.py") == []


def test_no_shell_eval_unsafe_yaml_or_pickle_in_the_code() -> None:
    files = list(_python_files())
    assert len(files) > 50  # the scan really reads the packages
    found = [hit for path in files for hit in unsafe_calls(path.read_text(encoding="utf-8"), str(path))]
    assert found == [], "\n".join(found)


# ---------------------------------------------------------------------------------------- loopback


def test_every_service_binds_loopback_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from labkit.lab.manager.docker_agent import _parser as agent_parser
    from labkit.services.modelserver._cli import build_parser as model_parser
    from labkit.services.modelserver._cli import settings_from_args
    from labkit.services.wrapper import WrapperSettings

    monkeypatch.delenv("LABKIT_HOST", raising=False)
    config = LabConfig(lab_dir=tmp_path / "lab")
    assert config.host == "127.0.0.1"
    assert WrapperSettings().host == "127.0.0.1"
    assert settings_from_args(model_parser().parse_args([])).host == "127.0.0.1"
    assert agent_parser().parse_args(["--lab-id", "x", "--token-file", "t"]).host == "127.0.0.1"
    # The lab's own command lines: every service binds the configured host, Prometheus too.
    specs = {s.name: s for s in service_specs(config, LabDir(config.lab_dir))}
    assert specs["model"].argv[specs["model"].argv.index("--host") + 1] == "127.0.0.1"
    assert specs["wrapper"].argv[specs["wrapper"].argv.index("--host") + 1] == "127.0.0.1"
    listen = [a for a in specs["prometheus"].argv if a.startswith("--web.listen-address=")]
    assert listen == [f"--web.listen-address=127.0.0.1:{config.prometheus_port}"]
    # Prometheus' lifecycle API (/-/quit, /-/reload) would let anyone who reaches it stop it, token or not.
    assert "--web.enable-lifecycle" not in specs["prometheus"].argv
    # Alertmanager too, and its cluster gossip (0.0.0.0:9094 by default) is off.
    alertmanager = specs["alertmanager"].argv
    assert f"--web.listen-address=127.0.0.1:{config.alertmanager_port}" in alertmanager
    assert "--cluster.listen-address=" in alertmanager
    assert exposed_services(config) == []


def test_another_host_reaches_every_command_line(tmp_path: Path) -> None:
    """--host is not a loopback-only setting that one service forgets: each binds what it says."""
    config = sim_lab_config(tmp_path, host="0.0.0.0")
    specs = {s.name: s for s in service_specs(config, LabDir(config.lab_dir))}
    for name in ("model", "wrapper"):
        assert specs[name].argv[specs[name].argv.index("--host") + 1] == "0.0.0.0"
    assert f"--web.listen-address=0.0.0.0:{config.prometheus_port}" in specs["prometheus"].argv
    assert f"--web.listen-address=0.0.0.0:{config.alertmanager_port}" in specs["alertmanager"].argv


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("192.168.0.7", False),
        ("no-such-host.invalid", False),
    ],
)
def test_loopback_is_decided_by_the_address(host: str, loopback: bool) -> None:
    assert is_loopback_address(host, resolve=True) is loopback


def test_an_exposed_lab_names_every_service_it_exposes(tmp_path: Path) -> None:
    cfg = sim_lab_config(tmp_path, host="0.0.0.0")
    assert exposed_services(cfg) == [
        f"model (0.0.0.0:{cfg.model_port})",
        f"wrapper (0.0.0.0:{cfg.wrapper_port})",
        f"alertmanager (0.0.0.0:{cfg.alertmanager_port})",
        f"prometheus (0.0.0.0:{cfg.prometheus_port})",
        f"exporter (0.0.0.0:{cfg.exporter_port})",
    ]
    # An Ollama somebody else runs is not the lab's to expose.
    external = sim_lab_config(tmp_path, host="::", engine="ollama", ollama_url="http://10.0.0.9:11434")
    assert [s.split(" ")[0] for s in exposed_services(external)] == [
        "wrapper",
        "alertmanager",
        "prometheus",
        "exporter",
    ]
    assert exposed_services(external)[0] == f"wrapper ([::]:{external.wrapper_port})"


def test_labkit_up_on_a_public_address_warns_naming_each_service(tmp_path: Path) -> None:
    """The warning comes before anything starts (here the missing Prometheus stops `up` right after it)."""
    from labkit.cli import cli

    cfg = sim_lab_config(tmp_path)
    ports = [
        f"--{s}-port={getattr(cfg, f'{s}_port')}"
        for s in ("model", "wrapper", "alertmanager", "prometheus", "exporter")
    ]
    args = ["--lab-dir", str(cfg.lab_dir), "up", "--engine", "sim", "--prometheus-bin", "/nonexistent/prom"]
    result = CliRunner().invoke(cli, [*args, "--host", "0.0.0.0", *ports])
    assert result.exit_code == 1
    warning = next(line for line in result.stderr.splitlines() if line.startswith("warning:"))
    for service in ("model", "wrapper", "alertmanager", "prometheus", "exporter"):
        assert f"{service} (0.0.0.0:{getattr(cfg, f'{service}_port')})" in warning, warning
    assert "reachable from other machines" in warning and "no authentication" in warning
    quiet = CliRunner().invoke(cli, [*args, "--host", "127.0.0.1", *ports])
    assert quiet.exit_code == 1 and "warning:" not in quiet.stderr, quiet.stderr


def test_compose_publishes_every_port_on_loopback_only() -> None:
    compose = yaml.safe_load((ROOT / "stack" / "docker-compose.yml").read_text(encoding="utf-8"))
    published = [(name, p) for name, svc in compose["services"].items() for p in svc.get("ports", [])]
    assert published  # the check reads real entries
    assert [(n, p) for n, p in published if not str(p).startswith("127.0.0.1:")] == []


# ---------------------------------------------------------------------------------------- control API


@dataclass
class RecordingService:
    """Stands in for a supervised process so that the routing can be checked without one; the real
    services are checked in tests/integration/test_security_lab.py."""

    name: str
    calls: list[str] = field(default_factory=list)
    state: ServiceState = "ready"
    detail: str = ""
    restarts: int = 0
    started_at: float | None = None

    @property
    def spec(self) -> ServiceSpec:
        return ServiceSpec(self.name, ["true"], "http://127.0.0.1:1", "/")  # type: ignore[arg-type]

    @property
    def pid(self) -> int | None:
        return 4242

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def probe(self, client: Any) -> None: ...
    def kill(self) -> None:
        self.calls.append("kill")

    def restart(self) -> None:
        self.calls.append("restart")

    def pause(self, duration_s: float) -> None:
        self.calls.append("pause")

    def unpause(self) -> None:
        self.calls.append("unpause")

    def status(self) -> ServiceStatus:
        return ServiceStatus(name=self.name, state=self.state, pid=4242, restarts=0, url=self.spec.url)  # type: ignore[arg-type]


@pytest.fixture
def control(tmp_path: Path) -> Iterator[tuple[httpx.Client, dict[str, RecordingService]]]:
    """The control API's routes served on loopback over recording services."""
    server = ControlServer(lab_id="lab-a", token=TOKEN, host="127.0.0.1", port=0, lab=LabDir(tmp_path))
    services = {name: RecordingService(name) for name in ("model", "wrapper", "prometheus")}
    server.services = services  # type: ignore[assignment]
    try:
        with serving(server.app()) as url, httpx.Client(base_url=url, timeout=10) as client:
            yield client, services
    finally:
        server.gpus.close()


_PROTECTED = [
    ("GET", "/v1/status"),
    ("POST", "/v1/services/model/kill"),
    ("POST", "/v1/services/model/restart"),
    ("POST", "/v1/services/model/unpause"),
    ("GET", "/v1/stress"),
    ("DELETE", "/v1/stress"),
    ("POST", "/v1/shutdown"),
]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"},
     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"}],
    ids=["missing", "wrong", "no-scheme", "basic", "longer", "shorter"],
)  # fmt: skip
def test_control_api_without_the_right_token_is_401_and_does_nothing(
    control: tuple[httpx.Client, dict[str, RecordingService]], headers: dict[str, str]
) -> None:
    client, services = control
    for method, path in _PROTECTED:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert TOKEN not in response.text
    assert all(svc.calls == [] for svc in services.values())


@pytest.mark.parametrize("query", [{"token": TOKEN}, {"access_token": TOKEN}, {"t": TOKEN}, {"x": "1"}])
def test_control_api_refuses_any_query_even_with_the_right_token(
    control: tuple[httpx.Client, dict[str, RecordingService]], query: dict[str, str]
) -> None:
    client, services = control
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        for method, path in _PROTECTED:
            response = client.request(method, path, params=query, headers=headers)
            assert response.status_code == 400, (method, path, response.text)
            assert "never put the lab's token in a URL" in response.json()["error"]
            assert TOKEN not in response.text
    assert all(svc.calls == [] for svc in services.values())


def test_control_api_with_the_right_token_acts(
    control: tuple[httpx.Client, dict[str, RecordingService]],
) -> None:
    client, services = control
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/v1/status", headers=auth).status_code == 200
    assert client.post("/v1/services/model/kill", headers=auth).status_code == 200
    assert client.post("/v1/services/wrapper/pause", headers=auth, json={"duration_s": 1}).status_code == 200
    assert services["model"].calls == ["kill"] and services["wrapper"].calls == ["pause"]
    # /metrics is open (Prometheus scrapes it) and says nothing about the token.
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and TOKEN not in metrics.text


@pytest.mark.parametrize(
    "name",
    ["4242", "1", "exporter", "supervisor", "sleep", "Model", "model ", "..", "%2e%2e", "model%2Fkill"],
)
def test_chaos_actions_take_only_this_labs_service_names(
    control: tuple[httpx.Client, dict[str, RecordingService]], name: str
) -> None:
    """A pid (even the service's own), the manager itself or a foreign name: refused, nothing signalled."""
    client, services = control
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for action in ("kill", "restart", "pause", "unpause"):
        response = client.post(f"/v1/services/{name}/{action}", headers=auth, json={"duration_s": 1})
        assert 400 <= response.status_code < 500, (name, action, response.status_code)
    assert all(svc.calls == [] for svc in services.values())


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Every call of hmac.compare_digest while the test runs (it still decides)."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def test_both_apis_compare_the_token_in_constant_time(
    control: tuple[httpx.Client, dict[str, RecordingService]], seen: list[tuple[bytes, bytes]], tmp_path: Path
) -> None:
    """hmac.compare_digest is what decides, for the control API and the wrapper's fault API: a `==` would
    leak the token's prefix through the answer's timing."""
    from labkit.services.wrapper import WrapperSettings, create_app

    client, _ = control
    assert client.get("/v1/status", headers={"Authorization": "Bearer guess"}).status_code == 401
    assert seen == [(b"guess", TOKEN.encode())]
    assert client.get("/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert seen[-1] == (TOKEN.encode(), TOKEN.encode())

    token_file = tmp_path / "wrapper-token"
    token_file.write_text(TOKEN, encoding="utf-8")
    token_file.chmod(0o600)
    seen.clear()
    app = create_app(WrapperSettings(admin_token_file=token_file))
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as wrapper:
        assert wrapper.get("/admin/faults", headers={"Authorization": "Bearer guess"}).status_code == 401
        assert seen == [(b"guess", TOKEN.encode())]
        assert wrapper.get("/admin/faults", params={"token": TOKEN}).status_code == 400
        assert len(seen) == 1  # refused before any comparison
        assert wrapper.get("/admin/faults", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert seen[-1] == (TOKEN.encode(), TOKEN.encode())


def test_the_wrappers_api_key_is_compared_in_constant_time_refused_in_urls_and_never_logged(
    seen: list[tuple[bytes, bytes]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from labkit.services.wrapper import WrapperSettings, create_app

    key = "api-key-for-the-security-tests"
    key_file = tmp_path / "api-key"
    key_file.write_text(key, encoding="utf-8")
    key_file.chmod(0o600)
    caplog.set_level(logging.DEBUG)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: the model behind the wrapper refuses at once
    settings = WrapperSettings(
        api_key_file=key_file, backend_url=f"http://127.0.0.1:{closed.getsockname()[1]}"
    )
    body = {"prompt": "hi", "max_tokens": 1}
    with closed, serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/generate", json=body).status_code == 401
        assert client.post("/generate", json=body, headers={"X-API-Key": "guess"}).status_code == 401
        assert (b"guess", key.encode()) in seen
        for name in ("api_key", "key", "token"):
            in_url = client.post("/generate", json=body, params={name: key}, headers={"X-API-Key": key})
            assert in_url.status_code == 400 and key not in in_url.text
        through = client.post("/generate", json=body, headers={"Authorization": f"Bearer {key}"})
        assert through.status_code not in (400, 401), through.text  # on to the (absent) model
    assert (key.encode(), key.encode()) in seen
    # The server's logs only: the test's own httpx client logs the URLs it requests, key included.
    server = [r for r in caplog.records if r.name.split(".")[0] in ("labkit", "uvicorn", "fastapi")]
    assert any("without the right API key" in r.getMessage() for r in server)  # the refusals are logged
    assert [r.getMessage() for r in server if key in r.getMessage()] == []


def test_the_lab_token_is_fresh_strong_and_0600(tmp_path: Path) -> None:
    lab = LabDir(tmp_path / "lab")
    lab.prepare()
    old_umask = os.umask(0)  # a permissive umask must not widen it
    try:
        first = lab.new_token()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(lab.token_file.stat().st_mode) == 0o600
    assert len(first) >= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", first)  # 32 random bytes, URL-safe
    assert lab.read_token() == first
    assert lab.new_token() != first


# ---------------------------------------------------------------------------------------- Docker


def _dockerfile_stages(text: str) -> list[tuple[str | None, str, str | None]]:
    """(stage name, base, last USER) per FROM of a Dockerfile, line continuations joined."""
    stages: list[tuple[str | None, str, str | None]] = []
    for line in text.replace("\\\n", " ").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            rest = [w for w in words[1:] if not w.startswith("--")]
            name = rest[2] if len(rest) >= 3 and rest[1].upper() == "AS" else None
            stages.append((name, rest[0], None))
        elif words[0].upper() == "USER" and stages:
            name, base, _ = stages[-1]
            stages[-1] = (name, base, words[1])
    return stages


def _final_users(path: Path) -> dict[str, str | None]:
    """The user each image built from `path` runs as (its target stage, or the last one), inherited
    through `FROM <stage>`."""
    stages = _dockerfile_stages(path.read_text(encoding="utf-8"))
    by_name = {name: (base, user) for name, base, user in stages if name}

    def user_of(base: str, user: str | None) -> str | None:
        while user is None and base in by_name:
            base, user = by_name[base]
        return user

    targets = [name for name, file in _DOCKERFILES.items() if file == path.name and name in by_name]
    if targets:
        return {t: user_of(*by_name[t]) for t in targets}
    _, base, user = stages[-1]
    return {path.name: user_of(base, user)}


def test_the_stage_parser_follows_targets_and_inheritance() -> None:
    text = "FROM x AS a\nUSER 10\nFROM a AS b\nRUN \\\n  true\nFROM x AS c\nUSER root\nFROM x\n"
    assert _dockerfile_stages(text) == [
        ("a", "x", "10"),
        ("b", "a", None),
        ("c", "x", "root"),
        (None, "x", None),
    ]


def test_every_image_runs_as_a_non_root_user() -> None:
    dockerfiles = sorted((ROOT / "stack" / "docker").glob("*Dockerfile"))
    assert {p.name for p in dockerfiles} == set(_DOCKERFILES.values())  # none is built unchecked
    users = {image: user for path in dockerfiles for image, user in _final_users(path).items()}
    assert set(users) == {"service", "model", "prometheus.Dockerfile", "alertmanager.Dockerfile"}
    for image, user in users.items():
        assert user is not None, f"{image} has no USER: it would run as root"
        assert user.split(":")[0] not in ("0", "root"), f"{image} runs as {user}"


@pytest.mark.parametrize("euid", [0, 1000])
def test_containers_run_unprivileged(
    engine_socket: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, euid: int
) -> None:
    monkeypatch.setattr("labkit.lab.docker.os.geteuid", lambda: euid)
    specs = DockerBackend(sim_lab_config(tmp_path), client=object())._container_specs("0123456789abcdef")
    assert list(specs) == ["model", "wrapper", "alertmanager", "prometheus", "exporter"]
    for name, spec in specs.items():
        uid = spec["user"].split(":")[0]
        assert uid == (str(CONTAINER_UID) if euid == 0 else str(euid)), (name, spec["user"])
        assert spec["security_opt"] == ["no-new-privileges"] and spec["cap_drop"] == ["ALL"], name
        assert "privileged" not in spec and "cap_add" not in spec, name
        assert spec["network_mode"] == "host"  # bound to the lab's host address, loopback by default
    # Only the agent sees the engine's socket.
    assert [n for n, s in specs.items() if str(engine_socket) in s.get("volumes", {})] == ["exporter"]


class _RecordingEngine:
    """Answers `containers.list`/`networks.list` like the Docker SDK and records the filters; the same
    selection on a real engine, next to a bystander container, is
    tests/integration/test_docker_backend.py::test_down_removes_the_labs_containers_and_nothing_else."""

    def __init__(self, containers: list[Any]) -> None:
        self.filters: list[dict[str, str]] = []
        engine = self

        class _List:
            def list(self, all: bool = False, filters: dict[str, str] | None = None) -> list[Any]:
                engine.filters.append(dict(filters or {}))
                return containers if filters is not None and "label" in filters else []

        class _Networks:
            def list(self, filters: dict[str, str] | None = None) -> list[Any]:
                engine.filters.append(dict(filters or {}))
                return []

        self.containers = _List()
        self.networks = _Networks()


class _Container:
    def __init__(self, service: str) -> None:
        self.labels = {LABEL_SERVICE: service}
        self.status = "running"
        self.actions: list[str] = []

    def update(self, **_: Any) -> None:
        self.actions.append("update")

    def kill(self, signal: str) -> None:
        self.actions.append(f"kill {signal}")

    def wait(self, timeout: float) -> None: ...

    def remove(self, force: bool, v: bool) -> None:
        self.actions.append("remove")


def test_docker_down_selects_containers_by_the_labs_label_only(tmp_path: Path) -> None:
    mine = [_Container("model"), _Container("exporter")]
    engine = _RecordingEngine(mine)
    backend = DockerBackend(sim_lab_config(tmp_path, backend="docker"), client=engine)
    assert backend._teardown("lab-a") == 2
    assert engine.filters == [{"label": f"{LABEL_LAB}=lab-a"}] * 2  # the containers, then the networks
    assert all(c.actions == ["update", "kill SIGTERM", "remove"] for c in mine)
    assert backend.containers("lab-b") == mine and engine.filters[-1] == {"label": f"{LABEL_LAB}=lab-b"}
