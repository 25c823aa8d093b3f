"""The OpenTelemetry GenAI semantic-convention metrics the wrapper exports next to its own llm_* ones, in
Prometheus form (dots as underscores, the unit as a suffix), so that dashboards built on the convention work.

Followed: semantic conventions v1.41.0, docs/gen-ai/gen-ai-metrics.md (status: Development). The wrapper
is an intermediary: `server.address`/`server.port` name the model server behind it, as the convention asks
of an observer in front of one. A client may send any model name, so `gen_ai.request.model` and
`gen_ai.response.model` are bounded: a name becomes a label value once the upstream has served it, up to
`MAX_MODEL_LABELS` names; every other is `_OTHER`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from yarl import URL

from labkit.measure.histograms import (
    GEN_AI_REQUEST_DURATION_BUCKETS,
    GEN_AI_TIME_PER_OUTPUT_TOKEN_BUCKETS,
    GEN_AI_TIME_TO_FIRST_TOKEN_BUCKETS,
    GEN_AI_TOKEN_USAGE_BUCKETS,
)
from labkit.services.wrapper._upstream import Operation

__all__ = ["MAX_MODEL_LABELS", "OTHER_VALUE", "SEMCONV_VERSION", "GenAiMetrics"]

SEMCONV_VERSION = "1.41.0"
MAX_MODEL_LABELS = 16
# The convention's fallback value (error.type's `_OTHER`), used for model names past the bound too.
OTHER_VALUE = "_OTHER"

# Attributes as Prometheus labels: dots as underscores. gen_ai.system is the name gen_ai.provider.name had
# up to semconv 1.36; both are set, to the same value, so dashboards of either generation match.
_COMMON = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_system",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "server_address",
    "server_port",
)

_Children = tuple[Histogram, Histogram, Histogram, Histogram, Histogram]


def server_address_and_port(url: str) -> tuple[str, str]:
    """`server.address` and `server.port` of an upstream URL (the scheme's port when none is written)."""
    parsed = URL(url)
    return parsed.host or "", str(parsed.port or "")


class GenAiMetrics:
    """The gen_ai_* histograms of one wrapper, in its registry; observed once per request, at its end."""

    def __init__(self, registry: CollectorRegistry, *, provider: str, upstream_url: str, model: str) -> None:
        address, port = server_address_and_port(upstream_url)
        self._fixed = (provider, provider)
        self._server = (address, port)
        self._models = {model}
        self._children: dict[tuple[str, ...], _Children] = {}
        self._failures: dict[tuple[str, ...], Histogram] = {}
        self.request_duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "gen_ai.server.request.duration: time from a generation request's arrival to its last byte, "
            "failures included (with error_type).",
            [*_COMMON, "error_type"],
            buckets=GEN_AI_REQUEST_DURATION_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "gen_ai.server.time_to_first_token: time from arrival to the first generated token, of "
            "successful requests.",
            _COMMON,
            buckets=GEN_AI_TIME_TO_FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.time_per_output_token = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "gen_ai.server.time_per_output_token: (duration - time to first token) / (output tokens - 1), "
            "of successful requests with two or more output tokens.",
            _COMMON,
            buckets=GEN_AI_TIME_PER_OUTPUT_TOKEN_BUCKETS,
            registry=registry,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "gen_ai.client.token.usage: input and output tokens of one successful request, as the model "
            "server counted them ({token}).",
            [*_COMMON, "gen_ai_token_type"],
            buckets=GEN_AI_TOKEN_USAGE_BUCKETS,
            registry=registry,
        )

    def model_label(self, name: str | None, *, served: bool) -> str:
        """`name` as a label value: itself once served (within the bound), else `_OTHER`; "" for none."""
        if not name:
            return ""
        if name in self._models:
            return name
        if served and len(self._models) < MAX_MODEL_LABELS:
            self._models.add(name)
            return name
        return OTHER_VALUE

    def _labels(self, operation: Operation, request_model: str, response_model: str) -> tuple[str, ...]:
        return (operation, *self._fixed, request_model, response_model, *self._server)

    def observe_success(
        self,
        operation: Operation,
        *,
        request_model: str,
        response_model: str | None,
        duration_s: float,
        ttft_s: float | None,
        prompt_tokens: int | None,
        output_tokens: int,
    ) -> None:
        """Record a generation that ended well (every histogram whose value is known)."""
        key = (
            operation,
            self.model_label(request_model, served=True),
            self.model_label(response_model, served=True),
        )
        children = self._children.get(key)
        if children is None:
            labels = self._labels(*key)
            children = self._children[key] = (
                self.request_duration.labels(*labels, ""),
                self.time_to_first_token.labels(*labels),
                self.time_per_output_token.labels(*labels),
                self.token_usage.labels(*labels, "input"),
                self.token_usage.labels(*labels, "output"),
            )
        duration, ttft, per_token, tokens_in, tokens_out = children
        duration.observe(duration_s)
        if ttft_s is not None:
            ttft.observe(ttft_s)
            if output_tokens > 1:
                per_token.observe((duration_s - ttft_s) / (output_tokens - 1))
        if prompt_tokens is not None:
            tokens_in.observe(prompt_tokens)
        tokens_out.observe(output_tokens)

    def observe_failure(
        self, operation: Operation, *, request_model: str, error_type: str, duration_s: float
    ) -> None:
        """Record a generation that failed: its duration, with `error_type`."""
        key = (operation, self.model_label(request_model, served=False), error_type)
        child = self._failures.get(key)
        if child is None:
            child = self._failures[key] = self.request_duration.labels(
                *self._labels(operation, key[1], ""), error_type
            )
        child.observe(duration_s)
