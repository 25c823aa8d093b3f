"""The wrapper under overload: at up to 5x its capacity it must answer the excess with fast 503s, keep
serving what it admitted, keep its memory bounded, and be back to normal afterwards without a restart.

Method (docs/overload.md says it in words, with the measured table and the figure docs/overload.png): the
model server (sim engine, a fixed service time, slots >= the wrapper's bound, so the wrapper's in-flight
bound and not the model is the bottleneck) and the wrapper (its default max_in_flight) run as child
processes on the CPUs other than the client's. Capacity: a closed loop of more workers than max_in_flight
(a worker that gets a 503 waits 5 ms), successful requests per second. Then an open-loop client (asyncio +
aiohttp, one task per request, pinned to its own CPU) offers 0.5x, 1x, 2x, 3x and 5x that capacity for a
fixed time each, and finally 0.5x again after a short pause (recovery). Each request's latency is taken
both from its intended send time (the schedule; no coordinated omission) and from its actual send.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench._common import (
    PYTHON,
    ROOT,
    Row,
    Target,
    children,
    free_ports,
    machine,
    model_server_argv,
    pinned,
    quantile,
    split_cpus,
    spread,
    wait_http,
)
from labkit.services.wrapper import WrapperSettings

MAX_IN_FLIGHT = WrapperSettings().max_in_flight  # the wrapper's default bound (32)
# The sim's fixed service time per request (time to the first token; the 8 tokens then come at once, no
# jitter): capacity is about MAX_IN_FLIGHT / SERVICE_S, low enough that one client CPU can offer 5x of it.
SERVICE_S = 0.5
MAX_TOKENS = 8
PROMPT = "Name three things that make a web service slow."
MULTIPLES = (0.5, 1.0, 2.0, 3.0, 5.0)
RECOVERY_MULTIPLE = 0.5
REJECT_P99_LIMIT_MS = 50.0
RSS_PEAK_LIMIT_MB = 50.0  # peak RSS during the 5x step at most this much above the baseline
RSS_AFTER_LIMIT_MB = 20.0  # RSS after the recovery step at most this much above the baseline
GOODPUT_MIN_RATIO = 0.9  # admitted throughput at 5x over the capacity
ADMITTED_P99_LIMIT_MS = 100.0  # admitted p99 at 5x at most this much above the p99 at 0.5x
DOC = ROOT / "docs" / "overload.md"
FIGURE = ROOT / "docs" / "overload.png"
START = "<!-- bench:overload:start (written by python -m bench --only overload; do not edit by hand) -->"
END = "<!-- bench:overload:end -->"
CLIENT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Outcome:
    """One request of the open loop: when it was due, sent and answered (perf_counter s), and how."""

    intended: float
    sent: float
    done: float
    status: int  # 0: no HTTP answer (the error says why)
    error: str = ""


@dataclass
class Step:
    """One open-loop step: what was offered, what came back, and what the wrapper looked like."""

    label: str
    multiple: float
    rate: float
    seconds: float
    outcomes: list[Outcome] = field(default_factory=list)
    t0: float = 0.0
    rss_before_mb: float = 0.0
    rss_max_mb: float = 0.0
    rss_after_mb: float = 0.0
    rss_samples_mb: list[float] = field(default_factory=list)
    counted_rejections: float = 0.0  # llm_requests_rejected_total{reason="in_flight_limit"}, this step's
    counted_by_status: dict[str, float] = field(default_factory=dict)
    series_before: int = 0
    series_after: int = 0
    in_flight_after: float = 0.0
    connections_after: int = 0
    wrapper_cpu_s: float = 0.0
    wrapper_alive: bool = True

    def status(self, code: int) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == code]

    @property
    def errors(self) -> list[Outcome]:
        """Anything but a 200 or the wrapper's 503: an admitted request not served, or a transport error."""
        return [o for o in self.outcomes if o.status not in (200, 503)]

    def summary(self) -> dict[str, Any]:
        ok, rejected = self.status(200), self.status(503)
        span = self.seconds

        def ms(values: Sequence[float], q: float) -> float | None:
            return round(quantile(values, q) * 1000, 2) if values else None

        ok_lat = [o.done - o.intended for o in ok]
        rej_lat = [o.done - o.intended for o in rejected]
        rej_sent = [o.done - o.sent for o in rejected]
        lag = [o.sent - o.intended for o in self.outcomes]
        return {
            "step": self.label,
            "multiple": self.multiple,
            "offered_req_per_s": round(self.rate, 1),
            "sent": len(self.outcomes),
            "achieved_send_rate": round(len(self.outcomes) / span, 1),
            "admitted_req_per_s": round((len(ok) + len(self.errors)) / span, 1),
            "ok_req_per_s": round(len(ok) / span, 1),
            "ok": len(ok),
            "rejected_503": len(rejected),
            "other_errors": len(self.errors),
            "error_examples": sorted({f"{o.status} {o.error}".strip() for o in self.errors})[:5],
            "ok_p50_ms": ms(ok_lat, 0.5),
            "ok_p99_ms": ms(ok_lat, 0.99),
            "reject_p50_ms": ms(rej_lat, 0.5),
            "reject_p99_ms": ms(rej_lat, 0.99),
            "reject_p50_from_send_ms": ms(rej_sent, 0.5),
            "reject_p99_from_send_ms": ms(rej_sent, 0.99),
            "send_lag_p99_ms": ms(lag, 0.99),
            "counted_rejections": self.counted_rejections,
            "counted_by_status": self.counted_by_status,
            "rss_before_mb": round(self.rss_before_mb, 1),
            "rss_max_mb": round(self.rss_max_mb, 1),
            "rss_after_mb": round(self.rss_after_mb, 1),
            "metric_series_before": self.series_before,
            "metric_series_after": self.series_after,
            "in_flight_after": self.in_flight_after,
            "wrapper_connections_after": self.connections_after,
            "wrapper_cpu_s_per_s": round(self.wrapper_cpu_s / span, 3),
        }

    def per_window(self, what: str, window_s: float = 1.0) -> list[float]:
        """`what` ("reject_p99_ms", "ok_per_s") per window of intended send time, windows with data only."""
        windows = max(1, round(self.seconds / window_s))
        values: list[float] = []
        for w in range(windows):
            lo, hi = self.t0 + w * window_s, self.t0 + (w + 1) * window_s
            inside = [o for o in self.outcomes if lo <= o.intended < hi]
            if what == "reject_p99_ms":
                lat = [o.done - o.intended for o in inside if o.status == 503]
                if lat:
                    values.append(quantile(lat, 0.99) * 1000)
            elif what == "ok_per_s":
                values.append(sum(1 for o in inside if o.status == 200) / window_s)
            else:
                raise ValueError(what)
        return values


