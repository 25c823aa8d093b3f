"""The expected numbers of the workshop's exercises (docs/workshop.md, "Expected numbers"): W1's two load runs
(p50 and p95 end to end at `rate` and at `faster`) and W2's experiment (a pause of the model under load:
verdict, time to detect and recover, requests lost), each repeated, with median and interquartile range; on
request (`--only w3`, `--only w4`) W3's storm (the time to page) and W4's capacity search (the knee).
Not a test and not a suite of `python -m bench` (minutes per engine); run it by hand on a quiet machine:

    .venv/bin/python -m bench.workshop_numbers --engine sim --repeats 3
    .venv/bin/python -m bench.workshop_numbers --engine llama --repeats 3 --out /tmp/w-llama.json

It starts its own lab (a temporary lab directory, free loopback ports) with the exercises' default
parameters (labkit.scenarios.WorkshopPredictP95, WorkshopExperiment) and stops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from labkit import chaos, report, scenarios
from labkit.measure.resilience import spread


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _w1(lab: scenarios.LabSession, out_dir: Path, faster_rate: float | None) -> dict[str, Any]:
    params = scenarios.WorkshopPredictP95(out_dir=str(out_dir), render_report=False)
    if faster_rate is not None:
        params = params.model_copy(update={"faster": faster_rate})
    first = scenarios.baseline(lab, params, scenario="workshop-first", progress=False).load
    faster = params.model_copy(update={"rate": params.faster})
    second = scenarios.baseline(lab, faster, scenario="workshop-faster", progress=False).load
    assert first is not None and second is not None
    a, b = first.summary(), second.summary()
    return {
        "rate": params.rate,
        "faster": params.faster,
        "p50_at_rate_s": a["e2e_s"]["p50"],
        "p95_at_rate_s": a["e2e_s"]["p95"],
        "p50_at_faster_s": b["e2e_s"]["p50"],
        "p95_at_faster_s": b["e2e_s"]["p95"],
        "availability_at_faster": b["availability"],
    }


def _w2(lab: scenarios.LabSession, out_dir: Path) -> dict[str, Any]:
    params = scenarios.WorkshopExperiment(out_dir=str(out_dir), render_report=False)
    faults = [chaos.Fault(kind="pause", target="model", start_s=5, duration_s=params.pause_s)]
    # as W2's notebook writes it
    spec = chaos.ExperimentSpec.model_validate(
        {
            "schedule": faults,
            "duration_s": params.duration_s,
            "load": {"rate": params.rate, "max_tokens": params.max_tokens},
            "steady_state": {"duration_s": params.steady_state_s},
            "scenario": "workshop-experiment",
        }
    )
    result = chaos.run_experiment(lab.lab_dir, spec, out_dir=out_dir)
    row: dict[str, Any] = {"verdict": result.verdict, "pause_s": params.pause_s}
    if result.recovery is not None and len(result.recovery):
        first = result.recovery.iloc[0]
        for measure in ("time_to_detect_s", "time_to_recover_s", "requests_lost"):
            value = first.get(measure)
            row[measure] = None if value is None or value != value else float(value)
    if result.load is not None:
        row["availability"] = result.load.summary()["availability"]
    return row


def _w3(lab: scenarios.LabSession, out_dir: Path) -> dict[str, Any]:
    params = scenarios.WorkshopSloPage(out_dir=str(out_dir), render_report=False)
    run = scenarios.alerting(lab, params, say=None)
    headline = report.alerting_headline(report.RunData.load(run.path))
    return {"error_probability": params.error_probability, **headline}


def _w4(lab: scenarios.LabSession, out_dir: Path) -> dict[str, Any]:
    params = scenarios.WorkshopCapacity(out_dir=str(out_dir), render_report=False)
    run = scenarios.capacity(lab, params, say=None)
    return dict(report.capacity_headline(report.RunData.load(run.path)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.workshop_numbers", description=__doc__)
    ap.add_argument("--engine", choices=("sim", "llama"), default="llama")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("w1", "w2", "w3", "w4"), action="append", help="[w1 and w2]")
    ap.add_argument("--faster", type=float, default=None, help="W1's second rate [the notebook's default]")
    ap.add_argument("--out", type=Path, default=None, help="write the rows and spreads here (JSON)")
    args = ap.parse_args(argv)
    only = set(args.only or ("w1", "w2"))
    rows: dict[str, list[dict[str, Any]]] = {"w1": [], "w2": [], "w3": [], "w4": []}
    loads: list[tuple[float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="workshop-numbers-") as tmp:
        ports = _free_ports(5)
        lab = scenarios.open_lab(
            Path(tmp) / "lab",
            engine=args.engine,
            model_port=ports[0],
            wrapper_port=ports[1],
            prometheus_port=ports[2],
            exporter_port=ports[3],
            alertmanager_port=ports[4],
        )
        try:
            for i in range(args.repeats):
                loads.append(os.getloadavg())
                began = time.monotonic()
                if "w1" in only:
                    rows["w1"].append(_w1(lab, Path(tmp) / "runs", args.faster))
                if "w2" in only:
                    rows["w2"].append(_w2(lab, Path(tmp) / "runs"))
                if "w3" in only:
                    rows["w3"].append(_w3(lab, Path(tmp) / "runs"))
                if "w4" in only:
                    rows["w4"].append(_w4(lab, Path(tmp) / "runs"))
                print(f"repeat {i + 1}/{args.repeats} in {time.monotonic() - began:.0f} s:", rows, flush=True)
        finally:
            lab.close()
    spreads = {
        part: {
            key: spread(row.get(key) for row in part_rows).as_dict()
            for key in part_rows[0]
            if isinstance(part_rows[0][key], int | float) and not isinstance(part_rows[0][key], bool)
        }
        for part, part_rows in rows.items()
        if part_rows
    }
    result = {
        "engine": args.engine,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "load_average_1_5_15_at_each_repeat": loads,
        "rows": rows,
        "median_and_iqr": spreads,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
