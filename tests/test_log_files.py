"""The local lab's logs stay within their bound: each service's output (a real child's, through its pipe)
and the manager's own lines rotate at `log_max_bytes` and keep `log_files` files; `labkit logs` and the
readers see the latest lines across a rotation; Prometheus' TSDB is bounded and both binaries log JSON."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from labkit.config import LabConfig
from labkit.durations import prometheus_duration_s
from labkit.errors import ConfigError
from labkit.lab.labdir import LabDir
from labkit.lab.manager.control import spawn_lab_child
from labkit.lab.manager.log_files import RotatingLog, copy_lines
from labkit.lab.registry import backend_for
from labkit.lab.specs import service_specs
from labkit.measure.slo.rules import recorded_windows
from tests.conftest import sim_lab_config

MAX_BYTES = 4096
FILES = 3


def _lab(tmp_path: Path) -> LabDir:
    lab = LabDir(tmp_path / "lab")
    lab.prepare()
    return lab


def _assert_bounded(lab: LabDir, name: str) -> list[str]:
    files = lab.log_files(name)
    assert [p.name for p in files] == [f"{name}.log.{n}" for n in range(FILES - 1, 0, -1)] + [f"{name}.log"]
    for path in files:
        assert path.stat().st_size <= MAX_BYTES, path
    assert not (lab.logs / f"{name}.log.{FILES}").exists()
    return list(lab.read_log_lines(name))


def test_a_service_log_rotates_within_its_bound_and_keeps_whole_lines(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    log = RotatingLog(lab.log_file("wrapper"), max_bytes=MAX_BYTES, files=FILES)
    for n in range(2000):
        log.write_line(json.dumps({"n": n, "message": "x" * 40}))
    log.close()
    lines = _assert_bounded(lab, "wrapper")
    numbers = [json.loads(line)["n"] for line in lines]  # every kept line is whole
    assert numbers == list(range(numbers[0], 2000))  # the newest, oldest first, none missing
    assert sum(len(line) + 1 for line in lines) > MAX_BYTES * (FILES - 1)  # about the bound's worth kept
    # `labkit logs` (tail_log): the last lines, from the rotated file too when the current one holds fewer.
    current = len(lab.log_file("wrapper").read_text().splitlines())
    tail = lab.tail_log("wrapper", current + 5).splitlines()
    assert [json.loads(line)["n"] for line in tail] == list(range(2000 - current - 5, 2000))


def test_a_child_s_output_goes_through_its_pipe_into_the_rotated_log(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    log = RotatingLog(lab.log_file("model"), max_bytes=MAX_BYTES, files=FILES)
    code = "import sys\nfor n in range(3000): print(n)\nsys.stderr.write('last, no newline')"

    async def run() -> int:
        proc = await spawn_lab_child([sys.executable, "-c", code], env={}, log=log, header="starting model")
        status = await proc.wait()
        for _ in range(100):  # the copy ends when the pipe does, just after the process
            if not log._tasks:
                break
            await asyncio.sleep(0.02)
        return status

    assert asyncio.run(run()) == 0
    lines = _assert_bounded(lab, "model")
    assert lines[-1] == "last, no newline"
    numbers = [int(line) for line in lines[:-1]]
    assert numbers == list(range(numbers[0], 3000))


def test_copy_lines_keeps_lines_split_across_reads_whole(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    log = RotatingLog(lab.log_file("x"), max_bytes=1 << 20, files=2)

    async def run() -> None:
        reader = asyncio.StreamReader()
        for piece in (b'{"a": 1}\n{"b"', b": 2}\n", b"\n", b"tail"):
            reader.feed_data(piece)
        reader.feed_eof()
        await copy_lines(reader, log)

    asyncio.run(run())
    log.close()
    assert list(lab.read_log_lines("x")) == ['{"a": 1}', '{"b": 2}', "", "tail"]


def test_the_manager_s_notes_are_json_lines_too(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    log = RotatingLog(lab.log_file("wrapper"), max_bytes=1 << 20, files=2)
    log.note("starting wrapper")
    log.close()
    (line,) = [json.loads(text) for text in lab.read_log_lines("wrapper")]
    assert (line["service"], line["level"], line["message"]) == ("supervisor", "INFO", "starting wrapper")


def test_the_manager_s_stderr_follows_its_rotated_log(tmp_path: Path) -> None:
    """A crash's traceback (written to fd 2, past logging) lands in the current file after a rotation."""
    lab = _lab(tmp_path)
    path = lab.log_file("supervisor")
    code = (
        "import logging, os, sys\n"
        "from pathlib import Path\n"
        "from labkit.lab.manager.log_files import ManagerLogHandler\n"
        "from labkit.service_logs import configure_service_logging\n"
        f"handler = ManagerLogHandler(Path({str(path)!r}), max_bytes={MAX_BYTES}, files={FILES})\n"
        "configure_service_logging('supervisor', handler=handler)\n"
        "for n in range(300): logging.getLogger('labkit.x').info('line %d', n)\n"
        "os.write(2, b'raw stderr\\n')\n"
        "raise SystemExit('crashed')\n"
    )
    with open(path, "ab") as out:  # as `labkit up` starts it
        done = subprocess.run([sys.executable, "-c", code], stdout=out, stderr=out, timeout=60)
    assert done.returncode == 1
    lines = _assert_bounded(lab, "supervisor")
    assert lines[-2:] == ["raw stderr", "crashed"]
    assert json.loads(lines[-3])["message"] == "line 299"


