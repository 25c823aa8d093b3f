"""The lab's public LLM API (POST /generate, /health, /ready, /metrics) in front of an Ollama-API model
server, with the lab's request, token and latency metrics, and a token-protected fault-injection API
(/admin/faults: latency, error, stream_cut, each ended by a TTL the wrapper holds).
"""

from __future__ import annotations

from labkit.services.wrapper._app import GenerateRequest, create_app
from labkit.services.wrapper._backend import UpstreamError
from labkit.services.wrapper._cli import main
from labkit.services.wrapper._faults import (
    ErrorFault,
    ErrorParams,
    FaultSpec,
    LatencyFault,
    LatencyParams,
    StreamCutFault,
    StreamCutParams,
)
from labkit.services.wrapper._metrics import WrapperMetrics
from labkit.services.wrapper._server import serve
from labkit.services.wrapper._settings import WrapperSettings
from labkit.services.wrapper._tokens import read_token_file

__all__ = [
    "ErrorFault",
    "ErrorParams",
    "FaultSpec",
    "GenerateRequest",
    "LatencyFault",
    "LatencyParams",
    "StreamCutFault",
    "StreamCutParams",
    "UpstreamError",
    "WrapperMetrics",
    "WrapperSettings",
    "create_app",
    "main",
    "read_token_file",
    "serve",
]
