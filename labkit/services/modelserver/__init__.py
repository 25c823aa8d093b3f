"""labkit's embedded Ollama-API-compatible model server, with Ollama's OpenAI-compatible `/v1` routes:
FastAPI + uvicorn, a llama.cpp or a sim engine (docs/openai.md).

`create_app(ModelServerSettings(...))` builds the ASGI app; `serve()` runs it; so does
`python -m labkit.services.modelserver`.
"""

from labkit.services.modelserver._api_errors import (
    BadRequestError,
    ModelServerAPIError,
    QueueFullError,
    UnknownModelError,
)
from labkit.services.modelserver._app import API_VERSION, build_engine, create_app
from labkit.services.modelserver._cli import main
from labkit.services.modelserver._engine import (
    ChatMessage,
    Engine,
    GenerationOptions,
    GenerationResult,
    TokenStream,
)
from labkit.services.modelserver._llama_engine import LlamaEngine
from labkit.services.modelserver._metrics import ModelServerMetrics
from labkit.services.modelserver._server import BackgroundModelServer, serve
from labkit.services.modelserver._settings import ModelServerSettings, parse_keep_alive
from labkit.services.modelserver._sim_engine import SimEngine

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
