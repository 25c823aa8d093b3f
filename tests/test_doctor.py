"""labkit.lab.doctor and `labkit doctor`: each check's failure produced at its boundary (a PATH without the
binary, a port taken for real, a missing or broken model file, a full disk as free_bytes reports it), the
--json shape and the exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result

from labkit.cli import cli
from labkit.config import LabConfig
from labkit.lab import doctor
from labkit.lab.doctor import Check, failed, format_check
from tests.conftest import free_ports

_PORT_FIELDS = ("model_port", "wrapper_port", "prometheus_port", "exporter_port", "alertmanager_port")


def config(tmp_path: Path, **overrides: object) -> LabConfig:
    ports = dict(zip(_PORT_FIELDS, free_ports(len(_PORT_FIELDS)), strict=True))
    return LabConfig(**{"lab_dir": tmp_path / "lab", **ports, **overrides})  # type: ignore[arg-type]


def path_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """PATH is one folder holding links to only `names` (each found on the real PATH)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in names:
        for directory in os.environ["PATH"].split(os.pathsep):
            if (Path(directory) / name).is_file():
                (folder / name).symlink_to(Path(directory) / name)
                break
    monkeypatch.setenv("PATH", str(folder))


def test_prometheus_missing_from_path_fails_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path_with(tmp_path, monkeypatch)
    check = doctor.check_prometheus(config(tmp_path))
    assert check.status == "FAIL"
    assert "'prometheus' was not found" in check.detail
    assert check.fix is not None and "apt-get install prometheus" in check.fix
    # The Docker backend's images carry their own Prometheus: only `make images` needs the host's.
    assert doctor.check_prometheus(config(tmp_path, backend="docker")).status == "WARN"


def test_a_prometheus_bin_that_is_not_there_fails(tmp_path: Path) -> None:
    check = doctor.check_prometheus(config(tmp_path, prometheus_bin=str(tmp_path / "nope")))
    assert check.status == "FAIL"
    assert str(tmp_path / "nope") in check.detail


def test_alertmanager_missing_fails_and_names_debians_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path_with(tmp_path, monkeypatch)
    check = doctor.check_alertmanager(config(tmp_path))
    assert check.status == "FAIL"
    assert check.fix is not None and "apt-get install prometheus-alertmanager" in check.fix


@pytest.mark.skipif(
    not all(doctor.shutil.which(b) for b in ("prometheus", "prometheus-alertmanager")),
    reason="needs Debian's prometheus and prometheus-alertmanager",
)
def test_present_binaries_are_ok_with_their_versions(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    for check in (doctor.check_prometheus(cfg), doctor.check_alertmanager(cfg)):
        assert check.status == "OK"
        assert check.detail[0].isdigit(), check.detail  # "2.42.0+ds at /usr/bin/prometheus"
        assert "version unknown" not in check.detail


def test_stress_ng_missing_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path_with(tmp_path, monkeypatch)
    check = doctor.check_stress_ng()
    assert check.status == "WARN"
    assert check.fix is not None and "stress-ng" in check.fix


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_taken_port_fails_and_names_the_variable_that_moves_it(tmp_path: Path, taken_port: int) -> None:
    checks = doctor.check_ports(config(tmp_path, prometheus_port=taken_port), lab_running=False)
    by_name = {c.name: c for c in checks}
    assert set(by_name) == {
        "port model",
        "port wrapper",
        "port alertmanager",
        "port prometheus",
        "port exporter",
    }
    assert by_name["port prometheus"].status == "FAIL"
    assert str(taken_port) in by_name["port prometheus"].detail
    assert "LABKIT_PROMETHEUS_PORT" in (by_name["port prometheus"].fix or "")
    assert all(c.status == "OK" for name, c in by_name.items() if name != "port prometheus")


def test_the_ports_of_the_running_lab_are_its_own(tmp_path: Path, taken_port: int) -> None:
    checks = doctor.check_ports(config(tmp_path, prometheus_port=taken_port), lab_running=True)
    assert [c.status for c in checks] == ["INFO"]
    assert "make run` uses it" in checks[0].detail


def test_an_external_model_service_needs_no_model_port(tmp_path: Path, taken_port: int) -> None:
    cfg = config(tmp_path, model_port=taken_port, engine="openai", openai_url="http://127.0.0.1:1/v1")
    names = [c.name for c in doctor.check_ports(cfg, lab_running=False)]
    assert "port model" not in names


def test_a_missing_model_file_fails(tmp_path: Path) -> None:
    checks = doctor.check_model(config(tmp_path, model_path=tmp_path / "missing.gguf"))
    assert [(c.name, c.status) for c in checks] == [("model file", "FAIL")]
    assert "missing.gguf does not exist" in checks[0].detail
    assert "make setup" in (checks[0].fix or "")


def test_a_file_that_is_no_gguf_fails(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"not a model")
    checks = doctor.check_model(config(tmp_path, model_path=tmp_path / "model.gguf"))
    assert checks[0].status == "FAIL"
    assert "is not a GGUF model file" in checks[0].detail


needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python"
)


