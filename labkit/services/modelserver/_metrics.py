"""The model server's Prometheus metrics, in a registry of its own (never the global one).

Ollama has no /metrics (ollama/ollama#3144); these series are what the lab measures the model tier by.
"""

from __future__ import annotations

import logging
from functools import partial

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
        counter = partial(Counter, registry=self.registry)
        gauge = partial(Gauge, registry=self.registry)
        histogram = partial(Histogram, registry=self.registry)
        self.info = gauge(
            "model_server_info",
            "Always 1; labels say which engine and model this model server runs.",
            ["engine", "model", "version"],
        )
        self.info.labels(engine=engine, model=model, version=version).set(1)
        self.parallel_slots = gauge(
            "model_parallel_slots", "Requests that can generate at once (num_parallel)."
        )
        self.parallel_slots.set(num_parallel)
        self.queue_capacity = gauge(
            "model_queue_capacity", "Requests that may wait for a slot before 503 (max_queue)."
        )
        self.queue_capacity.set(max_queue)
        self.requests = counter(
            "model_requests",
            "Finished HTTP requests by endpoint and outcome status (499: client went away; 500 also "
            "for an error after a 200 stream began).",
            ["endpoint", "status_code"],
        )
        self.request_duration = histogram(
            "model_request_duration_seconds",
            "Time from a generate/chat request's arrival to its last byte, queueing and loading included.",
            ["endpoint"],
            buckets=REQUEST_DURATION_BUCKETS,
        )
        self.time_to_first_token = histogram(
            "model_time_to_first_token_seconds",
            "Time from a generate/chat request's arrival to its first generated token.",
            ["endpoint"],
            buckets=TIME_TO_FIRST_TOKEN_BUCKETS,
        )
        self.queue_depth = gauge("model_queue_depth", "Requests waiting for a free generation slot.")
        self.requests_running = gauge("model_requests_running", "Requests holding a generation slot.")
        self.loaded_models = gauge("model_loaded_models", "Models loaded in memory (0 or 1).")
        self.load_duration = histogram(
            "model_load_duration_seconds",
            "Time to load the model into memory; the count is the number of loads.",
            buckets=_LOAD_DURATION_BUCKETS,
        )
        self.unloads = counter(
            "model_unloads",
            "Model unloads by reason: expired (keep_alive ran out), keep_alive_zero, shutdown.",
            ["reason"],
        )
        self.prompt_tokens = counter(
            "model_prompt_tokens", "Prompt tokens evaluated (as the engine counts them)."
        )
        self.output_tokens = counter("model_output_tokens", "Tokens generated.")
        self.rejected_requests = counter(
            "model_rejected_requests",
            "Requests refused before generating, by reason (queue_full).",
            ["reason"],
        )
        self.rejected_requests.labels(reason="queue_full")

    def exposition(self) -> bytes:
        """The text exposition of every series (what GET /metrics answers)."""
        return generate_latest(self.registry)