class RssSampler:
    """The wrapper's RSS every 50 ms on a thread of its own, kept as a list per `mark`ed stretch."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                rss = self.proc.memory_info().rss / 2**20
            except psutil.Error:
                return
            with self._lock:
                self.samples.append(rss)

    def now_mb(self) -> float:
        return float(self.proc.memory_info().rss / 2**20)

    def take(self) -> list[float]:
        with self._lock:
            got, self.samples = self.samples, []
        return got

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def scrape(url: str) -> dict[str, Any]:
    """The wrapper's counters this suite checks, and how many series /metrics has in all."""
    text = httpx.get(f"{url}/metrics", timeout=5.0, trust_env=False).text
    rejected = 0.0
    in_flight = 0.0
    by_status: dict[str, float] = {}
    series = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series += 1
            if (
                sample.name == "llm_requests_rejected_total"
                and sample.labels.get("reason") == "in_flight_limit"
            ):
                rejected = sample.value
            elif sample.name == "llm_requests_in_flight":
                in_flight = sample.value
            elif sample.name == "llm_requests_total":
                by_status[sample.labels["status_code"]] = sample.value
    return {"rejected": rejected, "in_flight": in_flight, "by_status": by_status, "series": series}


def _body() -> bytes:
    return json.dumps({"prompt": PROMPT, "max_tokens": MAX_TOKENS, "stream": False}).encode()


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, str]:
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            await resp.read()
            return resp.status, ""
    except (TimeoutError, aiohttp.ClientError) as exc:
        return 0, type(exc).__name__


