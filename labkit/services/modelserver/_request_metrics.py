"""ASGI middleware that counts every finished request in `model_requests_total{endpoint,status_code}`.

The status is the one sent, unless the handler recorded a different outcome (499, or 500 mid-stream).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    }
)
_OUTCOME_KEY = "labkit_outcome_status"


def record_outcome(scope: MutableMapping[str, Any], status_code: int) -> None:
    """Count this request as `status_code`, whatever status line was sent (e.g. 499 client gone)."""
    scope.setdefault("state", {})[_OUTCOME_KEY] = status_code


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
            path = scope.get("path", "")
            endpoint = path if path in KNOWN_ENDPOINTS else "other"
            status = scope.get("state", {}).get(_OUTCOME_KEY, sent_status)
            self._metrics.requests.labels(endpoint=endpoint, status_code=str(status)).inc()
