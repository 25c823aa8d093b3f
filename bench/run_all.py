"""`labkit run --all --quick`: every scenario's notebook with its CI parameters, each starting and stopping
its own lab on the given engine, timed from the command's start to its exit (report pages included)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from bench._common import LABKIT, Row, Target, free_ports, spread

TARGET_S = 300.0


def run(workdir: Path, smoke: bool) -> list[Row]:
    rows = []
    # Smoke: one scenario on the sim engine, so that the code path cannot rot; a full run does them all on
    # the real model, the lab's default (the sim engine took about as long: the notebooks' fixed
    # durations dominate, not the model).
    plans = [("sim", ["check_setup"])] if smoke else [("llama", ["--all"])]
    for engine, which in plans:
        out = workdir / f"runs-{engine}"
        model, wrapper, prometheus, exporter, alertmanager = free_ports(5)
        env = {
            **os.environ,
            "LABKIT_LAB_DIR": str(workdir / f"run-all-lab-{engine}"),
            # The labs the notebooks start use free ports: a lab running on the defaults is not disturbed.
            "LABKIT_MODEL_PORT": str(model),
            "LABKIT_WRAPPER_PORT": str(wrapper),
            "LABKIT_PROMETHEUS_PORT": str(prometheus),
            "LABKIT_EXPORTER_PORT": str(exporter),
            "LABKIT_ALERTMANAGER_PORT": str(alertmanager),
        }
        argv = [LABKIT, "run", *which, "--quick", "--engine", engine, "--out", str(out), "--no-progress"]
        start = time.monotonic()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
        took = time.monotonic() - start
        runs = sorted(p.name for p in out.iterdir()) if out.exists() else []
        verdicts = {}
        for run_dir in out.iterdir() if out.exists() else []:
            meta = run_dir / "run.json"
            if meta.exists():
                verdicts[run_dir.name] = json.loads(meta.read_text()).get("verdict")
        ok = done.returncode == 0
        label = "--all" if which == ["--all"] else " ".join(which)
        rows.append(
            Row(
                name=f"run_all_quick_{engine}_s" if not smoke else "run_quick_smoke_s",
                what=f"`labkit run {label} --quick --engine {engine}` (CI parameters), start to exit",
                unit="s",
                value=took if ok else None,
                spread=spread([took]),
                target=Target("value_max", TARGET_S, f"<= {TARGET_S:g} s on 2 cores") if not smoke else None,
                notes="" if ok else f"failed (exit {done.returncode}): {done.stderr[-500:]}",
                detail={"runs": runs, "verdicts": verdicts},
            )
        )
    return rows