async def measure_capacity(
    session: aiohttp.ClientSession, url: str, workers: int, seconds: float, warmup_s: float
) -> tuple[float, list[float], int]:
    """Successful requests/s of a closed loop of `workers` (> max_in_flight) after `warmup_s`; the per-second
    rates; and how many 503s the surplus workers got (each then waits 5 ms, so they do not spin)."""
    body = _body()
    done_at: list[float] = []
    rejected = 0
    failures: list[str] = []
    t0 = time.perf_counter()
    end = t0 + warmup_s + seconds

    async def worker() -> None:
        nonlocal rejected
        while time.perf_counter() < end:
            status, error = await _post(session, url, body)
            if status == 200:
                done_at.append(time.perf_counter())
            elif status == 503:
                rejected += 1
                await asyncio.sleep(0.005)
            else:
                failures.append(f"{status} {error}")

    await asyncio.gather(*(worker() for _ in range(workers)))
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed while measuring capacity: {failures[:3]}")
    lo = t0 + warmup_s
    counted = [t for t in done_at if lo <= t < end]
    per_second = [sum(1 for t in counted if lo + s <= t < lo + s + 1) for s in range(max(1, int(seconds)))]
    return len(counted) / seconds, [float(x) for x in per_second], rejected


async def open_loop(session: aiohttp.ClientSession, url: str, rate: float, seconds: float) -> list[Outcome]:
    """One request every 1/rate s for `seconds`, each its own task; every outcome, once all have ended."""
    body = _body()
    outcomes: list[Outcome] = []

    async def one(intended: float) -> None:
        sent = time.perf_counter()
        status, error = await _post(session, url, body)
        outcomes.append(Outcome(intended, sent, time.perf_counter(), status, error))

    tasks = []
    t0 = time.perf_counter()
    for i in range(int(rate * seconds)):
        intended = t0 + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(intended)))
    await asyncio.gather(*tasks)
    return outcomes


async def run_step(
    session: aiohttp.ClientSession,
    wrapper: str,
    wrapper_proc: psutil.Process,
    sampler: RssSampler,
    step: Step,
) -> None:
    before = await asyncio.to_thread(scrape, wrapper)
    cpu0 = wrapper_proc.cpu_times()
    step.rss_before_mb = sampler.now_mb()
    sampler.take()
    step.t0 = time.perf_counter()
    step.outcomes = await open_loop(session, f"{wrapper}/generate", step.rate, step.seconds)
    step.rss_samples_mb = sampler.take()
    step.rss_max_mb = max([*step.rss_samples_mb, sampler.now_mb()])
    cpu1 = wrapper_proc.cpu_times()
    step.wrapper_cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    after = await asyncio.to_thread(scrape, wrapper)
    step.counted_rejections = after["rejected"] - before["rejected"]
    step.counted_by_status = {
        code: after["by_status"][code] - before["by_status"].get(code, 0.0)
        for code in after["by_status"]
        if after["by_status"][code] != before["by_status"].get(code, 0.0)
    }
    step.series_before, step.series_after = before["series"], after["series"]
    step.in_flight_after = after["in_flight"]
    step.rss_after_mb = sampler.now_mb()
    step.wrapper_alive = wrapper_proc.is_running()
    step.connections_after = len(wrapper_proc.net_connections(kind="tcp"))


async def measure(
    wrapper: str, wrapper_pid: int, smoke: bool
) -> tuple[float, list[float], list[Step], dict[str, Any]]:
    step_s, capacity_s, pause_s = (2.0, 2.0, 0.5) if smoke else (10.0, 6.0, 2.0)
    proc = psutil.Process(wrapper_pid)
    created = proc.create_time()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        with RssSampler(wrapper_pid) as sampler:
            baseline_mb = sampler.now_mb()
            # Warm the path (connections, the model's first load) before anything counts.
            await open_loop(session, f"{wrapper}/generate", 20, 0.5)
            capacity, per_second, capacity_503 = await measure_capacity(
                session, f"{wrapper}/generate", MAX_IN_FLIGHT + 16, capacity_s, 0.5 if smoke else 1.0
            )
            await asyncio.sleep(pause_s)
            baseline_mb = max(baseline_mb, sampler.now_mb())  # after warm-up: the working set of normal load
            steps = [Step(f"{m:g}x", m, m * capacity, step_s) for m in MULTIPLES]
            for step in steps:
                await run_step(session, wrapper, proc, sampler, step)
                await asyncio.sleep(pause_s)
            recovery = Step(
                f"recovery {RECOVERY_MULTIPLE:g}x", RECOVERY_MULTIPLE, RECOVERY_MULTIPLE * capacity, step_s
            )
            await run_step(session, wrapper, proc, sampler, recovery)
            steps.append(recovery)
            await asyncio.sleep(pause_s)
            final_mb = sampler.now_mb()
    restarted = not proc.is_running() or proc.create_time() != created
    about = {
        "baseline_rss_mb": round(baseline_mb, 1),
        "final_rss_mb": round(final_mb, 1),
        "restarted": restarted,
        "capacity_503s": capacity_503,
        "step_s": step_s,
        "capacity_s": capacity_s,
        "pause_s": pause_s,
    }
    return capacity, per_second, steps, about


