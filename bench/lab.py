"""The running lab (local backend): `labkit up` to all-ready, its memory, and how fast it recovers when the
model service is SIGKILLed, next to that service's own cold start.

Method: each round starts a lab with `labkit up` (a fresh lab directory, free ports) for the sim engine
and then the real model (llama), so the two alternate. `up` is timed from the command's start to its
exit; the time until Prometheus has scraped every target is timed from the same start. Memory: after
20 requests, the resident set (RSS) of the supervisor and every process under it, summed (PSS too, which
counts shared pages once). Recovery: once the model service has run 10 s (a service that dies sooner is
restarted after a back-off), SIGKILL it and poll the wrapper every 10 ms with a one-token request; the
time from the kill to the first 200. Cold start: the model service's own command line (read from the
running process) started again on a free port, from spawn to its first 200 on /api/generate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench._common import LABKIT, Row, Target, free_port, free_ports, log_tail, median, spread, stop_processes
from labkit.errors import BackendError
from labkit.lab.registry import attach_backend

ENGINES = ("sim", "llama")
UP_TARGET_S = {"sim": 3.0, "llama": 8.0}
RSS_TARGET_MB = {"sim": 600.0, "llama": 1024.0}


class Lab:
    """A lab started by `labkit up` in its own directory on free ports; `labkit down` on the way out."""

    def __init__(self, engine: str, workdir: Path, index: int) -> None:
        self.engine = engine
        self.dir = workdir / f"lab-{engine}-{index}"
        model, wrapper, prometheus, exporter, alertmanager = free_ports(5)
        self.ports = {
            "model": model,
            "wrapper": wrapper,
            "prometheus": prometheus,
            "exporter": exporter,
            "alertmanager": alertmanager,
        }
        self.wrapper = f"http://127.0.0.1:{wrapper}"
        self.prometheus = f"http://127.0.0.1:{prometheus}"
        self.env = {**os.environ, "LABKIT_LAB_DIR": str(self.dir)}

    def up(self) -> dict[str, float]:
        argv = [LABKIT, "up", "--engine", self.engine]
        for name, port in self.ports.items():
            argv += [f"--{name}-port", str(port)]
        start = time.monotonic()
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=180)
        up_s = time.monotonic() - start
        if done.returncode != 0:
            raise RuntimeError(f"labkit up --engine {self.engine} failed: {done.stderr[-2000:]}")
        scraped_s = self._wait_scraped(start)
        return {"up_s": up_s, "scraped_s": scraped_s}

    def _wait_scraped(self, start: float) -> float:
        """Seconds from `start` until the lab's own check finds every target scraped (polled every 20 ms)."""
        backend = attach_backend(self.dir)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if not backend.prometheus_unscraped_targets():
                    return time.monotonic() - start
            except BackendError:
                pass  # Prometheus not answering yet
            time.sleep(0.02)
        raise RuntimeError(f"Prometheus at {self.prometheus} did not scrape every target within 30 s")

    def down(self) -> None:
        subprocess.run([LABKIT, "down"], env=self.env, capture_output=True, timeout=120)

    def supervisor(self) -> psutil.Process:
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if "labkit.lab.manager.supervisor" in cmd and str(self.dir) in cmd:
                return proc
        raise RuntimeError(f"no supervisor for {self.dir}")

    def model_process(self) -> psutil.Process:
        for child in self.supervisor().children(recursive=True):
            if "labkit.services.modelserver" in child.cmdline():
                return child
        raise RuntimeError("the lab has no model server process")

    def generate(self, client: httpx.Client, max_tokens: int = 8) -> bool:
        try:
            resp = client.post(f"{self.wrapper}/generate", json={"prompt": "Hello", "max_tokens": max_tokens})
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    def memory_mb(self) -> dict[str, Any]:
        root = self.supervisor()
        procs = [root, *root.children(recursive=True)]
        rss = pss = 0
        each: dict[str, float] = {}
        for proc in procs:
            with proc.oneshot():
                info = proc.memory_full_info()
                cmd = proc.cmdline()
            rss += info.rss
            pss += info.pss
            name = next((c.rsplit(".", 1)[-1] for c in cmd if c.startswith("labkit.")), Path(cmd[0]).name)
            each[name] = round(info.rss / 2**20, 1)
        return {"rss_mb": rss / 2**20, "pss_mb": pss / 2**20, "processes": len(procs), "rss_mb_each": each}

    def recovery_s(self) -> float:
        """SIGKILL the model service once it has run 10 s; seconds until the wrapper answers 200 again."""
        model = self.model_process()
        wait = 10.5 - (time.time() - model.create_time())
        if wait > 0:
            time.sleep(wait)
        with httpx.Client(timeout=2, trust_env=False) as client:
            killed = time.monotonic()
            os.kill(model.pid, signal.SIGKILL)
            deadline = killed + 120
            while time.monotonic() < deadline:
                if self.generate(client, max_tokens=1):
                    return time.monotonic() - killed
                time.sleep(0.01)
        raise RuntimeError("the lab did not serve a request within 120 s of the model's SIGKILL")