@needs_llama
def test_a_gguf_the_engine_cannot_load_fails_with_the_engines_reason(tmp_path: Path) -> None:
    # A real file that only looks like a GGUF: llama.cpp refuses it in the child process.
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + bytes(60))
    checks = doctor.check_model(config(tmp_path, model_path=tmp_path / "broken.gguf"), timeout_s=60)
    assert [(c.name, c.status) for c in checks] == [("model file", "OK"), ("llama engine", "FAIL")]
    assert "could not load broken.gguf" in checks[1].detail
    assert "llama-cpp-python" in (checks[1].fix or "")


@needs_llama
def test_a_load_past_its_timeout_fails(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + bytes(60))
    checks = doctor.check_model(config(tmp_path, model_path=tmp_path / "model.gguf"), timeout_s=0.001)
    assert checks[1].status == "FAIL"
    assert "did not finish in" in checks[1].detail


def test_llama_cpp_python_missing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + bytes(60))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        doctor.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llama_cpp" else real_find_spec(name, *a),
    )
    checks = doctor.check_model(config(tmp_path, model_path=tmp_path / "model.gguf"))
    assert checks[1].name == "llama engine" and checks[1].status == "FAIL"
    assert "not installed" in checks[1].detail


def test_engines_without_a_local_model_are_info(tmp_path: Path) -> None:
    assert [c.status for c in doctor.check_model(config(tmp_path, engine="sim"))] == ["INFO"]
    assert [c.status for c in doctor.check_model(config(tmp_path, backend="docker"))] == ["INFO"]


def test_a_tiny_disk_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "free_bytes", lambda path: 1024)
    check = doctor.check_disk(tmp_path / "runs")
    assert check.status == "FAIL"
    assert "1 KiB free" in check.detail and "32 MiB" in check.detail
    assert "--out DIR" in (check.fix or "")
    monkeypatch.setattr(doctor, "free_bytes", lambda path: 64 * 1024 * 1024)
    assert doctor.check_disk(tmp_path / "runs").status == "OK"


class _Reader:
    """NVML's answer stood in for: a GPU cannot be produced on a machine without one."""

    def __init__(self, gpus: list[object], reason: str = "") -> None:
        self.gpus, self.reason, self.closed = gpus, reason, False

    def read(self) -> list[object]:
        return self.gpus

    def close(self) -> None:
        self.closed = True


def test_no_gpu_is_info_and_a_gpu_is_named() -> None:
    none = doctor.check_gpu(lambda: _Reader([], "NVML unavailable: driver not loaded"))
    assert none.status == "INFO"
    assert "driver not loaded" in none.detail
    gpu = SimpleNamespace(index=0, name="NVIDIA H200")
    assert doctor.check_gpu(lambda: _Reader([gpu])) == Check(name="gpu", status="OK", detail="0: NVIDIA H200")

    def no_nvml() -> object:
        raise ImportError("No module named 'pynvml'")

    assert doctor.check_gpu(no_nvml).status == "INFO"


def test_docker_is_info_for_the_local_backend(tmp_path: Path) -> None:
    assert [c.status for c in doctor.check_docker(config(tmp_path))] == ["INFO"]