def _alive(proc: Any) -> bool:
    return bool(proc.poll() is None)


def start_commands(model_port: int, wrapper_port: int) -> dict[str, list[str]]:
    model = f"http://127.0.0.1:{model_port}"
    sim = ("--num-parallel", str(MAX_IN_FLIGHT), "--sim-ttft-s", str(SERVICE_S), "--sim-itl-s", "0")
    return {
        "model": model_server_argv(model_port, "sim", *sim, "--sim-jitter", "0"),
        "wrapper": [
            PYTHON, "-m", "labkit.services.wrapper", "--port", str(wrapper_port), "--backend-url", model,
            "--max-in-flight", str(MAX_IN_FLIGHT),
        ],
    }  # fmt: skip


def _window_spread(values: Sequence[float], of: str) -> dict[str, Any] | None:
    return (spread(values) | {"of": of}) if values else None


def rows_from(
    capacity: float, per_second: list[float], steps: list[Step], about: dict[str, Any]
) -> list[Row]:
    by_label = {s.label: s for s in steps}
    low, top, recovery = by_label[f"{MULTIPLES[0]:g}x"], by_label[f"{MULTIPLES[-1]:g}x"], steps[-1]
    overload_steps = steps[:-1]
    top_sum, low_sum, rec_sum = top.summary(), low.summary(), recovery.summary()
    baseline = about["baseline_rss_mb"]
    detail = {"steps": [s.summary() for s in steps], **about}
    theoretical = MAX_IN_FLIGHT / SERVICE_S
    # Every step's requests have all ended when it is scraped, so the gauge must be back at 0.
    left_in_flight = max(s.in_flight_after for s in steps)
    rows = [
        Row(
            name="overload_capacity_req_per_s",
            what=f"overload: wrapper capacity, successful req/s of a closed loop of {MAX_IN_FLIGHT + 16} "
            f"workers (max_in_flight {MAX_IN_FLIGHT}, sim service time {SERVICE_S:g} s)",
            unit="req/s",
            value=capacity,
            reference=theoretical,
            reference_what="max_in_flight / service time",
            spread=spread(per_second) | {"of": "per second"},
            detail={"per_second": per_second, "capacity_503s": about["capacity_503s"]},
        ),
        Row(
            name="overload_reject_p99_5x_ms",
            what=f"overload: p99 latency of the 503 rejections at {MULTIPLES[-1]:g}x capacity, from each "
            "request's intended send time",
            unit="ms",
            value=top_sum["reject_p99_ms"],
            spread=_window_spread(top.per_window("reject_p99_ms"), "p99 per 1 s window"),
            target=Target("value_max", REJECT_P99_LIMIT_MS, f"< {REJECT_P99_LIMIT_MS:g} ms"),
            notes=f"from the actual send: {top_sum['reject_p99_from_send_ms']} ms; "
            f"p50 {top_sum['reject_p50_ms']} ms; {top_sum['rejected_503']} rejections",
            detail=detail,
        ),
        Row(
            name="overload_goodput_5x_req_per_s",
            what=f"overload: successful req/s at {MULTIPLES[-1]:g}x capacity",
            unit="req/s",
            value=top_sum["ok_req_per_s"],
            reference=capacity,
            reference_what="the capacity measured before",
            spread=_window_spread(top.per_window("ok_per_s"), "per 1 s window"),
            target=Target("ratio_min", GOODPUT_MIN_RATIO, f">= {GOODPUT_MIN_RATIO:g} x capacity"),
        ),
        Row(
            name="overload_admitted_p99_5x_ms",
            what=f"overload: p99 latency of the admitted requests at {MULTIPLES[-1]:g}x capacity",
            unit="ms",
            value=top_sum["ok_p99_ms"],
            reference=low_sum["ok_p99_ms"],
            reference_what=f"the same at {MULTIPLES[0]:g}x capacity",
            spread=spread([float(s.summary()["ok_p99_ms"] or 0) for s in overload_steps])
            | {"of": "per step"},
            target=Target(
                "over_reference_max", ADMITTED_P99_LIMIT_MS, f"<= {ADMITTED_P99_LIMIT_MS:g} ms above 0.5x"
            ),
        ),
        Row(
            name="overload_admitted_errors",
            what="overload: requests answered with neither 200 nor the wrapper's 503 (admitted but not "
            "served, or a transport error), all steps",
            unit="requests",
            value=float(sum(len(s.errors) for s in overload_steps)),
            spread=spread([float(len(s.errors)) for s in overload_steps]) | {"of": "per step"},
            target=Target("value_max", 0, "0"),
            notes="; ".join(sorted({e for s in overload_steps for e in s.summary()["error_examples"]})),
        ),
        Row(
            name="overload_rejections_uncounted",
            what='overload: |503s the client saw - llm_requests_rejected_total{reason="in_flight_limit"}| '
            "and metric series added, all steps",
            unit="count",
            value=float(
                sum(abs(len(s.status(503)) - s.counted_rejections) for s in steps)
                + sum(s.series_after - s.series_before for s in steps)
            ),
            spread=spread([abs(len(s.status(503)) - s.counted_rejections) for s in steps])
            | {"of": "per step"},
            target=Target("value_max", 0, "0"),
        ),
        Row(
            name="overload_rss_peak_mb",
            what=f"overload: the wrapper's peak RSS during the {MULTIPLES[-1]:g}x step",
            unit="MB",
            value=top.rss_max_mb,
            reference=baseline,
            reference_what="its RSS after warm-up, before the overload",
            spread=_window_spread(top.rss_samples_mb, "50 ms samples"),
            target=Target("over_reference_max", RSS_PEAK_LIMIT_MB, f"<= baseline + {RSS_PEAK_LIMIT_MB:g} MB"),
        ),
        Row(
            name="overload_recovery_failed_requests",
            what=f"overload: requests not answered 200 at {RECOVERY_MULTIPLE:g}x right after the "
            f"{MULTIPLES[-1]:g}x step, plus wrapper restarts and in-flight slots left taken",
            unit="requests",
            value=float(len(recovery.outcomes) - rec_sum["ok"] + int(about["restarted"]) + left_in_flight),
            spread=spread([float(len(s.outcomes) - len(s.status(200)) - len(s.status(503))) for s in steps])
            | {"of": "per step"},
            target=Target("value_max", 0, "0, same PID"),
            notes=f"{rec_sum['ok']} of {len(recovery.outcomes)} answered 200; "
            f"restarted: {'yes' if about['restarted'] else 'no'}; "
            f"llm_requests_in_flight after the steps: {left_in_flight:g}",
        ),
        Row(
            name="overload_rss_after_mb",
            what="overload: the wrapper's RSS after the recovery step",
            unit="MB",
            value=about["final_rss_mb"],
            reference=baseline,
            reference_what="its RSS after warm-up, before the overload",
            spread=_window_spread(recovery.rss_samples_mb, "50 ms samples"),
            target=Target(
                "over_reference_max", RSS_AFTER_LIMIT_MB, f"<= baseline + {RSS_AFTER_LIMIT_MB:g} MB"
            ),
        ),
    ]
    return rows


