"""Errors the model server answers with: a status and a message, in Ollama's shape (`{"error": "..."}`) on
the Ollama routes and in OpenAI's (`{"error": {"message", "type", "param", "code"}}`) on the /v1 routes.
They belong to labkit's one hierarchy (`LabkitError`), so callers can catch them like any other.
"""

from __future__ import annotations

import logging

from labkit.errors import LabkitError

__all__ = [
    "OPENAI_ERROR_TYPES",
    "BadRequestError",
    "ModelServerAPIError",
    "QueueFullError",
    "UnknownModelError",
]

logger = logging.getLogger(__name__)

QUEUE_FULL_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
# The `type` of an OpenAI error body by status, as Ollama's OpenAI layer (openai.NewError) chooses it.
OPENAI_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


class ModelServerAPIError(LabkitError):
    """An error the model server answers with; `status_code` is its HTTP status."""

    status_code = 500

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault, where there is one (OpenAI's `param`)

    def body(self) -> dict[str, str]:
        """Ollama's error body."""
        return {"error": self.message}

    def openai_body(self) -> dict[str, dict[str, str | None]]:
        """OpenAI's error body: `invalid_request_error` (400), `not_found_error` (404), else `api_error`."""
        kind = OPENAI_ERROR_TYPES.get(self.status_code, "api_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": None}}


class BadRequestError(ModelServerAPIError):
    """The request body is not what the API accepts, or asks for what this server cannot do (400)."""

    status_code = 400


class UnknownModelError(ModelServerAPIError):
    """The request names a model this server does not serve (404)."""

    status_code = 404

    def __init__(self, model: str) -> None:
        super().__init__(f'model "{model}" not found, try pulling it first', param="model")
        self.model = model


class QueueFullError(ModelServerAPIError):
    """Every slot is busy and max_queue requests already wait for one (503, Ollama's wording)."""

    status_code = 503

    def __init__(self) -> None:
        super().__init__(QUEUE_FULL_MESSAGE)
