"""What every benchmark shares: the result row and its target, quantiles and spreads, free ports, child
processes that are always stopped, and a description of the machine the numbers come from."""

from __future__ import annotations

import asyncio
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LABKIT = str(Path(sys.executable).with_name("labkit"))

TargetKind = Literal["value_max", "ratio_min", "ratio_max", "ratio_near", "over_reference_max"]


@dataclass(frozen=True)
class Target:
    """What a row must reach: `value <= limit`, `ratio >= limit`, `ratio <= limit`, `|ratio - 1| <= limit`
    (two tools that should agree), or `value - reference <= limit`."""

    kind: TargetKind
    limit: float
    text: str

    def met(self, value: float | None, reference: float | None, ratio: float | None) -> bool | None:
        if self.kind == "value_max":
            return None if value is None else value <= self.limit
        if self.kind == "ratio_min":
            return None if ratio is None else ratio >= self.limit
        if self.kind == "ratio_max":
            return None if ratio is None else ratio <= self.limit
        if self.kind == "ratio_near":
            return None if ratio is None else abs(ratio - 1) <= self.limit
        if value is None or reference is None:
            return None
        return value - reference <= self.limit


@dataclass
class Row:
    """One line of the benchmark table (bench/results.json, docs/benchmarks.md).

    `value` is the lab's figure, `reference` the figure of the reference measured in the same run (None
    when the row has none), `ratio` value/reference unless the row sets its own (an overhead row: the
    latency through the wrapper over the direct latency), `spread` the lowest and highest per-round value
    and the number of rounds. `target_met` is None when the row has no target or could not be measured."""

    name: str
    what: str
    unit: str
    value: float | None
    reference: float | None = None
    reference_what: str = ""
    spread: dict[str, Any] | None = None
    target: Target | None = None
    notes: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    own_ratio: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.own_ratio is not None:
            return self.own_ratio
        if self.value is None or self.reference is None or self.reference == 0:
            return None
        return self.value / self.reference

    def as_json(self) -> dict[str, Any]:
        target = self.target
        return {
            "name": self.name,
            "what": self.what,
            "unit": self.unit,
            "value": _round(self.value),
            "reference": _round(self.reference),
            "reference_what": self.reference_what,
            "ratio": _round(self.ratio),
            "spread": self.spread,
            "target": None if target is None else asdict(target),
            "target_met": None if target is None else target.met(self.value, self.reference, self.ratio),
            "notes": self.notes,
            "detail": self.detail,
        }


def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}") if abs(x) < 1 else round(x, 3)


def quantile(values: Sequence[float], q: float) -> float:
    """numpy's quantile (linear interpolation between order statistics, as pandas' too)."""
    if not values:
        raise ValueError("no values")
    return float(np.quantile(values, q))


def spread(per_round: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Lowest and highest per-round value, and how many rounds there were."""
    return {
        "low": _round(min(per_round), digits),
        "high": _round(max(per_round), digits),
        "rounds": len(per_round),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (held open together while chosen, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_http(url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> float:
    """Poll `url` every 5 ms until it answers 200; return when it did (time.monotonic())."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while True:
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            if not alive():
                raise RuntimeError(f"the process behind {url} exited before it answered")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer 200 within {timeout_s:g} s")
            time.sleep(0.005)


@contextmanager
def children(
    commands: dict[str, list[str]],
    logs: Path,
    cpus: set[int] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Start each named command (logs in `logs/NAME.log`, pinned to `cpus` when given, in `env` when given,
    else ours); terminate them all on the way out, whatever happened, killing any that outlive a 10 s
    grace."""
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    try:
        for name, argv in commands.items():
            with open(logs / f"{name}.log", "wb") as log:
                procs[name] = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin, env=env
                )
        yield procs
    finally:
        stop_processes(procs.values())


def stop_processes(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process still running, then wait for each; SIGKILL any that outlives a 10 s grace."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def model_server_argv(port: int, engine: str, *extra: str) -> list[str]:
    return [PYTHON, "-m", "labkit.services.modelserver", "--port", str(port), "--engine", engine, *extra]


SIM_ZERO_DELAY = ("--sim-ttft-s", "0", "--sim-itl-s", "0", "--sim-jitter", "0")


def machine() -> dict[str, Any]:
    """The machine the numbers come from (they mean little without it)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kib = 0
    prometheus = ""
    try:
        done = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, timeout=10)
        prometheus = (done.stdout or done.stderr).splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        pass
    return {
        "cpus_allowed": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "prometheus": prometheus,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_wrk(
    url: str,
    body: str,
    seconds: float,
    connections: int,
    cpu: int | None,
    workdir: Path,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """wrk (closed loop, one thread, `connections` connections, pinned to `cpu`) POSTing `body` to `url`
    (with `headers` besides the JSON content type)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return {
            "error": "wrk is not installed (Debian package wrk; `make bench` installs it)",
            "req_per_s": None,
        }
    script = workdir / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = [[{body}]]"]
    every = {"Content-Type": "application/json", **(headers or {})}
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in every.items()]
    script.write_text("\n".join(lines) + "\n")
    duration = max(1, round(seconds))
    argv = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "-s", str(script), url]

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, preexec_fn=pin)
    if done.returncode != 0:
        return {"error": f"wrk failed: {done.stderr.strip()[-300:]}", "req_per_s": None}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    total = re.search(r"(\d+) requests in", done.stdout)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", done.stdout)
    errors = re.search(r"Socket errors:(.*)", done.stdout)
    return {
        "req_per_s": float(rate.group(1)) if rate else None,
        "requests": int(total.group(1)) if total else None,
        "connections": connections,
        "duration_s": duration,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else None,
    }


async def open_loop(
    url: str, body: bytes, rate: float, seconds: float, headers: dict[str, str] | None = None
) -> list[float]:
    """Latencies (s) of requests sent every 1/rate s for `seconds`, each as its own task, from its send to
    the last byte of the answer (aiohttp; `headers` added to the JSON content type)."""
    latencies: list[float] = []
    failures = 0
    headers = {"Content-Type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal failures
            start = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    failures += 1
                    return
            latencies.append(time.perf_counter() - start)

        tasks = []
        t0 = time.perf_counter()
        count = int(rate * seconds)
        for i in range(count):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    if failures:
        raise RuntimeError(f"{failures} of {count} requests to {url} failed")
    return latencies


def process_tree(pid: int, others: Set[int] = frozenset()) -> list[psutil.Process]:
    """The process and its descendants, except the processes in `others` and theirs (the local backend's
    supervisor, which hosts the exporter, is the parent of every other service); [] when it has ended."""
    try:
        found = [psutil.Process(pid)]
    except psutil.NoSuchProcess:
        return []
    todo = list(found)
    while todo:
        try:
            children = todo.pop().children()
        except psutil.NoSuchProcess:
            continue
        for child in children:
            if child.pid not in others:
                found.append(child)
                todo.append(child)
    return found


def split_cpus() -> tuple[int, set[int]]:
    """One CPU for the client (load generator, wrk) and the others for the servers (the same one on a
    one-CPU machine)."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], set(cpus[1:]) or {cpus[0]}


@contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """Run this process on `cpus` for a while, then give it back what it had."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
