"""`python -m bench` (or `make bench`): the lab's own cost, each figure next to its reference measured in the
same run. Writes bench/results.json and the table in docs/benchmarks.md.

    python -m bench                 # every suite, ~10 minutes on 2 cores
    python -m bench --smoke         # every suite with tiny parameters (seconds each; CI runs it)
    python -m bench --only wrapper --only model

Not a test: nothing here asserts a time. A suite that fails is reported as failed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    capacity,
    gateways,
    lab,
    load_generator,
    model,
    openai_peers,
    overload,
    run_all,
    soak,
    tsdb_blocks,
    wrapper,
)
from bench._common import ROOT, Row, machine
from bench._report import write_markdown

SUITES: dict[str, Callable[[Path, bool], list[Row]]] = {
    "wrapper": wrapper.run,
    "gateways": gateways.run,
    "model": model.run,
    "load_generator": load_generator.bench_rows,
    "lab": lab.run,
    "run_all": run_all.run,
    "overload": overload.run,
    "openai_peers": openai_peers.run,
    "capacity": capacity.run,
}
# Suites that take long run only when named (`--only soak`): the soak, an hour on the real model, and
# tsdb_blocks, 15 minutes of a Prometheus on a short time scale.
ON_REQUEST: dict[str, Callable[[Path, bool], list[Row]]] = {"soak": soak.run, "tsdb_blocks": tsdb_blocks.run}
ALL_SUITES = {**SUITES, **ON_REQUEST}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny parameters: checks the code, measures nothing")
    ap.add_argument(
        "--only",
        action="append",
        choices=sorted(ALL_SUITES),
        help=f"run only this suite (repeatable); {', '.join(ON_REQUEST)} only when named",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for results.json and benchmarks.md "
        "[bench/results.json and docs/benchmarks.md; --smoke: a temporary folder]",
    )
    args = ap.parse_args(argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: every suite's `finally` stops the processes and
    # labs it started instead of leaving them running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.out is not None:
        json_path, md_path = args.out / "results.json", args.out / "benchmarks.md"
    elif args.smoke:
        smoke_dir = Path(tempfile.mkdtemp(prefix="labkit-bench-smoke-"))
        json_path, md_path = smoke_dir / "results.json", smoke_dir / "benchmarks.md"
    else:
        json_path, md_path = ROOT / "bench" / "results.json", ROOT / "docs" / "benchmarks.md"
    names = args.only or list(SUITES)
    about = machine()
    started = time.monotonic()
    rows: list[Row] = []
    suites: dict[str, dict[str, object]] = {}
    for name in names:
        print(f"[bench] {name}{' (smoke)' if args.smoke else ''} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"labkit-bench-{name}-") as tmp:
            try:
                got = ALL_SUITES[name](Path(tmp), args.smoke)
                error = None
            except Exception as exc:  # one failed suite must not cost the others their numbers
                got = []
                error = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
        suites[name] = {
            "seconds": round(time.monotonic() - t0, 1),
            "error": error,
            "rows": [r.name for r in got],
        }
        for row in got:
            print(f"[bench]   {_line(row)}", file=sys.stderr, flush=True)
        rows += got
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for info in suites.values():
        info["measured_at"] = now
    result = {
        "measured_at": now,
        "smoke": args.smoke,
        "seconds": round(time.monotonic() - started, 1),
        "machine": about,
        "suites": suites,
        "rows": [r.as_json() for r in rows],
    }
    if args.only and not args.smoke:
        result = _merge(json_path, result)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(md_path, result)
    took = round(time.monotonic() - started, 1)  # this run's, not the merged results' total
    print(f"[bench] {len(rows)} rows in {took} s: {json_path}, {md_path}", file=sys.stderr)
    failed = [n for n, s in suites.items() if s["error"]]
    if failed:
        print(f"[bench] failed suites: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _merge(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """`--only`: the suites just run replace theirs in the results already there; the others stay, each
    with the time it was measured (the table says when they differ)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return new
    if old.get("smoke") or not isinstance(old.get("suites"), dict):
        return new
    # A suite whose rerun failed keeps the rows it had (with the time they were measured) and says that the
    # rerun failed: a failed --only run must not cost the results their numbers.
    failed = {
        name: old["suites"][name]
        | {"error": None, "rerun_error": info["error"], "rerun_at": new["measured_at"]}
        for name, info in new["suites"].items()
        if info["error"] and not info["rows"] and old["suites"].get(name, {}).get("rows")
    }
    rerun = {name: info for name, info in new["suites"].items() if name not in failed}
    suites = {k: v for k, v in old["suites"].items() if k not in rerun} | rerun | failed
    replaced = {name for suite in rerun for name in old["suites"].get(suite, {}).get("rows", [])}
    rows = [r for r in old.get("rows", []) if r["name"] not in replaced] + new["rows"]
    order = {name: i for i, name in enumerate(ALL_SUITES)}
    suite_of = {row: name for name, info in suites.items() for row in info.get("rows", [])}
    rows.sort(key=lambda r: order.get(suite_of.get(r["name"], ""), len(order)))
    ordered = dict(sorted(suites.items(), key=lambda kv: order.get(kv[0], len(order))))
    return new | {
        "suites": ordered,
        "rows": rows,
        "seconds": round(old.get("seconds", 0) + new["seconds"], 1),
    }


def _line(row: Row) -> str:
    data = row.as_json()
    met = {True: "met", False: "MISSED", None: "-"}[data["target_met"]]
    ratio = "" if data["ratio"] is None else f" ratio {data['ratio']:.3g}"
    return f"{row.name}: {data['value']} {row.unit} (reference {data['reference']}){ratio} [{met}]"


if __name__ == "__main__":
    sys.exit(main())
