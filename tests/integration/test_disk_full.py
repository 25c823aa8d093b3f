"""A disk that fills up in the middle of a run (a tmpfs this test mounts and then fills while the faults are
on): `labkit run` ends with one clear error naming the run directory and the space a run needs, no
traceback; every file already written stays readable, run.json says the run failed and why, the wrapper
holds no fault, nothing is left paused or stressed, and the notebook's kernel is gone. A disk too small to
begin with is refused before a lab starts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from labkit.diskspace import RUN_FREE_SPACE_BYTES, human_bytes
from labkit.lab.local import LocalBackend
from labkit.lab.processes import find_lab_processes
from labkit.rundir import RunDirectory, RunFile
from tests.conftest import lab_id_of

pytestmark = pytest.mark.integration

# Room for the preflight check and the run's first files; the test fills the rest once a fault is on.
DISK_BYTES = RUN_FREE_SPACE_BYTES + 4 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_BYTES, unmounted afterwards (skipped where this user cannot mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> int:
    """Write zeros into folder/filler until the filesystem refuses; the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(folder / "filler", "wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(chunk)
            except OSError:
                break
        while True:  # the last few bytes
            try:
                written += fh.write(b"\0" * 512)
            except OSError:
                return written


def _kernels() -> set[int]:
    return {
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "ipykernel_launcher" in " ".join(p.info["cmdline"] or [])
    }


def _cli(lab: LocalBackend, out: Path, scenario: str) -> list[str]:
    return [sys.executable, "-m", "labkit.cli", "--lab-dir", str(lab.config.lab_dir), "run", scenario,
            "--quick", "--engine", "sim", "--out", str(out), "--no-progress"]  # fmt: skip


def test_a_disk_full_mid_run_is_one_clear_error_and_loses_nothing(
    running_lab: LocalBackend, small_disk: Path
) -> None:
    out = small_disk / "reports" / "runs"
    kernels_before = _kernels()
    log = small_disk.parent / "run.log"
    with log.open("w") as fh:
        run = subprocess.Popen(
            _cli(running_lab, out, "kill_and_recover"), stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        filled = 0
        while time.monotonic() < deadline and run.poll() is None:
            events = list(out.glob(f"*/{RunFile.EVENTS}"))
            if events and '"fault_start"' in events[0].read_text():
                filled = _fill(small_disk)
                break
            time.sleep(0.2)
        assert filled, "the run never started a fault: " + log.read_text()[-3000:]
        rc = run.wait(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    output = log.read_text()
    assert rc == 1, output[-3000:]
    (run_path,) = [p for p in out.iterdir() if p.is_dir()]
    assert "Traceback" not in output, output[-3000:]
    assert f"the disk holding {run_path} filled up" in output, output[-3000:]
    assert f"a run needs about {human_bytes(RUN_FREE_SPACE_BYTES)}" in output

    # Every file already written is readable: JSON whole, JSON Lines line by line (a torn last line skipped).
    run_dir = RunDirectory(run_path)
    for path in run_path.rglob("*"):
        if path.suffix == ".json" or path.suffix == ".ipynb":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            problems: list[str] = []
            list(RunDirectory(path.parent).read_jsonl(path.name, problems))
            assert not problems, (path, problems)
    record = run_dir.read_run_record()
    assert record["status"] == "failed", record
    assert record["error"]["ename"] == "DiskFullError", record
    assert not list(out.glob(".*space-reserve")), "the reserve was not released"

    # The lab holds no fault, nothing is paused or stressed, and the run's kernel is gone.
    cfg = running_lab.saved_config()
    faults = httpx.get(
        f"http://127.0.0.1:{cfg.wrapper_port}/admin/faults",
        headers={"Authorization": f"Bearer {running_lab.lab.read_token()}"},
        timeout=10,
    ).json()["faults"]
    assert faults == []
    for proc in find_lab_processes(lab_id_of(running_lab)):
        assert proc.status() != psutil.STATUS_STOPPED, proc
        assert not proc.name().startswith("stress-ng"), proc
    time.sleep(1)
    assert _kernels() <= kernels_before
    assert running_lab.is_running()


def test_a_disk_too_small_is_refused_before_a_lab_starts(tmp_path: Path, small_disk: Path) -> None:
    _fill(small_disk)
    lab_dir = tmp_path / "lab"
    out = small_disk / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "--lab-dir", str(lab_dir), "run", "baseline", "--quick",
         "--engine", "sim", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"needs about {human_bytes(RUN_FREE_SPACE_BYTES)} free in {out}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not lab_dir.exists() or not (lab_dir / "state.json").exists()
    assert not out.exists()
