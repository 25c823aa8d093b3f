"""labkit.diskspace: the check before a run, what a full disk becomes, the reserve; and papermill's saves
written atomically (labkit.runner.notebook_io)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from labkit.diskspace import (
    RESERVE_BYTES,
    DiskFullError,
    SpaceReserve,
    check_free_space,
    free_bytes,
    human_bytes,
    is_disk_full,
    raise_if_disk_full,
    record_disk_full,
)
from labkit.rundir import RunDirectory, RunDirectoryError


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (512, 512 * 1024, 32 * 1024**2, 1.5 * 1024**3)] == [
        "512 B",
        "512 KiB",
        "32 MiB",
        "1.5 GiB",
    ]


def test_check_free_space_names_the_folder_the_need_and_the_fix(tmp_path: Path) -> None:
    check_free_space(tmp_path / "not" / "yet", needed=1)  # a folder still to make: its parent's disk
    with pytest.raises(DiskFullError) as caught:
        check_free_space(tmp_path, needed=free_bytes(tmp_path) + 2**40, what="labkit run")
    message = str(caught.value)
    assert message.startswith("labkit run needs about ") and f"free in {tmp_path}" in message
    assert "--out DIR on a larger disk" in message
    assert isinstance(caught.value, RunDirectoryError)


def test_is_disk_full_follows_causes_and_contexts() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(full) and not is_disk_full(OSError(errno.EACCES, "denied")) and not is_disk_full(None)
    outer = RuntimeError("while saving")
    outer.__context__ = full
    assert is_disk_full(outer)
    with pytest.raises(OSError) as caught:
        raise_if_disk_full({"ename": "OSError", "evalue": "[Errno 28] No space left on device"}, Path("/r"))
    assert caught.value.errno == errno.ENOSPC
    raise_if_disk_full(None, Path("/r"))
    raise_if_disk_full(["report: KeyError"], Path("/r"))


def test_the_reserve_sits_beside_the_run_and_makes_room_for_its_last_record(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path, "baseline")
    reserve = SpaceReserve(run.path).claim()
    assert reserve.held and reserve.path.parent == tmp_path and reserve.path.stat().st_size == RESERVE_BYTES
    assert reserve.path.name.startswith(".") and not any(
        p.name.endswith("reserve") for p in run.path.iterdir()
    )
    error = record_disk_full(run, {"status": "running", "started_at": "t"}, reserve)
    assert not reserve.path.exists() and not reserve.held
    record = run.read_run_record()
    assert record["status"] == "failed" and record["error"]["ename"] == "DiskFullError"
    assert str(run.path) in str(error) and "filled up during the run" in str(error)


def test_papermill_saves_replace_the_notebook_in_one_step(tmp_path: Path) -> None:
    from papermill.iorw import papermill_io

    from labkit.runner.notebook_io import atomic_output

    target = tmp_path / "notebook.ipynb"
    target.write_text('{"old": true}')
    path = atomic_output(target)
    assert atomic_output(target) == path  # registered once
    papermill_io.write('{"new": true}', path)
    assert json.loads(target.read_text()) == {"new": True}
    assert papermill_io.read(path) == '{"new": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["notebook.ipynb"]  # no temporary file left
    with pytest.raises(FileNotFoundError):
        papermill_io.write("{}", atomic_output(tmp_path / "missing" / "x.ipynb"))
