"""The wrapper's Prometheus metrics, each app with its own registry: the lab's llm_* ones and the
OpenTelemetry GenAI convention's gen_ai_* ones (labkit.services.wrapper._semconv).

Names, labels and buckets are part of the lab's contract with dashboards, SLO rules and reports
(docs/metrics.md lists each one).
"""

from __future__ import annotations

from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from labkit.faults import WRAPPER_FAULT_KINDS
from labkit.measure.histograms import (
    GENERATION_ENDPOINTS,
    INTER_TOKEN_LATENCY_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    TIME_TO_FIRST_TOKEN_BUCKETS,
)
from labkit.services.wrapper._semconv import GenAiMetrics

__all__ = [
    "BACKEND_ERROR_KINDS",
    "CHAT_COMPLETIONS_ENDPOINT",
    "COMPLETIONS_ENDPOINT",
    "GENERATE_ENDPOINT",
    "GENERATE_STATUS_CODES",
    "REJECTION_REASONS",
    "WrapperMetrics",
]

GENERATE_ENDPOINT, CHAT_COMPLETIONS_ENDPOINT, COMPLETIONS_ENDPOINT = GENERATION_ENDPOINTS
# Every status the wrapper itself can give a generation request; pre-created so ratios never divide by
# a missing series. 499 is nginx's "client closed request", used for clients that leave early; 429 is
# what the OpenAI-compatible endpoints answer when full (/generate answers 503).
GENERATE_STATUS_CODES = (
    "200", "400", "401", "404", "405", "422", "429", "499", "500", "502", "503", "504",
)  # fmt: skip
# unauthorized: refused by the API key check (401, or 400 for a key sent in the URL).
REJECTION_REASONS = ("in_flight_limit", "backend_busy", "unauthorized")
BACKEND_ERROR_KINDS = (
    "connect", "timeout", "busy", "model_not_found", "bad_request", "http_4xx", "http_5xx", "stream",
)  # fmt: skip


class WrapperMetrics:
    """The metric objects of one wrapper app, registered in `self.registry` (never the global one)."""

    def __init__(self, *, model: str, version: str, provider: str, upstream_url: str) -> None:
        self.registry = CollectorRegistry()
        counter = partial(Counter, registry=self.registry)
        gauge = partial(Gauge, registry=self.registry)
        histogram = partial(Histogram, registry=self.registry)
        self.requests = counter(
            "llm_requests_total",
            "Requests to the public API by outcome; status_code 499 means the client left early.",
            ["endpoint", "status_code"],
        )
        self.request_duration = histogram(
            "llm_request_duration_seconds",
            "End-to-end duration of successful requests, from arrival to the final token.",
            ["endpoint"],
            buckets=REQUEST_DURATION_BUCKETS,
        )
        self.time_to_first_token = histogram(
            "llm_time_to_first_token_seconds",
            "Time from a request's arrival to the first non-empty token chunk from the backend.",
            buckets=TIME_TO_FIRST_TOKEN_BUCKETS,
        )
        self.inter_token_latency = histogram(
            "llm_inter_token_latency_seconds",
            "Gap between consecutive token chunks of one request, after the first.",
            buckets=INTER_TOKEN_LATENCY_BUCKETS,
        )
        self.output_tokens = counter(
            "llm_output_tokens_total",
            "Tokens generated, as the backend counted them (Ollama's eval_count, OpenAI's "
            "usage.completion_tokens), else the token chunks received.",
        )
        self.prompt_tokens = counter(
            "llm_prompt_tokens_total",
            "Prompt tokens evaluated, as the backend counted them (Ollama's prompt_eval_count, OpenAI's "
            "usage.prompt_tokens); not counted when it did not say.",
        )
        self.in_flight = gauge(
            "llm_requests_in_flight",
            "Admitted generation requests not yet finished, all endpoints (streams until their last line).",
        )
        self.rejected = counter(
            "llm_requests_rejected_total",
            "Requests turned away before generating, by reason (503 or 429 when full, 401/400 when "
            "unauthorized).",
            ["reason"],
        )
        self.backend_errors = counter(
            "llm_backend_errors_total", "Failed calls to the model backend, by kind.", ["kind"]
        )
        self.faults_active = gauge(
            "llm_faults_active",
            "Faults the wrapper is applying now, by kind (1 active, 0 not); each ends at its TTL.",
            ["kind"],
        )
        self.faults_injected = counter(
            "llm_faults_injected",
            "Requests an injected fault affected (delayed, answered with an error, or cut), by kind.",
            ["kind"],
        )
        self.info = Info("llm_wrapper", "The wrapper's version and default model.", registry=self.registry)
        self.info.info({"version": version, "model": model})

        self.gen_ai = GenAiMetrics(self.registry, provider=provider, upstream_url=upstream_url, model=model)

        for endpoint in GENERATION_ENDPOINTS:
            for code in GENERATE_STATUS_CODES:
                self.requests.labels(endpoint, code)
            self.request_duration.labels(endpoint)
        for reason in REJECTION_REASONS:
            self.rejected.labels(reason)
        for kind in BACKEND_ERROR_KINDS:
            self.backend_errors.labels(kind)
        for kind in WRAPPER_FAULT_KINDS:
            self.faults_active.labels(kind).set(0)
            self.faults_injected.labels(kind)
