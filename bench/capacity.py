"""The capacity of the real model under the SLOs: `labkit run capacity` on the SmolLM2 lab (engine llama),
64-token answers, three repeated bisections of the knee, on a lab of its own on free ports. The row's value is
the highest offered rate that met every SLO (the mean of the three knees), its spread the t-interval's ends;
the detail holds the knees, the limiting SLO and the settings. Smoke: a few short points on the sim engine."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from bench._common import LABKIT, Row, free_ports
from labkit.rundir import RunFile

# The search's settings on the real model: each point 20 s and 10 requests at least (the warm-up before
# saturation is judged is twice the fastest answer, a few seconds for 64 tokens on 2 cores), the knee to 10 %,
# measured three times, within 20 minutes.
SETTINGS: dict[str, float] = {
    "max_tokens": 64,
    "point_s": 20,
    "min_requests": 10,
    "start_rate": 1.0,
    "precision": 0.1,
    "repeats": 3,
    "max_search_s": 1200,
}
# --smoke: a few short points on the sim engine, as the workshop's W4 runs in CI; the code, not a figure.
SMOKE_SETTINGS: dict[str, float] = {
    "point_s": 3,
    "min_requests": 3,
    "max_rate": 8.0,
    "precision": 0.3,
    "max_search_s": 20,
    "max_tokens": 8,
}


def run(workdir: Path, smoke: bool) -> list[Row]:
    engine = "sim" if smoke else "llama"
    out = workdir / "runs"
    model, wrapper, prometheus, exporter, alertmanager = free_ports(5)
    env = {
        **os.environ,
        "LABKIT_LAB_DIR": str(workdir / "capacity-lab"),
        "LABKIT_MODEL_PORT": str(model),
        "LABKIT_WRAPPER_PORT": str(wrapper),
        "LABKIT_PROMETHEUS_PORT": str(prometheus),
        "LABKIT_EXPORTER_PORT": str(exporter),
        "LABKIT_ALERTMANAGER_PORT": str(alertmanager),
    }
    settings = SMOKE_SETTINGS if smoke else SETTINGS
    params = [arg for name, value in settings.items() for arg in ("-p", name, str(value))]
    argv = [LABKIT, "run", "capacity", "--engine", engine, "--out", str(out), "--no-progress", *params]
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=2400)
    took = time.monotonic() - start
    runs = list(out.iterdir()) if out.exists() else []
    result = json.loads((runs[0] / RunFile.CAPACITY).read_text()) if runs else {}
    knee = result.get("max_rate_meeting_slos")
    ok = done.returncode == 0 and knee is not None
    low, high = result.get("max_rate_meeting_slos_low"), result.get("max_rate_meeting_slos_high")
    interval = result.get("interval_meaning", "")
    knees = [r.get("knee") for r in result.get("repeats", [])]
    return [
        Row(
            name="capacity_smollm2_64_tokens_rps" if not smoke else "capacity_smoke_sim_rps",
            what=f"highest offered rate meeting every SLO, {engine} engine, "
            f"{'quick parameters' if smoke else '64-token answers, 3 repeated bisections'}",
            unit="requests/s",
            value=knee if ok else None,
            spread=None
            if low is None
            else {"low": low, "high": high, "rounds": len(result.get("repeats", []))},
            notes=(
                f"interval: {interval}; limiting SLO: {result.get('limiting_slo')}; "
                f"{len(result.get('points', []))} points in {took:.0f} s"
                if ok
                else f"failed (exit {done.returncode}): {done.stderr[-500:]}"
            ),
            detail={
                "settings": settings,
                "knees": knees,
                "limiting_slo": result.get("limiting_slo"),
                "interval": [low, high],
                "confidence": result.get("confidence"),
                "points": [
                    {
                        "rate": p["rate"],
                        "passed": p["passed"],
                        "saturation": p["saturation"],
                        "failed_slos": p["failed_slos"],
                    }
                    for p in result.get("points", [])
                ],
                "seconds": round(took, 1),
            },
        )
    ]
