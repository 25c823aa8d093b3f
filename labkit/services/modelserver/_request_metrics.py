"""ASGI middleware that counts every finished request in `model_requests_total{endpoint,status_code}`.

The endpoint is the route's template (`/v1/models/{model}`, never the model's name); the status is the one
sent, unless the handler recorded a different outcome (499, or 500 mid-stream).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkit.service_logs import note_request_outcome
from labkit.services.modelserver._metrics import ModelServerMetrics

__all__ = ["KNOWN_ENDPOINTS", "RequestMetricsMiddleware", "record_outcome"]

logger = logging.getLogger(__name__)

KNOWN_ENDPOINTS = frozenset(
    {
        "/",
        "/api/version",
        "/api/tags",
        "/api/ps",
        "/api/show",
        "/api/generate",
        "/api/chat",
        "/api/pull",
        "/metrics",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    }
)
_OUTCOME_KEY = "labkit_outcome_status"


def record_outcome(scope: MutableMapping[str, Any], status_code: int) -> None:
    """Count this request as `status_code`, whatever status line was sent (e.g. 499 client gone)."""
    scope.setdefault("state", {})[_OUTCOME_KEY] = status_code
    note_request_outcome(status_code)  # and in the request's log line


class RequestMetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware), so streams pass through untouched."""

    def __init__(self, app: ASGIApp, *, metrics: ModelServerMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        sent_status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal sent_status
            if message["type"] == "http.response.start":
                sent_status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, send_and_note)
        finally:
            endpoint = _endpoint(scope)
            status = scope.get("state", {}).get(_OUTCOME_KEY, sent_status)
            self._metrics.requests.labels(endpoint=endpoint, status_code=str(status)).inc()


def _endpoint(scope: Scope) -> str:
    """The route template the router matched (it records the route in the scope), else the path; "other"
    for anything that is not one of the server's endpoints."""
    template = getattr(scope.get("route"), "path_format", None)
    endpoint = template if isinstance(template, str) else scope.get("path", "")
    return endpoint if endpoint in KNOWN_ENDPOINTS else "other"