def write_figure(capacity: float, steps: list[Step], path: Path) -> None:
    """Offered rate on x: admitted and rejected throughput; p99 latencies; the wrapper's RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    load = steps[:-1]
    sums = [s.summary() for s in load]
    x = [s["offered_req_per_s"] for s in sums]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    ax1.plot(x, x, ":", color="grey", label="offered")
    ax1.plot(x, [s["ok_req_per_s"] for s in sums], "o-", label="served (200)")
    ax1.plot(
        x,
        [s["rejected_503"] / st.seconds for s, st in zip(sums, load, strict=True)],
        "s-",
        label="rejected (503)",
    )
    ax1.axhline(capacity, color="black", linewidth=0.8, label=f"capacity {capacity:.0f} req/s")
    ax1.set(xlabel="offered load (req/s)", ylabel="req/s", title="throughput")
    ax2.plot(x, [s["ok_p99_ms"] for s in sums], "o-", label="served p99")
    ax2.plot(x, [s["reject_p99_ms"] for s in sums], "s-", label="503 p99 (from intended send)")
    ax2.plot(x, [s["reject_p99_from_send_ms"] for s in sums], "^--", label="503 p99 (from actual send)")
    ax2.plot(x, [s["reject_p50_ms"] for s in sums], "v:", label="503 p50 (from intended send)")
    ax2.axhline(REJECT_P99_LIMIT_MS, color="red", linewidth=0.8, label=f"target {REJECT_P99_LIMIT_MS:g} ms")
    ax2.set(xlabel="offered load (req/s)", ylabel="ms (log)", title="latency", yscale="log")
    ax3.plot(x, [s["rss_before_mb"] for s in sums], "o-", label="before the step")
    ax3.plot(x, [s["rss_max_mb"] for s in sums], "s-", label="max during")
    ax3.plot(x, [s["rss_after_mb"] for s in sums], "^--", label="after")
    ax3.set(xlabel="offered load (req/s)", ylabel="MB", title="wrapper RSS")
    ax3.set_ylim(bottom=0)
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for mult, xv in zip(MULTIPLES, x, strict=True):
        ax1.annotate(
            f"{mult:g}x", (xv, 0), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8
        )
    fig.suptitle(
        f"wrapper under overload: max_in_flight {MAX_IN_FLIGHT}, sim service time {SERVICE_S:g} s, "
        f"{load[0].seconds:g} s per step"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _cell(x: Any) -> str:
    return "-" if x is None else f"{x:g}" if isinstance(x, float) else str(x)


def steps_table(capacity: float, steps: list[Step], about: dict[str, Any], smoke: bool) -> str:
    m = machine()
    head = (
        f"Measured {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}{' (SMOKE)' if smoke else ''} on "
        f"{m['cpus_allowed']} CPUs ({m['cpu_model'] or 'unknown CPU'}), Python {m['python']}; load average "
        f"{m['load_average_at_start']}. Capacity {capacity:.1f} req/s; {about['step_s']:g} s per step; "
        f"wrapper RSS baseline {about['baseline_rss_mb']} MB, after the recovery step "
        f"{about['final_rss_mb']} MB; restarted: {'yes' if about['restarted'] else 'no'}."
    )
    cols = [
        ("step", "step"), ("offered req/s", "offered_req_per_s"), ("sent/s", "achieved_send_rate"),
        ("200/s", "ok_req_per_s"), ("200 p50 ms", "ok_p50_ms"), ("200 p99 ms", "ok_p99_ms"),
        ("503s", "rejected_503"), ("503 counted", "counted_rejections"), ("503 p50 ms", "reject_p50_ms"),
        ("503 p99 ms", "reject_p99_ms"), ("503 p99 ms from send", "reject_p99_from_send_ms"),
        ("other errors", "other_errors"), ("send lag p99 ms", "send_lag_p99_ms"),
        ("RSS before / max / after MB", ""), ("wrapper CPU s/s", "wrapper_cpu_s_per_s"),
    ]  # fmt: skip
    lines = [head, "", "| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for step in steps:
        s = step.summary()
        s[""] = f"{s['rss_before_mb']} / {s['rss_max_mb']} / {s['rss_after_mb']}"
        lines.append("| " + " | ".join(_cell(s[k]) for _, k in cols) + " |")
    return "\n".join(lines)


def write_doc(path: Path, block: str) -> None:
    """Replace the block between the markers of `path` (the prose around it is hand-written)."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Overload\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    path.write_text(f"{head}{START}\n{block}\n{END}{rest.split(END, 1)[1]}", encoding="utf-8")


def run(workdir: Path, smoke: bool) -> list[Row]:
    client_cpu, server_cpus = split_cpus()
    model_port, wrapper_port = free_ports(2)
    wrapper = f"http://127.0.0.1:{wrapper_port}"
    commands = start_commands(model_port, wrapper_port)
    with pinned({client_cpu}), children(commands, workdir, server_cpus) as procs:
        wait_http(f"http://127.0.0.1:{model_port}/api/tags", 60, alive=lambda: _alive(procs["model"]))
        wait_http(f"{wrapper}/ready", 60, alive=lambda: _alive(procs["wrapper"]))
        capacity, per_second, steps, about = asyncio.run(measure(wrapper, procs["wrapper"].pid, smoke))
    if not math.isfinite(capacity) or capacity <= 0:
        raise RuntimeError(f"no request succeeded while measuring the capacity; see {workdir}/wrapper.log")
    # Smoke numbers mean nothing: their figure and table go to the scratch folder, not docs/.
    figure, doc = (workdir / "overload.png", workdir / "overload.md") if smoke else (FIGURE, DOC)
    write_figure(capacity, steps, figure)
    write_doc(doc, steps_table(capacity, steps, about, smoke))
    return rows_from(capacity, per_second, steps, about)
