"""The wrapper next to the gateways people would otherwise put in front of a model server, in one run.

Behind each gateway the same model server (sim engine, zero delay, 64 slots: every request costs only CPU,
the worst case for a proxy) and the same request, an OpenAI chat completion of 8 tokens, the API every
gateway speaks; every gateway forwards it to the model server's own OpenAI API (`/v1/chat/completions`):

- `wrapper`: the labkit wrapper (`--backend-api openai`), as a lab runs it (JSON logs, metrics, faults off);
- `litellm`: the LiteLLM proxy (PyPI `litellm[proxy]`, in a virtual environment of its own under
  ~/.cache/labkit/bench-peers), one worker, the `openai/` provider with the model server as its `api_base`,
  a master key, the cost map from its package (`LITELLM_LOCAL_MODEL_COST_MAP`), no database;
- `python_hop`: uvicorn (uvloop, httptools) with a bare ASGI function that forwards through aiohttp's client
  (`bench/python_hop.py`): no routing, validation, metrics, logs or faults, the least one Python hop costs
  here, the floor of every Python gateway;
- `nginx`: nginx from Debian as a plain reverse proxy with upstream keep-alive and buffering off: what one
  proxy hop costs here in C, the floor.

Method: the client (latency: asyncio + aiohttp; throughput: wrk) is pinned to one CPU, the model server and
the gateways to the others. Latency: in each round, a block of requests sent one after the other on one
kept-alive connection (a closed loop: nothing queues, whatever rate each endpoint answers; LiteLLM answers
~70 a second here) to every endpoint (the model server direct and each gateway), in an order that rotates
from round to round; a gateway's added latency is its quantile minus the direct quantile of the same round,
and the row gives the median over rounds. Throughput: wrk (16 connections) on each endpoint in rotating
blocks. CPU per request: the CPU seconds the gateway's processes used during its wrk blocks over the
requests wrk completed there. RSS: the gateway's processes (nginx: master and worker) at the end, after
every block.

A gateway that cannot run here (nginx not installed, LiteLLM not installable or not answering) keeps its
rows with no value and a note that says why; no row is filled from published numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil

from bench._common import (
    PYTHON,
    SIM_ZERO_DELAY,
    Row,
    Target,
    children,
    free_ports,
    log_tail,
    median,
    model_server_argv,
    pinned,
    process_tree,
    quantile,
    run_wrk,
    split_cpus,
    spread,
    wait_http,
)
from bench._peers import folder_mb, peer_venv
from labkit.config import DEFAULT_MODEL_NAME

MODEL = DEFAULT_MODEL_NAME
PROMPT = "Name three things that make a web service slow."
MAX_TOKENS = 8
# The newest release whose `proxy` extra installs from the package index this machine has: 1.110 pins
# `litellm-proxy`, 1.109 and 1.108.14 pin releases of `litellm-proxy-extras`/`litellm-enterprise` it lacks.
LITELLM = ["litellm[proxy]==1.108.5"]
LITELLM_VENV = "litellm-1.108.5"
GATEWAYS = ("wrapper", "litellm", "python_hop", "nginx")
# The targets (docs/benchmarks.md), for every gateway alike: the floor (nginx) meeting them shows a hop can.
ADDED_MEDIAN_MAX = 0.5  # added median latency <= 0.5 x a direct request's median
ADDED_P99_MAX = 1.0  # added p99 <= 1.0 x the direct p99
THROUGHPUT_MIN = 0.6  # zero-delay throughput >= 0.6 x the model server direct
# The wrapper against LiteLLM, the Python gateway people deploy.
VS_LITELLM_ADDED_MAX = 0.1
VS_LITELLM_THROUGHPUT_MIN = 5.0


def body(stream: bool) -> bytes:
    return json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": MAX_TOKENS,
            "stream": stream,
        }
    ).encode()


@dataclass
class Endpoint:
    """Where the client sends the chat completion, and the process that answers it there (with its children:
    CPU, RSS)."""

    name: str
    url: str
    pid: int
    headers: dict[str, str] = field(default_factory=dict)
    version: str = ""


def _own(pid: int, read: Callable[[psutil.Process], float]) -> float:
    """`read` summed over the process and its descendants (those that end meanwhile count nothing)."""
    total = 0.0
    for proc in process_tree(pid):
        try:
            total += read(proc)
        except psutil.NoSuchProcess:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    return _own(pid, lambda p: (t := p.cpu_times()).user + t.system)


def rss_mb(pid: int) -> float:
    return _own(pid, lambda p: p.memory_info().rss) / 1e6


def _check_answers(endpoint: Endpoint) -> None:
    """One real chat completion through the gateway: it must answer 200 with the model's text."""
    answer = httpx.post(
        endpoint.url, content=body(False), headers={"Content-Type": "application/json", **endpoint.headers},
        timeout=30, trust_env=False,
    )  # fmt: skip
    if answer.status_code != 200:
        raise RuntimeError(f"{endpoint.name} answered {answer.status_code}: {answer.text[:300]}")
    text = answer.json()["choices"][0]["message"]["content"]
    if not isinstance(text, str) or not text:
        raise RuntimeError(f"{endpoint.name} answered without text: {answer.text[:300]}")


