"""Settings of the embedded model server, validated once at the edge (CLI or caller).

keep_alive durations are parsed by `labkit.durations` (shared with the lab's own configuration).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from labkit.config import DEFAULT_MODEL_NAME, embedded_model_path
from labkit.durations import parse_keep_alive
from labkit.errors import ModelNotFoundError

__all__ = ["EngineName", "ModelServerSettings", "default_threads", "parse_keep_alive"]

logger = logging.getLogger(__name__)

EngineName = Literal["llama", "sim"]


def default_threads() -> int:
    """Threads for llama.cpp: at most two, the lab's laptop budget."""
    return max(1, min(2, os.cpu_count() or 1))


class ModelServerSettings(BaseModel):
    """Everything the model server needs. Keyword-only and frozen; validated on construction."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    host: str = "127.0.0.1"
    port: int = Field(default=11434, ge=0, le=65535, description="0 picks a free port")
    engine: EngineName = "llama"
    model_name: str = Field(default=DEFAULT_MODEL_NAME, min_length=1)
    model_path: Path | None = Field(default=None, description="GGUF file; None means the embedded SmolLM2")
    num_parallel: int = Field(
        default=1, ge=1, le=64, description="requests generating at once (OLLAMA_NUM_PARALLEL)"
    )
    max_queue: int = Field(default=512, ge=0, description="requests waiting for a slot (OLLAMA_MAX_QUEUE)")
    keep_alive: str | float = Field(default="5m", description="default time a model stays loaded after use")
    seed: int = 0
    sim_ttft_s: float = Field(default=0.04, ge=0, le=60)
    sim_itl_s: float = Field(default=0.009, ge=0, le=10)
    sim_jitter: float = Field(default=0.1, ge=0, le=2, description="relative lognormal spread; 0 = exact")
    n_threads: int = Field(default_factory=default_threads, ge=1, le=256)
    n_ctx: int = Field(default=2048, ge=64, le=131072)

    @field_validator("keep_alive")
    @classmethod
    def _check_keep_alive(cls, value: str | float) -> str | float:
        parse_keep_alive(value)
        return value

    @field_validator("model_name")
    @classmethod
    def _check_model_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @property
    def keep_alive_seconds(self) -> float | None:
        """The default keep_alive in seconds; None means forever."""
        return parse_keep_alive(self.keep_alive)

    def resolved_model_path(self) -> Path:
        """The GGUF file the llama engine loads; raises ModelNotFoundError when it is missing."""
        if self.model_path is None:
            return embedded_model_path()
        if not self.model_path.is_file():
            raise ModelNotFoundError(
                f"model file {self.model_path} does not exist; pass --model-path with a GGUF file "
                "or leave it out to use the embedded SmolLM2"
            )
        return self.model_path
