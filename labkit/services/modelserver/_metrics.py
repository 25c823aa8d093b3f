"""The model server's Prometheus metrics, in a registry of its own (never the global one).

Ollama has no /metrics (ollama/ollama#3144); these series are what the lab measures the model tier by.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from labkit.measure.histograms import REQUEST_DURATION_BUCKETS, TIME_TO_FIRST_TOKEN_BUCKETS

__all__ = ["ModelServerMetrics"]

logger = logging.getLogger(__name__)

# Loading SmolLM2 takes ~0.2 s on two cores; bigger GGUF files take seconds to minutes.
_LOAD_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip


class ModelServerMetrics:
    """Every series the model server exports; one instance per app, each with its own registry."""

    def __init__(self, *, engine: str, model: str, version: str, num_parallel: int, max_queue: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.info = Gauge(
            "model_server_info",
            "Always 1; labels say which engine and model this model server runs.",
            ["engine", "model", "version"],
            registry=registry,
        )
        self.info.labels(engine=engine, model=model, version=version).set(1)
        self.parallel_slots = Gauge(
            "model_parallel_slots", "Requests that can generate at once (num_parallel).", registry=registry
        )
        self.parallel_slots.set(num_parallel)
        self.queue_capacity = Gauge(
            "model_queue_capacity",
            "Requests that may wait for a slot before 503 (max_queue).",
            registry=registry,
        )
        self.queue_capacity.set(max_queue)
        self.requests = Counter(
            "model_requests",
            "Finished HTTP requests by endpoint and outcome status (499: client went away; 500 also "
            "for an error after a 200 stream began).",
            ["endpoint", "status_code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "model_request_duration_seconds",
            "Time from a generate/chat request's arrival to its last byte, queueing and loading included.",
            ["endpoint"],
            buckets=REQUEST_DURATION_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "model_time_to_first_token_seconds",
            "Time from a generate/chat request's arrival to its first generated token.",
            ["endpoint"],
            buckets=TIME_TO_FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "model_queue_depth", "Requests waiting for a free generation slot.", registry=registry
        )
        self.requests_running = Gauge(
            "model_requests_running", "Requests holding a generation slot.", registry=registry
        )
        self.loaded_models = Gauge(
            "model_loaded_models", "Models loaded in memory (0 or 1).", registry=registry
        )
        self.load_duration = Histogram(
            "model_load_duration_seconds",
            "Time to load the model into memory; the count is the number of loads.",
            buckets=_LOAD_DURATION_BUCKETS,
            registry=registry,
        )
        self.unloads = Counter(
            "model_unloads",
            "Model unloads by reason: expired (keep_alive ran out), keep_alive_zero, shutdown.",
            ["reason"],
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "model_prompt_tokens", "Prompt tokens evaluated (as the engine counts them).", registry=registry
        )
        self.output_tokens = Counter("model_output_tokens", "Tokens generated.", registry=registry)
        self.rejected_requests = Counter(
            "model_rejected_requests",
            "Requests refused before generating, by reason (queue_full).",
            ["reason"],
            registry=registry,
        )
        self.rejected_requests.labels(reason="queue_full")

    def exposition(self) -> bytes:
        """The text exposition of every series (what GET /metrics answers)."""
        return generate_latest(self.registry)
