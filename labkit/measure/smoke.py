"""A smoke run against a running lab: a few real requests through the wrapper, checked against
what Prometheus recorded, written as a small report. The lab's first end-to-end proof.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from labkit.config import LabConfig
from labkit.errors import LabkitError
from labkit.lab.contract import SERVICE_NAMES
from labkit.measure.histograms import GENERATION_ENDPOINT_MATCHER, GENERATION_ENDPOINTS
from labkit.rundir import RunDirectory, RunFile

__all__ = ["SmokeRequest", "SmokeResult", "run_smoke"]

PROMPTS = (
    "Explain in one sentence what a service level objective is.",
    "Name three things that make a web service slow.",
    "Write a haiku about a server that restarts.",
    "What does p99 latency mean?",
    "Give one tip for running a reliable API.",
)


@dataclass(frozen=True)
class SmokeRequest:
    prompt: str
    status: int
    time_to_first_token_s: float | None
    duration_s: float
    output_tokens: int
    text: str
    error: str | None


@dataclass(frozen=True)
class SmokeResult:
    run_id: str
    directory: Path
    requests: list[SmokeRequest]
    prometheus: dict[str, float | None]

    @property
    def succeeded(self) -> int:
        return sum(1 for r in self.requests if r.status == 200 and r.error is None)

    @property
    def prometheus_agrees(self) -> bool:
        """Prometheus counted exactly the requests the wrapper counted, and saw every service up."""
        p = self.prometheus
        return p["requests_counted_by_prometheus"] == p["requests_counted_by_wrapper"] and p[
            "services_up"
        ] == len(SERVICE_NAMES)


def _one_request(
    client: httpx.Client, url: str, prompt: str, max_tokens: int, headers: dict[str, str]
) -> SmokeRequest:
    start = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    final: dict[str, Any] = {}
    try:
        with client.stream(
            "POST", url, json={"prompt": prompt, "max_tokens": max_tokens, "stream": True}, headers=headers
        ) as r:
            if r.status_code != 200:
                r.read()
                return SmokeRequest(
                    prompt,
                    r.status_code,
                    None,
                    time.perf_counter() - start,
                    0,
                    "",
                    r.json().get("error", r.text) if r.text else "no body",
                )
            for line in r.iter_lines():
                if not line:
                    continue
                chunk = json.loads(line)
                if chunk.get("response"):
                    if first is None:
                        first = time.perf_counter() - start
                    pieces.append(chunk["response"])
                if chunk.get("done"):
                    final = chunk
    except httpx.HTTPError as exc:
        return SmokeRequest(prompt, 0, first, time.perf_counter() - start, 0, "".join(pieces), repr(exc))
    return SmokeRequest(
        prompt,
        200,
        first,
        time.perf_counter() - start,
        int(final.get("output_tokens", 0)),
        "".join(pieces),
        final.get("error"),
    )


def _prometheus_value(client: httpx.Client, base: str, query: str) -> float | None:
    try:
        response = client.get(f"{base}/api/v1/query", params={"query": query}, timeout=5.0)
        response.raise_for_status()
        result = response.json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise LabkitError(
            f"Prometheus at {base} did not answer {query!r} ({type(exc).__name__}: {exc}); "
            "check `labkit status` and `labkit logs prometheus`"
        ) from exc
    return float(result[0]["value"][1]) if result else None


def _wrapper_request_count(client: httpx.Client, wrapper: str) -> float:
    """`llm_requests_total` of the generation endpoints, read from the wrapper's own /metrics."""
    text = client.get(wrapper + "/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "llm_requests"
        for sample in family.samples
        if sample.name == "llm_requests_total" and sample.labels.get("endpoint") in GENERATION_ENDPOINTS
    )


def run_smoke(config: LabConfig, *, out_dir: Path, requests: int = 5, max_tokens: int = 48) -> SmokeResult:
    """Send `requests` streamed requests (sequentially), then read the same run back from Prometheus."""
    if not 1 <= requests <= 100:
        raise LabkitError(f"requests must be between 1 and 100, got {requests}")
    run = RunDirectory.create(out_dir, "smoke")
    run_id, directory = run.run_id, run.path
    wrapper, prom = config.wrapper_url, config.prometheus_url
    query_total = f"sum(llm_requests_total{{{GENERATION_ENDPOINT_MATCHER}}})"
    results: list[SmokeRequest] = []
    timeout = httpx.Timeout(config.backend_timeout_s + 5, connect=2.0)
    auth = config.wrapper_auth_headers()  # the API key, when the lab has one: sent to the wrapper only
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        _prometheus_value(client, prom, query_total)  # fails early, before any request, if it is down
        for i in range(requests):
            prompt = PROMPTS[i % len(PROMPTS)]
            results.append(_one_request(client, wrapper + "/generate", prompt, max_tokens, auth))
        # Prometheus must come to the wrapper's own count, with every target scraped, within a few scrapes.
        own_count = _wrapper_request_count(client, wrapper)
        deadline = time.monotonic() + 5 * config.scrape_interval_s + 2
        while time.monotonic() < deadline and not (
            _prometheus_value(client, prom, query_total) == own_count
            and _prometheus_value(client, prom, "count(up == 1) == count(up)") is not None
            and _prometheus_value(client, prom, "sum(lab_service_up)") is not None
        ):
            time.sleep(config.scrape_interval_s / 4)
        queries = {
            "requests_counted_by_prometheus": query_total,
            "services_up": "sum(lab_service_up)",
            "restarts_total": "sum(lab_service_restarts_total)",
            "wrapper_p95_seconds_interpolated": (
                "histogram_quantile(0.95, sum by (le) (llm_request_duration_seconds_bucket))"
            ),
            "gpu_available": "max(lab_gpu_available)",
        }
        prometheus = {name: _prometheus_value(client, prom, q) for name, q in queries.items()}
        prometheus["requests_counted_by_wrapper"] = own_count
    result = SmokeResult(run_id, directory, results, prometheus)
    _write(result, config)
    return result


def _write(result: SmokeResult, config: LabConfig) -> None:
    data = {
        "run_id": result.run_id,
        "engine": config.engine,
        "model": config.model_name,
        "requests": [asdict(r) for r in result.requests],
        "prometheus": result.prometheus,
    }
    run = RunDirectory(result.directory)
    run.write_json(RunFile.SMOKE, data)
    lines = [
        f"# labkit smoke run {result.run_id}",
        "",
        f"Engine `{config.engine}`, model `{config.model_name}`. "
        f"{result.succeeded}/{len(result.requests)} requests succeeded.",
        "",
        "| # | status | TTFT (s) | end-to-end (s) | output tokens | text |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(result.requests, 1):
        ttft = f"{r.time_to_first_token_s:.3f}" if r.time_to_first_token_s is not None else "-"
        text = (r.error or r.text).replace("\n", " ").replace("|", "/")[:120]
        lines.append(f"| {i} | {r.status} | {ttft} | {r.duration_s:.3f} | {r.output_tokens} | {text} |")
    lines += [
        "",
        "Prometheus' view of the same run (`wrapper_p95_seconds_interpolated` is `histogram_quantile`, "
        "interpolated inside a bucket; the table above has the exact per-request values):",
        "",
    ]
    lines += [f"- `{k}`: {v}" for k, v in result.prometheus.items()]
    run.write_text(RunFile.SMOKE_REPORT, "\n".join(lines) + "\n")