def nginx_conf(folder: Path, port: int, upstream_port: int) -> Path:
    """A plain reverse proxy: one worker, upstream keep-alive, no buffering (streams pass as they come),
    no access log (the other gateways write none either at this level), everything under `folder`."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # the worker must read the temp folders it is given
    conf = folder / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  upstream model {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://model;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""
    )
    return conf


def litellm_config(folder: Path, upstream: str, master_key: str) -> Path:
    config = folder / "litellm.yaml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": upstream,
                            "api_key": "none",
                        },
                    }
                ],
                "general_settings": {"master_key": master_key},
                "litellm_settings": {"telemetry": False},
            },
            indent=2,
        )
    )
    return config


def _wrapper(stack: ExitStack, workdir: Path, cpus: set[int], model: str) -> Endpoint:
    (port,) = free_ports(1)
    argv = [
        PYTHON, "-m", "labkit.services.wrapper", "--port", str(port),
        "--backend-url", f"{model}/v1", "--backend-api", "openai", "--max-in-flight", "4096",
    ]  # fmt: skip
    proc = stack.enter_context(children({"wrapper": argv}, workdir, cpus))["wrapper"]
    wait_http(f"http://127.0.0.1:{port}/ready", 60, lambda: proc.poll() is None)
    return Endpoint("wrapper", f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid)


def _python_hop(stack: ExitStack, workdir: Path, cpus: set[int], model: str) -> Endpoint:
    (port,) = free_ports(1)
    argv = [PYTHON, "-m", "bench.python_hop", "--port", str(port), "--upstream", model]
    proc = stack.enter_context(children({"python_hop": argv}, workdir, cpus))["python_hop"]
    wait_http(f"http://127.0.0.1:{port}/v1/models", 30, lambda: proc.poll() is None)
    return Endpoint("python_hop", f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid)


def _nginx(stack: ExitStack, workdir: Path, cpus: set[int], model_port: int) -> Endpoint | str:
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        return "nginx is not installed (Debian package nginx; `make bench` installs it)"
    (port,) = free_ports(1)
    argv = [nginx, "-c", str(nginx_conf(workdir, port, model_port)), "-p", str(workdir)]
    proc = stack.enter_context(children({"nginx": argv}, workdir, cpus))["nginx"]
    wait_http(f"http://127.0.0.1:{port}/v1/models", 30, lambda: proc.poll() is None)
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    return Endpoint("nginx", url, proc.pid, version=version.removeprefix("nginx version: "))


def _litellm(stack: ExitStack, workdir: Path, cpus: set[int], model: str, smoke: bool) -> Endpoint | str:
    if smoke:
        return "smoke: LiteLLM not installed or run (a 1 GB virtual environment)"
    try:
        bin_dir = peer_venv(LITELLM_VENV, LITELLM, workdir / "litellm-install.log")
    except RuntimeError as exc:
        return str(exc)
    (port,) = free_ports(1)
    key = "sk-bench-" + secrets.token_hex(8)
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the cost map at start
        "LITELLM_LOG": "ERROR",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    argv = [
        str(bin_dir / "litellm"), "--config", str(litellm_config(workdir, f"{model}/v1", key)),
        "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1",
    ]  # fmt: skip
    proc = stack.enter_context(children({"litellm": argv}, workdir, cpus, env))["litellm"]
    endpoint = Endpoint(
        "litellm",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        proc.pid,
        headers={"Authorization": f"Bearer {key}"},
        version=f"{LITELLM[0]}, {folder_mb(bin_dir.parent):.0f} MB installed",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", 180, lambda: proc.poll() is None)
        _check_answers(endpoint)
    except RuntimeError as exc:
        return f"LiteLLM did not answer: {exc}; its log ends: {log_tail(workdir / 'litellm.log', 400)}"
    return endpoint


@contextmanager
def gateways(
    workdir: Path, cpus: set[int], smoke: bool
) -> Iterator[tuple[Endpoint, dict[str, Endpoint | str]]]:
    """The model server and every gateway that can run here, each checked with a real request: the direct
    endpoint, and for each gateway its Endpoint or the reason it is missing."""
    (model_port,) = free_ports(1)
    model = f"http://127.0.0.1:{model_port}"
    with ExitStack() as stack:
        argv = model_server_argv(model_port, "sim", *SIM_ZERO_DELAY, "--num-parallel", "64")
        proc = stack.enter_context(children({"model": argv}, workdir, cpus))["model"]
        wait_http(f"{model}/v1/models", 60, lambda: proc.poll() is None)
        direct = Endpoint("direct", f"{model}/v1/chat/completions", proc.pid)
        found: dict[str, Endpoint | str] = {
            "wrapper": _wrapper(stack, workdir, cpus, model),
            "litellm": _litellm(stack, workdir, cpus, model, smoke),
            "python_hop": _python_hop(stack, workdir, cpus, model),
            "nginx": _nginx(stack, workdir, cpus, model_port),
        }
        for endpoint in (direct, *found.values()):
            if isinstance(endpoint, Endpoint):
                _check_answers(endpoint)
        yield direct, found


def _order(endpoints: list[Endpoint], r: int) -> list[Endpoint]:
    """The endpoints rotated by the round: each is first, second, ... as often as the others."""
    k = r % len(endpoints)
    return endpoints[k:] + endpoints[:k]


async def one_connection(url: str, payload: bytes, seconds: float, headers: dict[str, str]) -> list[float]:
    """Latencies (s) of requests sent one after the other on one kept-alive connection for `seconds`: each
    from its send to the last byte of the answer (a closed loop at whatever rate the endpoint answers, so
    nothing queues: the cost of the hop itself)."""
    latencies: list[float] = []
    every = {"Content-Type": "application/json", **headers}
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            async with session.post(url, data=payload, headers=every) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url} answered {resp.status}")
            latencies.append(time.perf_counter() - start)
    return latencies


def measure_latency(
    direct: Endpoint, found: list[Endpoint], stream: bool, rounds: int, block_s: float
) -> dict[str, dict[str, Any]]:
    """Per gateway: the added median and p99 of each round, and the latencies pooled, in seconds."""
    payload = body(stream)
    every = [direct, *found]
    for endpoint in every:  # warm the connections and caches of each path before anything counts
        asyncio.run(one_connection(endpoint.url, payload, 0.5, endpoint.headers))
    got: dict[str, dict[str, Any]] = {e.name: {"added_p50": [], "added_p99": [], "all": []} for e in every}
    for r in range(rounds):
        block: dict[str, list[float]] = {}
        for endpoint in _order(every, r):
            block[endpoint.name] = asyncio.run(
                one_connection(endpoint.url, payload, block_s, endpoint.headers)
            )
            time.sleep(0.2)
        for name, latencies in block.items():
            got[name]["all"] += latencies
            for q, key in ((0.5, "added_p50"), (0.99, "added_p99")):
                got[name][key].append(quantile(latencies, q) - quantile(block["direct"], q))
    return got


def measure_throughput(
    direct: Endpoint, found: list[Endpoint], rounds: int, block_s: float, cpu: int, workdir: Path
) -> dict[str, dict[str, Any]]:
    """Per endpoint and block: wrk's req/s, the CPU milliseconds its processes used per request wrk
    completed, their RSS (MB) after the block; the totals of CPU seconds and requests, and wrk's raw
    results."""
    payload = body(False).decode()
    every = [direct, *found]
    got: dict[str, dict[str, Any]] = {
        e.name: {"req_per_s": [], "cpu_ms": [], "rss_mb": [], "cpu_s": 0.0, "requests": 0, "wrk": []}
        for e in every
    }
    for r in range(rounds):
        for endpoint in _order(every, r):
            before = cpu_seconds(endpoint.pid)
            result = run_wrk(endpoint.url, payload, block_s, 16, cpu, workdir, endpoint.headers)
            used = cpu_seconds(endpoint.pid) - before
            got[endpoint.name]["wrk"].append(result)
            if result.get("req_per_s") is None:
                raise RuntimeError(f"wrk could not measure {endpoint.name}: {result.get('error')}")
            if result.get("non_2xx") or result.get("socket_errors"):
                raise RuntimeError(f"wrk saw failures through {endpoint.name}: {result}")
            mine, requests = got[endpoint.name], int(result["requests"] or 0)
            mine["req_per_s"].append(float(result["req_per_s"]))
            mine["cpu_ms"].append(used * 1000 / max(requests, 1))
            mine["rss_mb"].append(rss_mb(endpoint.pid))
            mine["cpu_s"] += used
            mine["requests"] += requests
            time.sleep(0.3)
    return got


def _missing_rows(name: str, why: str) -> list[Row]:
    """The rows of a gateway that could not run here: no value, and why."""
    return [
        Row(
            name=f"gateway_{name}_{key}",
            what=f"{name}: {what}",
            unit=unit,
            value=None,
            target=target,
            notes=why,
        )
        for key, what, unit, target in _ROWS
    ]


_ROWS = [
    ("added_median_nostream_ms", "median latency added per non-streamed chat completion", "ms",
     Target("ratio_max", ADDED_MEDIAN_MAX, f"<= {ADDED_MEDIAN_MAX:g} x a direct request's median")),
    ("added_p99_nostream_ms", "p99 latency added per non-streamed chat completion", "ms",
     Target("ratio_max", ADDED_P99_MAX, f"<= {ADDED_P99_MAX:g} x the direct p99")),
    ("added_median_stream_ms", "median latency added per streamed chat completion", "ms",
     Target("ratio_max", ADDED_MEDIAN_MAX, f"<= {ADDED_MEDIAN_MAX:g} x a direct request's median")),
    ("added_p99_stream_ms", "p99 latency added per streamed chat completion", "ms",
     Target("ratio_max", ADDED_P99_MAX, f"<= {ADDED_P99_MAX:g} x the direct p99")),
    ("throughput_zero_delay", "throughput at saturation (wrk, 16 connections)", "req/s",
     Target("ratio_min", THROUGHPUT_MIN, f">= {THROUGHPUT_MIN:g} x direct")),
    ("cpu_ms_per_request", "CPU per request at saturation (its own processes)", "ms", None),
    ("rss_mb", "resident memory after the run (its own processes)", "MB", None),
]  # fmt: skip


def gateway_rows(
    name: str,
    endpoint: Endpoint,
    latency: dict[bool, dict[str, dict[str, Any]]],
    throughput: dict[str, dict[str, Any]],
    setup: str,
) -> list[Row]:
    rows = []
    label = f"{name}" + (f" ({endpoint.version})" if endpoint.version else "")
    for stream in (False, True):
        kind = "stream" if stream else "nostream"
        mine, direct = latency[stream][name], latency[stream]["direct"]
        for q, qname, key, target in (
            (0.5, "median", f"added_median_{kind}_ms", _ROWS[0 if not stream else 2][3]),
            (0.99, "p99", f"added_p99_{kind}_ms", _ROWS[1 if not stream else 3][3]),
        ):
            per_round = [x * 1000 for x in mine[f"added_p{50 if q == 0.5 else 99}"]]
            added = median(per_round)
            direct_q = quantile(direct["all"], q) * 1000
            rows.append(
                Row(
                    name=f"gateway_{name}_{key}",
                    what=f"{label}: {qname} latency added per {'streamed' if stream else 'non-streamed'} "
                    f"chat completion, one connection ({setup})",
                    unit="ms",
                    value=added,
                    reference=direct_q,
                    reference_what=f"{qname} of the same requests straight to the model server",
                    spread=spread(per_round),
                    target=target,
                    own_ratio=added / direct_q if direct_q else None,  # added / direct
                    detail={
                        "requests": len(mine["all"]),
                        "through_ms": round(quantile(mine["all"], q) * 1000, 3),
                        "direct_ms": round(direct_q, 3),
                    },
                )
            )
    mine_t, direct_t = throughput[name], throughput["direct"]
    per_round = [a / b for a, b in zip(mine_t["req_per_s"], direct_t["req_per_s"], strict=True)]
    rows.append(
        Row(
            name=f"gateway_{name}_throughput_zero_delay",
            what=f"{label}: throughput at saturation, wrk with 16 connections ({setup})",
            unit="req/s",
            value=median(mine_t["req_per_s"]),
            reference=median(direct_t["req_per_s"]),
            reference_what="the model server direct, same wrk settings",
            spread=spread(per_round) | {"of": "ratio"},
            target=_ROWS[4][3],
            detail={"wrk": mine_t["wrk"]},
        )
    )
    rows.append(
        Row(
            name=f"gateway_{name}_cpu_ms_per_request",
            what=f"{label}: CPU per request at saturation, its own processes (user + system)",
            unit="ms",
            value=mine_t["cpu_s"] * 1000 / mine_t["requests"],
            reference=direct_t["cpu_s"] * 1000 / direct_t["requests"],
            reference_what="the model server's CPU per request, direct",
            spread=spread(mine_t["cpu_ms"]) | {"of": "per wrk block"},
            detail={"cpu_s": round(mine_t["cpu_s"], 3), "requests": mine_t["requests"]},
        )
    )
    rows.append(
        Row(
            name=f"gateway_{name}_rss_mb",
            what=f"{label}: resident memory, its own processes, highest after a wrk block",
            unit="MB",
            value=max(mine_t["rss_mb"]),
            reference=max(direct_t["rss_mb"]),
            reference_what="the model server's",
            spread=spread(mine_t["rss_mb"]) | {"of": "after each wrk block"},
        )
    )
    return rows


_FLOOR_NOTE = {
    "python_hop": " (the bare Python hop is the floor in Python: uvicorn and aiohttp, nothing else)",
    "nginx": " (nginx is the floor: what one proxy hop costs in C)",
}


def comparison_rows(
    got: dict[str, Row], latency: dict[bool, dict[str, dict[str, Any]]], throughput: dict[str, dict[str, Any]]
) -> list[Row]:
    """The wrapper against LiteLLM (targets), against the bare Python hop and against nginx (the floors, no
    target); the spread is the ratio of each round."""
    rows = []
    for peer, target_added, target_rps in (
        ("litellm", Target("ratio_max", VS_LITELLM_ADDED_MAX, f"<= {VS_LITELLM_ADDED_MAX:g} x LiteLLM's"),
         Target("ratio_min", VS_LITELLM_THROUGHPUT_MIN, f">= {VS_LITELLM_THROUGHPUT_MIN:g} x LiteLLM's")),
        ("python_hop", None, None),
        ("nginx", None, None),
    ):  # fmt: skip
        for key, what, unit, target in (
            ("added_median_nostream_ms", "median latency added per non-streamed chat completion", "ms",
             target_added),
            ("throughput_zero_delay", "throughput at saturation", "req/s", target_rps),
        ):  # fmt: skip
            mine, theirs = got.get(f"gateway_wrapper_{key}"), got.get(f"gateway_{peer}_{key}")
            value = None if mine is None else mine.value
            reference = None if theirs is None else theirs.value
            per_round = None
            if value is not None and reference is not None:
                a, b = (
                    (latency[False]["wrapper"]["added_p50"], latency[False][peer]["added_p50"])
                    if key.startswith("added")
                    else (throughput["wrapper"]["req_per_s"], throughput[peer]["req_per_s"])
                )
                per_round = spread([x / y for x, y in zip(a, b, strict=True) if y]) | {"of": "ratio"}
            rows.append(
                Row(
                    name=f"gateway_wrapper_vs_{peer}_{key}",
                    what=f"wrapper vs {peer}: {what}" + _FLOOR_NOTE.get(peer, ""),
                    unit=unit,
                    value=value,
                    reference=reference,
                    reference_what=f"{peer}, same run" if reference is not None else "",
                    spread=per_round,
                    target=target,
                    notes="" if reference is not None else (theirs.notes if theirs is not None else ""),
                )
            )
    return rows


def run(workdir: Path, smoke: bool) -> list[Row]:
    rounds, block_s, wrk_rounds, wrk_s = (1, 0.5, 1, 1) if smoke else (6, 3.0, 3, 4)
    client_cpu, server_cpus = split_cpus()
    setup = f"zero-delay sim, {MAX_TOKENS} tokens, {rounds} rounds of {block_s:g} s per endpoint"
    rows: list[Row] = []
    with pinned({client_cpu}), gateways(workdir, server_cpus, smoke) as (direct, found):
        running = [e for e in found.values() if isinstance(e, Endpoint)]
        latency = {
            stream: measure_latency(direct, running, stream, rounds, block_s) for stream in (False, True)
        }
        throughput = measure_throughput(direct, running, wrk_rounds, wrk_s, client_cpu, workdir)
        by_name: dict[str, Row] = {}
        for name in GATEWAYS:
            endpoint = found[name]
            if isinstance(endpoint, Endpoint):
                got = gateway_rows(name, endpoint, latency, throughput, setup)
            elif smoke:
                continue  # a smoke run measures what runs without a download
            else:
                got = _missing_rows(name, endpoint)
            by_name |= {row.name: row for row in got}
            rows += got
    compared = comparison_rows(by_name, latency, throughput)
    return rows + [r for r in compared if r.reference is not None or not smoke]
