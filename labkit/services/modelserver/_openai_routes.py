"""Ollama's OpenAI-compatible endpoints on the model server: `/v1/models`, `/v1/models/{model}`,
`/v1/chat/completions`, `/v1/completions` and `/v1/embeddings` (refused: see docs/openai.md).

Generations take the same path as `/api/chat` and `/api/generate` (`GenerationService.run`); only the
request models and the answers' shape are OpenAI's. Errors, including a bad body, are OpenAI's
`{"error": {"message", "type", "param", "code"}}` (`parse_openai_body`, `is_openai_path`).
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from labkit.services.modelserver._api_errors import BadRequestError, UnknownModelError
from labkit.services.modelserver._api_requests import parse_json_object
from labkit.services.modelserver._generation import Generation, GenerationService, chat_tokens, prompt_tokens
from labkit.services.modelserver._model_card import ModelCard
from labkit.services.modelserver._openai_requests import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
)
from labkit.services.modelserver._openai_responses import OpenAIShape, model_object
from labkit.services.modelserver._openapi import (
    CHAT_CHUNK,
    CHAT_COMPLETION,
    MODEL_LIST,
    MODEL_OBJECT,
    TEXT_CHUNK,
    TEXT_COMPLETION,
    json_ok_response,
    openai_error_responses,
    openai_generation_ok_response,
    request_body,
)
from labkit.validation import describe_error, format_problem
from labkit.yaml_lines import format_loc

__all__ = ["OPENAI_PREFIX", "add_openai_routes", "is_openai_path", "parse_openai_body"]

logger = logging.getLogger(__name__)

OPENAI_PREFIX = "/v1"
Body = TypeVar("Body", bound=BaseModel)


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a body the route parses itself; the schemas are the document's components
    (`_openai_requests.request_schemas`)."""
    return request_body({"$ref": f"#/components/schemas/{model.__name__}"})


def is_openai_path(path: str) -> bool:
    """Whether a request path is answered in OpenAI's error shape."""
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


def parse_openai_body(model: type[Body], raw: bytes) -> Body:
    """A /v1 request body, or a 400 whose message names every problem (`messages[0].role: Field required`)
    and whose `param` is the first one's field."""
    body = parse_json_object(raw)  # any content type, as Ollama reads it; lone surrogates replaced
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = [describe_error(error) for error in exc.errors()]
        message = "; ".join(format_problem(loc, text) for loc, text in problems)
        param = next((format_loc(loc) for loc, _ in problems if loc), None)
        raise BadRequestError(message, param=param) from None


def add_openai_routes(app: FastAPI, *, card: ModelCard, service: GenerationService) -> None:
    """The /v1 routes, on the app's generation service and model card."""
    engine = service.engine

    def created() -> int:
        return int(card.modified_at.timestamp())

    def check_served(model: str) -> None:
        if not card.matches(model):
            raise UnknownModelError(model)

    @app.get(
        OPENAI_PREFIX + "/models",
        responses=json_ok_response(MODEL_LIST, "the models this server has"),
    )
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_object(card.name, created())]}

    @app.get(
        OPENAI_PREFIX + "/models/{model:path}",
        responses={**json_ok_response(MODEL_OBJECT, "the model"), **openai_error_responses(404)},
    )
    async def retrieve_model(model: str) -> dict[str, Any]:
        check_served(model)
        return model_object(model, created())

    @app.post(
        OPENAI_PREFIX + "/chat/completions",
        response_class=Response,
        responses={
            **openai_generation_ok_response(CHAT_COMPLETION, CHAT_CHUNK, "the chat completion"),
            **openai_error_responses(400, 404, 500, 503),
        },
        openapi_extra=_body_schema(ChatCompletionRequest),
    )
    async def chat_completions(request: Request) -> Response:
        body = parse_openai_body(ChatCompletionRequest, await request.body())
        check_served(body.model)
        generation = Generation(
            endpoint=OPENAI_PREFIX + "/chat/completions",
            model=body.model,
            stream=bool(body.stream),
            keep_alive=service.lifecycle.default_keep_alive,
            tokens=chat_tokens(engine, body.chat_messages(), body.options()),
            shape=OpenAIShape(chat=True, include_usage=body.include_usage),
        )
        return await service.run(generation, request)

    @app.post(
        OPENAI_PREFIX + "/completions",
        response_class=Response,
        responses={
            **openai_generation_ok_response(TEXT_COMPLETION, TEXT_CHUNK, "the text completion"),
            **openai_error_responses(400, 404, 500, 503),
        },
        openapi_extra=_body_schema(CompletionRequest),
    )
    async def completions(request: Request) -> Response:
        body = parse_openai_body(CompletionRequest, await request.body())
        check_served(body.model)
        generation = Generation(
            endpoint=OPENAI_PREFIX + "/completions",
            model=body.model,
            stream=bool(body.stream),
            keep_alive=service.lifecycle.default_keep_alive,
            # Through the chat template, as Ollama's /v1/completions (its /api/generate without raw) does.
            tokens=prompt_tokens(engine, body.prompt, body.options()),
            shape=OpenAIShape(chat=False, include_usage=body.include_usage),
        )
        return await service.run(generation, request)

    @app.post(
        OPENAI_PREFIX + "/embeddings",
        response_class=Response,
        responses=openai_error_responses(400, 404),
        openapi_extra=_body_schema(EmbeddingRequest),
    )
    async def embeddings(request: Request) -> Response:
        """Refused: the engines generate and do not embed (docs/openai.md says why)."""
        body = parse_openai_body(EmbeddingRequest, await request.body())
        check_served(body.model)
        raise BadRequestError(
            f'model "{body.model}" does not support embeddings: labkit\'s model server loads it for text '
            "generation only (the sim engine has no model at all); use an embedding model served elsewhere",
            param="model",
        )