def cold_start_s(argv: list[str], workdir: Path) -> float:
    """The model service's own command line on a free port: spawn to the first 200 on /api/generate."""
    port = free_port()
    argv = list(argv)
    argv[argv.index("--port") + 1] = str(port)
    url = f"http://127.0.0.1:{port}/api/generate"
    log = workdir / "cold-start.log"
    body = {"model": "smollm2:135m", "prompt": "Hello", "stream": False, "options": {"num_predict": 1}}
    with open(log, "wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(timeout=5, trust_env=False) as client:
            while time.monotonic() < start + 120:
                try:
                    if client.post(url, json=body).status_code == 200:
                        return time.monotonic() - start
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"the model server exited: {log_tail(log)}")
                time.sleep(0.01)
        raise RuntimeError(f"the model server did not answer within 120 s: {log_tail(log)}")
    finally:
        stop_processes([proc])


def run(workdir: Path, smoke: bool) -> list[Row]:
    rounds = 1 if smoke else 3
    got: dict[str, dict[str, list[Any]]] = {
        e: {"up": [], "scraped": [], "mem": [], "rec": [], "cold": []} for e in ENGINES
    }
    for r in range(rounds):
        for engine in ENGINES:
            lab = Lab(engine, workdir, r)
            try:
                times = lab.up()
                got[engine]["up"].append(times["up_s"])
                got[engine]["scraped"].append(times["scraped_s"])
                with httpx.Client(timeout=60, trust_env=False) as client:
                    for _ in range(5 if smoke else 20):
                        if not lab.generate(client):
                            raise RuntimeError(f"a request to the {engine} lab failed")
                got[engine]["mem"].append(lab.memory_mb())
                argv = lab.model_process().cmdline()
                if not smoke or engine == "sim":
                    # Cold start first: the kill then follows a model that has run its 10 s.
                    got[engine]["cold"].append(cold_start_s(argv, workdir))
                    got[engine]["rec"].append(lab.recovery_s())
            finally:
                lab.down()
    rows: list[Row] = []
    for engine in ENGINES:
        g = got[engine]
        limit = UP_TARGET_S[engine]
        rows.append(
            Row(
                name=f"up_{engine}_s",
                what=f"`labkit up --engine {engine}` to every service ready (local backend)",
                unit="s",
                value=median(g["up"]),
                spread=spread(g["up"]),
                target=Target("value_max", limit, f"<= {limit:g} s"),
            )
        )
        rows.append(
            Row(
                name=f"up_{engine}_first_scrape_s",
                what=f"`labkit up --engine {engine}` to Prometheus having scraped every target",
                unit="s",
                value=median(g["scraped"]),
                spread=spread(g["scraped"]),
                notes="Prometheus 2.42 applies new scrape targets on a fixed 5 s tick; no target of its own",
            )
        )
        mems = g["mem"]
        limit = RSS_TARGET_MB[engine]
        rows.append(
            Row(
                name=f"memory_{engine}_rss_mb",
                what=f"memory of the running lab, sum of RSS (engine {engine}, after 20 requests)",
                unit="MB",
                value=median([m["rss_mb"] for m in mems]),
                spread=spread([m["rss_mb"] for m in mems]),
                target=Target("value_max", limit, f"<= {limit:g} MB"),
                detail={"pss_mb": round(median([m["pss_mb"] for m in mems]), 1), "last": mems[-1]},
            )
        )
        if g["rec"]:
            rows.append(
                Row(
                    name=f"recovery_{engine}_s",
                    what=f"recovery after SIGKILL of the model service (engine {engine}): kill to first 200",
                    unit="s",
                    value=median(g["rec"]),
                    reference=median(g["cold"]),
                    reference_what="the model service's own cold start (spawn to first 200)",
                    spread=spread(g["rec"]) | {"cold_start": spread(g["cold"])},
                    target=Target("over_reference_max", 1.0, "<= cold start + 1 s"),
                )
            )
    return rows
