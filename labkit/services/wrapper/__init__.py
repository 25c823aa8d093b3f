"""The lab's public LLM API (POST /generate, the OpenAI-compatible /v1/chat/completions, /v1/completions
and /v1/models, /health, /ready, /metrics) in front of an Ollama or OpenAI-compatible model server, with
the lab's request, token and latency metrics (and the OpenTelemetry GenAI convention's), and a
token-protected fault-injection API (/admin/faults: latency, error, stream_cut, each ended by a TTL the
wrapper holds; the request bodies are the lab's fault contract, labkit.faults).
"""

from __future__ import annotations

from labkit.services.wrapper._app import GenerateRequest, create_app
from labkit.services.wrapper._cli import main
from labkit.services.wrapper._metrics import WrapperMetrics
from labkit.services.wrapper._server import serve
from labkit.services.wrapper._settings import WrapperSettings
from labkit.services.wrapper._tokens import read_token_file
from labkit.services.wrapper._upstream import UpstreamError

__all__ = [
    "GenerateRequest",
    "UpstreamError",
    "WrapperMetrics",
    "WrapperSettings",
    "create_app",
    "main",
    "read_token_file",
    "serve",
]
