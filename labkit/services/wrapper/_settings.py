"""The wrapper's settings: where it listens, which model backend it fronts, and its limits.

Validated once here (pydantic, keyword-only); the rest of the wrapper trusts them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from labkit.config import DEFAULT_MODEL_NAME
from labkit.services.wrapper._upstream import BackendApi

__all__ = ["WrapperSettings"]


class WrapperSettings(BaseModel):
    """Everything the wrapper service needs to know. Keyword-only, frozen, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", min_length=1, description="address to bind; loopback by default")
    port: int = Field(default=8000, ge=0, le=65535, description="port to bind; 0 picks a free one")
    backend_url: str = Field(
        default="http://127.0.0.1:11434",
        description="the model server: Ollama's root URL, or with --backend-api openai the API's base URL "
        "as OpenAI clients take it (usually ending in /v1)",
    )
    backend_api: BackendApi = Field(
        default="ollama",
        description="the API the model server speaks: ollama (native: /api/chat, /api/generate) or openai "
        "(OpenAI-compatible: /chat/completions, /completions, /models)",
    )
    backend_api_key_file: Path | None = Field(
        default=None,
        description="file holding the API key the model server needs, sent as Authorization: Bearer, read "
        "at start; without it none is sent",
    )
    model: str = Field(
        default=DEFAULT_MODEL_NAME, min_length=1, description="model used when a request names none"
    )
    max_in_flight: int = Field(
        default=32,
        ge=1,
        description="admitted generation requests at once (all endpoints); 503 beyond (429 on /v1)",
    )
    max_prompt_chars: int = Field(default=16_384, ge=1, description="longest prompt accepted, in characters")
    max_tokens_limit: int = Field(default=4096, ge=1, description="largest max_tokens (num_predict) accepted")
    backend_timeout_s: float = Field(
        default=60.0, gt=0, description="longest wait for the backend's next chunk"
    )
    connect_timeout_s: float = Field(default=2.0, gt=0, description="longest wait to connect to the backend")
    ready_timeout_s: float = Field(
        default=2.0, gt=0, description="longest wait for the model list in GET /ready and /v1/models"
    )
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After value of 503 answers, in seconds")
    admin_token_file: Path | None = Field(
        default=None,
        description="file holding the bearer token of the /admin/ fault API, read at start; "
        "without it the admin API is disabled (403)",
    )
    api_key_file: Path | None = Field(
        default=None,
        description="file holding the API key that POST /generate and /v1/ then require (Authorization: "
        "Bearer or X-API-Key), read at start; without it they are open",
    )

    @field_validator("backend_url")
    @classmethod
    def _check_backend_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")
