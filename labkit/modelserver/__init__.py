"""labkit's embedded Ollama-API-compatible model server: FastAPI + uvicorn, a llama.cpp or a sim engine.

`create_app(ModelServerSettings(...))` builds the ASGI app; `serve()` runs it; `python -m labkit.modelserver`.
"""

from labkit.modelserver._api_errors import (
    BadRequestError,
    ModelServerAPIError,
    QueueFullError,
    UnknownModelError,
)
from labkit.modelserver._app import API_VERSION, build_engine, create_app
from labkit.modelserver._cli import main
from labkit.modelserver._engine import ChatMessage, Engine, GenerationOptions, GenerationResult, TokenStream
from labkit.modelserver._llama_engine import LlamaEngine
from labkit.modelserver._metrics import ModelServerMetrics
from labkit.modelserver._server import BackgroundModelServer, serve
from labkit.modelserver._settings import ModelServerSettings, parse_keep_alive
from labkit.modelserver._sim_engine import SimEngine

__all__ = [
    "API_VERSION",
    "BackgroundModelServer",
    "BadRequestError",
    "ChatMessage",
    "Engine",
    "GenerationOptions",
    "GenerationResult",
    "LlamaEngine",
    "ModelServerAPIError",
    "ModelServerMetrics",
    "ModelServerSettings",
    "QueueFullError",
    "SimEngine",
    "TokenStream",
    "UnknownModelError",
    "build_engine",
    "create_app",
    "main",
    "parse_keep_alive",
    "serve",
]