def test_no_docker_engine_fails_for_the_docker_backend(tmp_path: Path, engine_socket: Path) -> None:
    checks = doctor.check_docker(config(tmp_path, backend="docker"))
    assert [(c.name, c.status) for c in checks] == [("docker", "FAIL")]
    assert str(engine_socket) in checks[0].detail
    assert "dockerd" in (checks[0].fix or "")


def test_chromium_is_info_whether_there_or_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path_with(tmp_path, monkeypatch)
    check = doctor.check_chromium()
    assert check.status == "INFO"
    assert "only the tests" in check.detail


def test_python_outside_a_virtual_environment_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    assert doctor.check_python().status == "OK"  # the tests run in the project's venv
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)
    check = doctor.check_python()
    assert check.status == "WARN"
    assert "make setup" in (check.fix or "")


def test_a_missing_report_package_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    assert doctor.check_report_packages().status == "OK"
    monkeypatch.setattr(doctor, "REPORT_MODULES", (*doctor.REPORT_MODULES, "no_such_module_for_labkit"))
    check = doctor.check_report_packages()
    assert check.status == "FAIL"
    assert "no_such_module_for_labkit" in check.detail


def test_failed_is_any_fail_and_a_line_carries_its_fix() -> None:
    warn = Check(name="stress-ng", status="WARN", detail="not on PATH", fix="apt-get install stress-ng")
    fail = Check(name="prometheus", status="FAIL", detail="not found", fix="apt-get install prometheus")
    assert not failed([warn, Check(name="gpu", status="INFO", detail="none")])
    assert failed([warn, fail])
    line = format_check(fail, width=12)
    assert line == "FAIL  prometheus   not found  -> fix: apt-get install prometheus"
    assert "\n" not in line


_CHECKS = [
    Check(name="python", status="OK", detail="3.11"),
    Check(name="stress-ng", status="WARN", detail="not on PATH", fix="apt-get install stress-ng"),
]


def _doctor_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checks: list[Check], *args: str
) -> tuple[Result, dict[str, Any]]:
    """`labkit doctor ARGS` on `checks`, and what the command passed to run_checks."""
    seen: dict[str, Any] = {}

    def fake_run_checks(cfg: LabConfig, *, runs_dir: Path) -> list[Check]:
        seen.update(config=cfg, runs_dir=runs_dir)
        return checks

    monkeypatch.setattr(doctor, "run_checks", fake_run_checks)
    return CliRunner().invoke(cli, ["--lab-dir", str(tmp_path / "lab"), "doctor", *args]), seen


def test_cli_json_is_a_list_of_checks_and_exit_0_without_a_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, seen = _doctor_cli(tmp_path, monkeypatch, _CHECKS, "--json", "--out", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"name": "python", "status": "OK", "detail": "3.11", "fix": None},
        {"name": "stress-ng", "status": "WARN", "detail": "not on PATH", "fix": "apt-get install stress-ng"},
    ]
    assert seen["runs_dir"] == tmp_path / "runs"
    assert seen["config"].lab_dir == tmp_path / "lab"


def test_cli_exits_1_on_a_fail_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fail = Check(name="prometheus", status="FAIL", detail="not found", fix="apt-get install prometheus")
    result, seen = _doctor_cli(
        tmp_path, monkeypatch, [*_CHECKS, fail], "--backend", "docker", "--engine", "sim"
    )
    assert result.exit_code == 1
    assert "FAIL  prometheus" in result.output and "-> fix: apt-get install prometheus" in result.output
    assert "until each FAIL above is fixed" in result.output
    assert (seen["config"].backend, seen["config"].engine) == ("docker", "sim")
    result, _ = _doctor_cli(tmp_path, monkeypatch, [*_CHECKS, fail], "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)[-1]["status"] == "FAIL"


def test_cli_out_defaults_to_labkit_out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_OUT_DIR", str(tmp_path / "elsewhere"))
    _, seen = _doctor_cli(tmp_path, monkeypatch, _CHECKS)
    assert seen["runs_dir"] == tmp_path / "elsewhere"
