"""Errors the model server answers with, as Ollama words them: `{"error": "..."}` plus a status code.

They belong to labkit's one hierarchy (`LabkitError`), so callers can catch them like any other.
"""

from __future__ import annotations

import logging

from labkit.errors import LabkitError

__all__ = [
    "BadRequestError",
    "ModelServerAPIError",
    "QueueFullError",
    "UnknownModelError",
]

logger = logging.getLogger(__name__)

QUEUE_FULL_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


class ModelServerAPIError(LabkitError):
    """An error the model server answers with; `status_code` is its HTTP status."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": self.message}


class BadRequestError(ModelServerAPIError):
    """The request body is not what the Ollama API accepts (400)."""

    status_code = 400


class UnknownModelError(ModelServerAPIError):
    """The request names a model this server does not serve (404)."""

    status_code = 404

    def __init__(self, model: str) -> None:
        super().__init__(f'model "{model}" not found, try pulling it first')
        self.model = model


class QueueFullError(ModelServerAPIError):
    """Every slot is busy and max_queue requests already wait for one (503, Ollama's wording)."""

    status_code = 503

    def __init__(self) -> None:
        super().__init__(QUEUE_FULL_MESSAGE)
