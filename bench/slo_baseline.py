"""Measures the numbers SLO.md's initial objectives rest on: TTFT, end-to-end latency and token gaps
of the running lab under a light open-loop load. Not a test; run it by hand against `labkit up`:

    .venv/bin/python bench/slo_baseline.py --url http://127.0.0.1:8000 --rate 1 --duration-s 60
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time

import httpx

PROMPTS = [
    "Explain what an error budget is.",
    "Write two sentences about latency.",
    "What is a load balancer?",
    "Give three tips for on-call engineers.",
]


def one(url: str, prompt: str, max_tokens: int, intended: float, out: list[dict]) -> None:
    first = None
    last = None
    gaps: list[float] = []
    status = 0
    with httpx.Client(timeout=60) as client:
        try:
            body = {"prompt": prompt, "max_tokens": max_tokens, "stream": True}
            with client.stream("POST", url + "/generate", json=body) as r:
                status = r.status_code
                for line in r.iter_lines():
                    if not line:
                        continue
                    now = time.perf_counter()
                    if json.loads(line).get("response"):
                        if first is None:
                            first = now
                        elif last is not None:
                            gaps.append(now - last)
                        last = now
        except httpx.HTTPError:
            status = 0
    end = time.perf_counter()
    out.append(
        {"status": status, "ttft": (first - intended) if first else None, "e2e": end - intended, "gaps": gaps}
    )


def pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]
        if len(values) > 1
        else values[0]
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--duration-s", dest="duration", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out: list[dict] = []
    threads = []
    start = time.perf_counter()
    t = 0.0
    while True:
        t += rng.expovariate(args.rate)
        if t > args.duration:
            break
        intended = start + t
        time.sleep(max(0.0, intended - time.perf_counter()))
        th = threading.Thread(
            target=one, args=(args.url, rng.choice(PROMPTS), args.max_tokens, intended, out)
        )
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    ok = [r for r in out if r["status"] == 200]
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    e2e = [r["e2e"] for r in ok]
    gaps = [g for r in ok for g in r["gaps"]]
    print(f"requests {len(out)} ok {len(ok)} rate {args.rate}/s max_tokens {args.max_tokens}")
    for name, vals in (("ttft", ttft), ("e2e", e2e), ("itl", gaps)):
        print(
            f"{name:5} p50 {pct(vals, 0.5):.3f} p95 {pct(vals, 0.95):.3f} "
            f"p99 {pct(vals, 0.99):.3f} max {max(vals):.3f}"
        )
    for name, vals, thr in (
        ("ttft<=0.5", ttft, 0.5),
        ("e2e<=2.5", e2e, 2.5),
        ("e2e<=5", e2e, 5.0),
        ("itl<=0.05", gaps, 0.05),
    ):
        print(f"{name:10} {sum(v <= thr for v in vals) / len(vals):.4f}")


if __name__ == "__main__":
    main()