def test_the_bounds_are_settings_with_checked_values(tmp_path: Path) -> None:
    cfg = LabConfig(lab_dir=tmp_path)
    assert (cfg.log_max_bytes, cfg.log_files) == (10 * 1024 * 1024, 3)
    assert (cfg.prometheus_retention_time, cfg.prometheus_retention_size) == ("1d", "1GB")
    assert cfg.prometheus_block_duration == "30m"
    for bad in (
        {"log_files": 1},  # the stdlib never rotates with no file to rotate into
        {"log_max_bytes": 1000},
        {"prometheus_retention_time": "1 day"},
        {"prometheus_retention_size": "1G"},
        {"prometheus_block_duration": "0m"},
        {"prometheus_block_duration": "30"},
    ):
        with pytest.raises(ValidationError):
            LabConfig(lab_dir=tmp_path, **bad)  # type: ignore[arg-type]


def test_a_retention_shorter_than_the_longest_alert_window_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    longest = recorded_windows("lab")[-1]
    assert longest == "144m"  # the lab profile's slowest page reads 144 minutes
    backend_for(sim_lab_config(tmp_path / "ok", prometheus_retention_time=longest)).preflight()
    short = backend_for(sim_lab_config(tmp_path / "short", prometheus_retention_time="2h"))
    with pytest.raises(ConfigError, match=r"--prometheus-retention-time 2h .*give at least 144m"):
        short.preflight()
    assert not (tmp_path / "short" / "config.json").exists()  # refused before the lab directory was prepared
    assert [prometheus_duration_s(d) for d in ("500ms", "144m", "1d", "2w", "1y")] == [
        0.5, 8640.0, 86400.0, 1209600.0, 31536000.0,
    ]  # fmt: skip


def test_prometheus_keeps_a_bounded_tsdb_and_both_binaries_log_json(tmp_path: Path) -> None:
    cfg = sim_lab_config(
        tmp_path,
        prometheus_retention_time="6h",
        prometheus_retention_size="256MB",
        prometheus_block_duration="15m",
    )
    specs = {spec.name: spec for spec in service_specs(cfg, LabDir(cfg.lab_dir))}
    prometheus = specs["prometheus"].argv
    assert "--storage.tsdb.retention.time=6h" in prometheus
    assert "--storage.tsdb.retention.size=256MB" in prometheus
    assert "--storage.tsdb.min-block-duration=15m" in prometheus
    assert "--log.format=json" in prometheus and "--log.format=json" in specs["alertmanager"].argv


def test_the_installed_prometheus_parses_the_labs_command_line(tmp_path: Path) -> None:
    """The lab passes --storage.tsdb.min-block-duration, one of Prometheus' hidden flags (not in --help): the
    installed binary must still parse the lab's whole command line (an unknown flag fails before
    --version)."""
    import shutil

    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed")
    cfg = sim_lab_config(tmp_path)
    specs = {spec.name: spec for spec in service_specs(cfg, LabDir(cfg.lab_dir))}
    flags = specs["prometheus"].argv[1:]
    shown = subprocess.run(["prometheus", *flags, "--version"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    unknown = subprocess.run(["prometheus", *flags, "--no-such-flag", "--version"], capture_output=True)
    assert unknown.returncode != 0


@pytest.mark.parametrize("binary", ["prometheus", "prometheus-alertmanager"])
def test_the_installed_binaries_take_json_logs(binary: str) -> None:
    import shutil

    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed")
    shown = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    assert "--log.format" in shown.stdout + shown.stderr and "json" in shown.stdout + shown.stderr
