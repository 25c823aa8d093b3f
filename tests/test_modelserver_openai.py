"""The model server's OpenAI-compatible /v1 routes, driven by the official `openai` client (sim engine):
models, chat and text completions (streamed with usage or not), stop, max_tokens, seed, the OpenAI error
shape, the refused embeddings, SSE framing, the shared generation path (same text as /api/chat and
/api/generate, same slots, same metrics), and the request models' mapping onto the engine's options.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import openai
import pytest

from labkit.services.modelserver import (
    BackgroundModelServer,
    ChatMessage,
    GenerationOptions,
    SimEngine,
    TokenStream,
)
from labkit.services.modelserver._api_errors import BadRequestError
from labkit.services.modelserver._openai_requests import ChatCompletionRequest, CompletionRequest
from labkit.services.modelserver._openai_routes import parse_openai_body
from tests.test_modelserver import metric, sim_settings, wait_for

MODEL = "smollm2:135m"
HELLO = [{"role": "user", "content": "Hello"}]


def _client(server: BackgroundModelServer) -> openai.OpenAI:
    # No retries: a 503 or a 500 must reach the test as it was answered.
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundModelServer]:
    with BackgroundModelServer(sim_settings()) as running:
        yield running


@pytest.fixture
def client(server: BackgroundModelServer) -> Iterator[openai.OpenAI]:
    with _client(server) as own:
        yield own


@pytest.fixture
def fresh() -> Iterator[BackgroundModelServer]:
    """A server of its own, for tests that read its metrics or hold its slots."""
    with BackgroundModelServer(sim_settings(num_parallel=1, max_queue=0, sim_itl_s=0.01)) as running:
        yield running


def _sse_events(text: str) -> list[str]:
    """The data of each server-sent event, checking the framing: `data: ...` lines, each event ended by a
    blank line, nothing else."""
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(event.startswith("data: ") and "\n" not in event for event in events), events
    return [event.removeprefix("data: ") for event in events]


# ---------------------------------------------------------------------------------------------
# models


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    (listed,) = client.models.list().data
    assert (listed.id, listed.object, listed.owned_by) == (MODEL, "model", "library")
    assert isinstance(listed.created, int) and listed.created > 0
    retrieved = client.models.retrieve(MODEL)
    assert retrieved.model_dump() == listed.model_dump()
    # Ollama's name rules: case, the default namespace and ":latest" do not make another model.
    assert client.models.retrieve("library/SmolLM2:135m").id == "library/SmolLM2:135m"


def test_unknown_model_is_an_openai_404(client: openai.OpenAI, server: BackgroundModelServer) -> None:
    expected = {
        "message": 'model "nope" not found, try pulling it first',
        "type": "not_found_error",
        "param": "model",
        "code": None,
    }
    with pytest.raises(openai.NotFoundError) as retrieved:
        client.models.retrieve("nope")
    assert retrieved.value.body == expected
    with pytest.raises(openai.NotFoundError) as chat:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert chat.value.status_code == 404 and chat.value.body == expected
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="hi")
    # The Ollama routes keep Ollama's shape for the same mistake.
    ollama = httpx.post(server.url + "/api/chat", json={"model": "nope", "messages": HELLO})
    assert (ollama.status_code, ollama.json()) == (404, {"error": expected["message"]})


def test_unknown_v1_path_is_an_openai_404(server: BackgroundModelServer) -> None:
    response = httpx.get(server.url + "/v1/responses")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


# ---------------------------------------------------------------------------------------------
# chat completions


def test_chat_completion(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=MODEL, messages=HELLO, seed=7)
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == MODEL
    (choice,) = answer.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "stop"  # the sim's natural end: no max_tokens
    usage = answer.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_streamed_with_usage(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=HELLO, seed=3)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content, finish, usage_chunk = chunks
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert all(chunk.usage is None and chunk.choices[0].finish_reason is None for chunk in content)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in content)
    assert text == whole.choices[0].message.content
    assert finish.choices[0].finish_reason == "stop" and finish.choices[0].delta.content == ""
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None and whole.usage is not None
    assert usage_chunk.usage.model_dump() == whole.usage.model_dump()
    assert usage_chunk.usage.completion_tokens == len(content)  # the sim yields one piece per token


def test_chat_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True, max_tokens=4))
    assert len(chunks) == 5 and chunks[-1].choices[0].finish_reason == "length"
    assert all(chunk.usage is None for chunk in chunks)


def test_sse_framing_ends_with_done(server: BackgroundModelServer) -> None:
    body = {"model": MODEL, "messages": HELLO, "stream": True, "max_tokens": 3}
    body["stream_options"] = {"include_usage": True}
    response = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    *chunks, done = _sse_events(response.text)
    assert done == "[DONE]"
    parsed = [json.loads(chunk) for chunk in chunks]
    assert [len(chunk["choices"]) for chunk in parsed] == [1, 1, 1, 1, 0]
    assert parsed[-1]["usage"]["completion_tokens"] == 3


def test_max_tokens_ends_with_length(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 5
    newer = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=5,
        max_completion_tokens=2,
    )
    assert newer.usage is not None and newer.usage.completion_tokens == 2  # max_completion_tokens wins


def test_stop_string_and_list(client: openai.OpenAI) -> None:
    free = client.chat.completions.create(model=MODEL, messages=HELLO, seed=11).choices[0].message.content
    assert free is not None
    words = free.split()
    stop = " " + words[3]
    expected = free[: free.index(stop)]
    for value in (stop, ["never-generated", stop]):
        answer = client.chat.completions.create(model=MODEL, messages=HELLO, seed=11, stop=value)
        assert answer.choices[0].message.content == expected
        assert answer.choices[0].finish_reason == "stop"


def test_seed_decides_the_text(client: openai.OpenAI) -> None:
    def text(seed: int) -> str | None:
        return (
            client.chat.completions.create(model=MODEL, messages=HELLO, seed=seed).choices[0].message.content
        )

    assert text(5) == text(5)
    assert text(5) != text(6)


def test_chat_takes_the_same_path_as_api_chat(client: openai.OpenAI, server: BackgroundModelServer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]
    openai_text = client.chat.completions.create(model=MODEL, messages=messages, seed=9, max_tokens=6)
    ollama = httpx.post(
        server.url + "/api/chat",
        json={
            "model": MODEL,
            "messages": messages,
            "stream": False,
            "options": {"seed": 9, "num_predict": 6},
        },
    ).json()
    assert openai_text.choices[0].message.content == ollama["message"]["content"]
    assert openai_text.usage is not None
    assert openai_text.usage.prompt_tokens == ollama["prompt_eval_count"]


def test_text_content_parts_are_joined(client: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "again"}]
    joined = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": parts}],
        seed=1,
    )
    plain = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello\nagain"}],
        seed=1,
    )
    assert joined.choices[0].message.content == plain.choices[0].message.content


# ---------------------------------------------------------------------------------------------
# text completions


def test_completion_and_its_stream(client: openai.OpenAI, server: BackgroundModelServer) -> None:
    answer = client.completions.create(model=MODEL, prompt="Why is the sky blue?", seed=2, max_tokens=8)
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    (choice,) = answer.choices
    assert choice.finish_reason == "length" and choice.text
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    # As Ollama's /v1/completions: the same as /api/generate without raw (the prompt in the chat template).
    ollama = httpx.post(
        server.url + "/api/generate",
        json={
            "model": MODEL,
            "prompt": "Why is the sky blue?",
            "stream": False,
            "options": {"seed": 2, "num_predict": 8},
        },
    ).json()
    assert choice.text == ollama["response"]
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="Why is the sky blue?",
            seed=2,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *pieces, finish, usage_chunk = chunks
    assert "".join(piece.choices[0].text for piece in pieces) == choice.text
    assert finish.choices[0].finish_reason == "length"
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.model_dump() == answer.usage.model_dump()


def test_completion_stop(client: openai.OpenAI) -> None:
    free = client.completions.create(model=MODEL, prompt="Tell me", seed=4).choices[0].text
    stop = " " + free.split()[2]
    answer = client.completions.create(model=MODEL, prompt="Tell me", seed=4, stop=stop)
    assert answer.choices[0].text == free[: free.index(stop)]
    assert answer.choices[0].finish_reason == "stop"


# ---------------------------------------------------------------------------------------------
# bad bodies and what the engines cannot do


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"messages": []}, "messages", "at least 1 item"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role", "Field required"),
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"stop": 5}, "stop", "a string or a list of strings"),
        ({"n": 2}, "n", "only n=1"),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}]},
            "tools",
            "tool calling is not supported",
        ),
        ({"logprobs": True}, "logprobs", "log probabilities"),
        ({"response_format": {"type": "json_object"}}, "response_format.type", "cannot constrain output"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content",
            "only text content parts",
        ),
    ],
)
def test_bad_chat_body_is_a_400_naming_the_field(
    client: openai.OpenAI, fields: dict[str, Any], param: str, words: str
) -> None:
    body: dict[str, Any] = {"model": MODEL, "messages": HELLO, **fields}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**body)
    error = raised.value.body
    assert isinstance(error, dict)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, None)
    assert words in error["message"] and error["message"].startswith(param)


def test_bad_completion_body_is_a_400(client: openai.OpenAI) -> None:
    for fields, param in [
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"echo": True}, "echo"),
        ({"suffix": "end"}, "suffix"),
        ({"best_of": 2}, "best_of"),
        ({"logprobs": 1}, "logprobs"),
        ({"seed": "1"}, "seed"),  # strict: no "1" for 1
    ]:
        with pytest.raises(openai.BadRequestError) as raised:
            client.completions.create(**{"model": MODEL, "prompt": "hi", **fields})
        assert isinstance(raised.value.body, dict) and raised.value.body["param"] == param, fields


def test_unreadable_bodies_are_openai_400s(server: BackgroundModelServer) -> None:
    url = server.url + "/v1/chat/completions"
    for content, message in [
        (b"", "missing request body"),
        (b"{not json", "invalid JSON body"),
        (b"[1]", "invalid JSON body: expected an object"),
    ]:
        response = httpx.post(url, content=content)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["message"].startswith(message) and error["type"] == "invalid_request_error"
        assert error["param"] is None
    # Like Ollama, the body is JSON whatever the content type says (curl -d sends a form's).
    form = httpx.post(url, content=json.dumps({"model": MODEL, "messages": HELLO, "max_tokens": 1}).encode(),
                      headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert form.status_code == 200 and form.json()["usage"]["completion_tokens"] == 1


def test_a_blank_model_is_required(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=" ", messages=HELLO)
    assert raised.value.body == {
        "message": "model: model is required",
        "type": "invalid_request_error",
        "param": "model",
        "code": None,
    }


def test_embeddings_are_refused_clearly(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model=MODEL, input="the lab")
    error = raised.value.body
    assert isinstance(error, dict) and (error["type"], error["param"]) == ("invalid_request_error", "model")
    assert "does not support embeddings" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="the lab")
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model=MODEL, input=[])
    assert isinstance(empty.value.body, dict) and empty.value.body["param"] == "input"


# ---------------------------------------------------------------------------------------------
# one path: slots, disconnects, failures and metrics


def test_queue_full_is_an_openai_503(fresh: BackgroundModelServer) -> None:
    with _client(fresh) as client, httpx.Client(base_url=fresh.url, timeout=10) as http:
        body = {"model": MODEL, "messages": HELLO, "stream": True, "max_tokens": 2000}
        with http.stream("POST", "/v1/chat/completions", json=body) as holder:
            lines = holder.iter_lines()  # kept: a discarded iterator closes the connection
            assert next(lines).startswith("data: ")
            with pytest.raises(openai.InternalServerError) as raised:
                client.chat.completions.create(model=MODEL, messages=HELLO)
            assert raised.value.status_code == 503
            assert raised.value.body == {
                "message": "server busy, please try again.  maximum pending requests exceeded",
                "type": "api_error",
                "param": None,
                "code": None,
            }
        # Leaving the stream half-way is a 499 and frees the slot, as on /api/chat.
        wait_for(
            lambda: (
                metric(http, "model_requests_total", endpoint="/v1/chat/completions", status_code="499") == 1
            )
        )
        wait_for(lambda: metric(http, "model_requests_running") == 0)
        assert metric(http, "model_output_tokens_total") < 2000
        assert metric(http, "model_rejected_requests_total", reason="queue_full") == 1
        assert client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).usage is not None


def test_metrics_count_the_v1_routes_by_template(fresh: BackgroundModelServer) -> None:
    with _client(fresh) as client, httpx.Client(base_url=fresh.url, timeout=10) as http:
        answer = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
        list(client.completions.create(model=MODEL, prompt="hi", max_tokens=3, stream=True))
        client.models.retrieve(MODEL)
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("secret-model-name")
        client.models.list()
        wait_for(
            lambda: metric(http, "model_requests_total", endpoint="/v1/completions", status_code="200") == 1
        )
        exposition = http.get("/metrics").text
        assert "secret-model-name" not in exposition
        for endpoint, status, count in [
            ("/v1/chat/completions", "200", 1),
            ("/v1/models/{model}", "200", 1),
            ("/v1/models/{model}", "404", 1),
            ("/v1/models", "200", 1),
        ]:
            assert metric(http, "model_requests_total", endpoint=endpoint, status_code=status) == count
        for endpoint in ("/v1/chat/completions", "/v1/completions"):
            assert metric(http, "model_time_to_first_token_seconds_count", endpoint=endpoint) == 1
            assert metric(http, "model_request_duration_seconds_count", endpoint=endpoint) == 1
        assert answer.usage is not None
        assert metric(http, "model_output_tokens_total") == 4 + 3
        assert metric(http, "model_prompt_tokens_total") >= answer.usage.prompt_tokens


class _FailingEngine(SimEngine):
    """A fake for a failure the real engines cannot be made to produce on demand: the engine raising
    half-way through a generation (e.g. llama.cpp failing to decode)."""

    def chat(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, cancel: threading.Event
    ) -> TokenStream:
        stream = super().chat(messages, options, cancel)
        yield next(stream)
        raise RuntimeError("decode failed")


@pytest.fixture
def failing() -> Iterator[BackgroundModelServer]:
    engine = _FailingEngine(ttft_s=0.0, itl_s=0.0, jitter=0.0)
    with BackgroundModelServer(sim_settings(), engine=engine) as running:
        yield running


def test_a_generation_failing_mid_stream_ends_with_an_error_event(failing: BackgroundModelServer) -> None:
    server = failing
    expected = {
        "message": "generation failed: decode failed",
        "type": "api_error",
        "param": None,
        "code": None,
    }
    with _client(server) as client:
        stream = client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        with pytest.raises(openai.APIError) as raised:
            list(stream)
        assert raised.value.body == expected
        with pytest.raises(openai.InternalServerError) as whole:
            client.chat.completions.create(model=MODEL, messages=HELLO)
        assert whole.value.body == expected
    raw = httpx.post(
        server.url + "/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "stream": True}
    )
    assert raw.status_code == 200
    *pieces, error = _sse_events(raw.text)
    assert json.loads(error) == {"error": expected}  # and no [DONE]: the answer is not whole
    assert len(pieces) == 1


# ---------------------------------------------------------------------------------------------
# the request models


def test_openai_fields_map_onto_the_engine_options() -> None:
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 9,
            "seed": 4,
            "stop": "END",
            "frequency_penalty": 0.5,
            "presence_penalty": -0.5,
            "user": "ignored",
        }
    ).encode()
    request = parse_openai_body(ChatCompletionRequest, body)
    assert request.options() == GenerationOptions(
        num_predict=9,
        temperature=1.0,  # Ollama's /v1 defaults, not /api/chat's 0.8 and 0.9
        top_p=1.0,
        seed=4,
        stop=("END",),
        frequency_penalty=0.5,
        presence_penalty=-0.5,
    )
    assert request.chat_messages() == (ChatMessage(role="user", content="x"),)
    assert not request.include_usage and request.stream is False


def test_a_lone_surrogate_becomes_a_replacement_character() -> None:
    request = parse_openai_body(CompletionRequest, b'{"model": "m", "prompt": "a\\ud800b"}')
    assert request.prompt == "a\ufffdb"


def test_every_problem_is_in_the_message_and_the_first_is_the_param() -> None:
    body = b'{"model": "m", "messages": [{"role": ""}], "max_completion_tokens": 0}'
    with pytest.raises(BadRequestError) as raised:
        parse_openai_body(ChatCompletionRequest, body)
    assert raised.value.param == "messages[0].role"
    assert raised.value.message == (
        "messages[0].role: String should have at least 1 character; "
        "max_completion_tokens: Input should be greater than or equal to 1"
    )
