"""Issue 21's "done when" for the live view, on a fresh sim lab: `labkit run kill_and_recover --quick`
executes notebook 02, whose experiment cell records at least 10 updates of the live figure (the saved
notebook keeps the last one, with the count in its metadata), and the terminal shows the run's progress line
(phase, elapsed, faults applied), not papermill's cell bar."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from labkit.lab.local import LocalBackend
from labkit.report.live import LIVE_METADATA_KEY
from labkit.rundir import RunFile
from tests.conftest import lab_port_env, sim_lab_config

pytestmark = pytest.mark.integration


def test_the_quick_kill_and_recover_run_updates_its_live_figure_and_says_its_progress(tmp_path: Path) -> None:
    cfg = sim_lab_config(tmp_path)
    ports = lab_port_env(cfg)
    runs = tmp_path / "reports" / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "--lab-dir", str(cfg.lab_dir), "run", "kill_and_recover",
         "--quick", "--engine", "sim", "--out", str(runs)],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, **ports},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = runs.iterdir()

    book = json.loads((run_dir / RunFile.NOTEBOOK).read_text())
    live = [
        output
        for cell in book["cells"]
        for output in cell.get("outputs", [])
        if LIVE_METADATA_KEY in output.get("metadata", {})
    ]
    assert len(live) == 1, [c["source"] for c in book["cells"]]
    (figure,) = live
    record = figure["metadata"][LIVE_METADATA_KEY]
    assert record["final"] is True and record["run"] == run_dir.name, record
    assert record["updates"] >= 10, record
    assert base64.b64decode(figure["data"]["image/png"]).startswith(b"\x89PNG")
    # The final figure's alt text says what it drew: the kill, as the journal has it.
    alt = "".join(figure["data"]["text/plain"])  # nbformat keeps a multi-line string as its lines
    assert "kill model at" in alt, alt

    # The progress line went through the phases and counted the fault; papermill's cell bar did not show.
    progress = done.stderr.replace("\r", "\n")
    assert "method " in progress and "steady state before" in progress, progress[-3000:]
    assert "faults 1/1 applied" in progress and "experiment finished" in progress, progress[-3000:]
    scenario = progress.split("rendering the report")[0]  # the report notebook keeps papermill's cell bar
    assert "Executing:" not in scenario, scenario[-3000:]


def test_watch_draws_a_running_lab_and_its_traffic(running_lab: LocalBackend) -> None:
    """`labkit watch --count 3` on a real sim lab with a few requests: services ready, traffic measured by
    its Prometheus (a request rate above zero), no fault, no alert; then it exits by itself."""
    config = running_lab.saved_config()
    for _ in range(4):
        answer = httpx.post(
            f"{config.wrapper_url}/generate",
            json={"prompt": "hi", "max_tokens": 4, "stream": False},
            timeout=10,
            trust_env=False,
        )
        assert answer.status_code == 200, answer.text
    done = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "--lab-dir", str(running_lab.lab.root), "watch", "--count", "3",
         "--interval-s", "1"],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    screen = done.stdout
    rows = {line.split("│")[1].strip(): line for line in screen.splitlines() if line.count("│") >= 3}
    for name in ("model", "wrapper", "prometheus"):
        assert "ready" in rows[name], screen
    rate = rows["requests/s"].split("│")[2].strip()
    assert rate.endswith("/s") and float(rate.removesuffix("/s")) > 0, screen
    assert "active faults: none" in screen and "last 3 readings" in screen, screen
