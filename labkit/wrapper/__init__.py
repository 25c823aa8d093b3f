"""labkit.wrapper — the lab's public LLM API (POST /generate, /health, /ready, /metrics) in front of an
Ollama-API model server, with the lab's request, token and latency metrics.
"""

from __future__ import annotations

from labkit.wrapper._app import GenerateRequest, create_app
from labkit.wrapper._backend import UpstreamError
from labkit.wrapper._cli import main
from labkit.wrapper._metrics import WrapperMetrics
from labkit.wrapper._server import serve
from labkit.wrapper._settings import WrapperSettings

__all__ = [
    "GenerateRequest",
    "UpstreamError",
    "WrapperMetrics",
    "WrapperSettings",
    "create_app",
    "main",
    "serve",
]
