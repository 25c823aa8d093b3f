"""The progress line of `labkit run`: it follows a run directory that grows while the notebook runs, says
that it waits before the journal starts, and leaves the last state on the screen."""

from __future__ import annotations

import io
import time
from pathlib import Path

from labkit.report.live_data import RunFollower
from labkit.rundir import EventKind, RunFile
from labkit.runner.progress import progress_text, run_progress
from tests.test_report_live import T0, append, event, write_run


def test_the_line_waits_for_the_journal_then_follows_it(tmp_path: Path) -> None:
    follower = RunFollower(tmp_path)
    assert progress_text(follower, T0).startswith("starting the notebook")
    write_run(tmp_path)
    assert progress_text(follower, T0 + 6.0).startswith("method 6/10 s · 8/14 s in all")


def test_the_line_is_redrawn_while_the_run_grows_and_left_with_its_last_state(tmp_path: Path) -> None:
    out = io.StringIO()
    with run_progress(tmp_path, interval_s=0.01, file=out, clock=lambda: T0 + 6.0):
        deadline = time.monotonic() + 30
        while "starting the notebook" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        write_run(tmp_path)
        while "method 6/10 s" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        append(tmp_path / RunFile.EVENTS, event(EventKind.EXPERIMENT_FINISHED, T0 + 15.0))
    screens = out.getvalue().split("\r")
    assert any("starting the notebook" in s for s in screens)
    assert any(s.startswith("method 6/10 s") for s in screens)
    assert screens[-1].rstrip().endswith("experiment finished")  # the last state stays, then a newline


def test_no_line_without_progress(tmp_path: Path) -> None:
    out = io.StringIO()
    with run_progress(tmp_path, enabled=False, file=out):
        write_run(tmp_path)
    assert out.getvalue() == ""
