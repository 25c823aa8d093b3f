"""The wrapper's OpenAI-compatible API, driven by the official `openai` client, in front of (a) labkit's
model server (sim engine) over Ollama's API and (b) an OpenAI-compatible upstream; and the gen_ai_* metrics.

Real servers on 127.0.0.1, each stopped by its fixture. The OpenAI-compatible upstream here is a small
in-process one, shaped like vLLM's answers, because it must produce what a real one rarely does on demand
(429, an error event mid-stream, a missing usage chunk); tests/integration/test_wrapper_llamacpp.py puts
the wrapper in front of llama-cpp-python's real server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from labkit.config import DEFAULT_MODEL_NAME
from labkit.measure.histograms import GENERATION_ENDPOINT_MATCHER, GENERATION_ENDPOINTS
from labkit.services.modelserver import BackgroundModelServer, ModelServerSettings
from labkit.services.wrapper import WrapperSettings, create_app, main
from labkit.services.wrapper._openai_api import _SseEncoder
from labkit.services.wrapper._openai_backend import read_events
from labkit.services.wrapper._semconv import MAX_MODEL_LABELS, OTHER_VALUE
from labkit.services.wrapper._upstream import Chunk, UpstreamError
from tests.conftest import promtool_check_metrics
from tests.test_wrapper import metric, serving, wait_until

API_KEY = "wrapper-api-key-for-tests"
UPSTREAM_KEY = "upstream-key-for-tests"
ADMIN_TOKEN = "admin-token-for-tests"
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
HELLO = [{"role": "user", "content": "Say hello."}]


def client(url: str, **kwargs: Any) -> openai.OpenAI:
    """The official client on the wrapper's /v1, without retries (a test wants the first answer)."""
    kwargs.setdefault("api_key", "unused")
    return openai.OpenAI(base_url=f"{url}/v1", max_retries=0, timeout=20, **kwargs)


def secret_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    text = httpx.get(url + "/metrics").text
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


# --------------------------------------------------------------------------------------------------
# An OpenAI-compatible upstream, answering as vLLM does: a role chunk, one chunk per token, the finish
# reason, the usage chunk when asked for, then [DONE]. Behaviour by model name.
# --------------------------------------------------------------------------------------------------
class FakeOpenAI:
    MODELS = ("tiny", "slow", "nousage", "broken-mid")

    def __init__(self, key: str | None = None) -> None:
        self.key = key
        self.bodies: dict[str, dict[str, Any]] = {}
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/chat/completions", self.generate, methods=["POST"]),
                Route("/v1/completions", self.generate, methods=["POST"]),
            ]
        )

    def refused(self, request: Request) -> Response | None:
        if self.key is not None and request.headers.get("authorization") != f"Bearer {self.key}":
            return JSONResponse({"error": {"message": "Invalid API key", "type": "auth"}}, 401)
        return None

    async def models(self, request: Request) -> Response:
        if (refusal := self.refused(request)) is not None:
            return refusal
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "vllm"} for m in self.MODELS]
        return JSONResponse({"object": "list", "data": data})

    async def generate(self, request: Request) -> Response:
        if (refusal := self.refused(request)) is not None:
            return refusal
        body = await request.json()
        model = body["model"]
        self.bodies[model] = body
        if model == "busy":
            return JSONResponse({"error": {"message": "too many pending requests", "code": 429}}, 429)
        if model == "picky":
            return JSONResponse({"object": "error", "message": "temperature must be <= 2", "code": 400}, 400)
        if model not in self.MODELS:
            message = f"The model `{model}` does not exist."
            return JSONResponse({"error": {"message": message, "type": "NotFoundError", "code": 404}}, 404)
        return StreamingResponse(self.events(body, request.url.path), media_type="text/event-stream")

    async def events(self, body: dict[str, Any], path: str) -> AsyncIterator[bytes]:
        model, chat = body["model"], path.endswith("/chat/completions")
        n = int(body.get("max_tokens") or 3)
        head = {"id": "x-1", "object": "chat.completion.chunk" if chat else "text_completion", "created": 1}

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return (
                b"data: "
                + json.dumps({**head, "model": model, "choices": choices, **extra}).encode()
                + b"\n\n"
            )

        if chat:
            yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i in range(n):
            if model == "slow":
                await asyncio.sleep(0.5)
            if model == "broken-mid" and i == 2:
                yield b'data: {"error": {"message": "the engine died", "code": 500}}\n\n'
                return
            piece = f"t{i} "
            choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            yield event([{**choice, "finish_reason": None}])
        last = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
        yield b": keep-alive comment\n\n"
        yield event([{**last, "finish_reason": "length"}])
        if (body.get("stream_options") or {}).get("include_usage") and model != "nousage":
            yield event([], usage={"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n})
        yield b"data: [DONE]\n\n"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    settings = ModelServerSettings(port=0, engine="sim", sim_ttft_s=0, sim_itl_s=0, sim_jitter=0)
    with BackgroundModelServer(settings) as server:
        yield server.url


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(key=UPSTREAM_KEY)
    with serving(fake.app) as url:
        yield fake, url


Starter = Callable[..., str]


@pytest.fixture
def start_wrapper(tmp_path: Path) -> Iterator[Starter]:
    """A fresh wrapper (fresh metrics) with the given settings; an admin token always."""
    with ExitStack() as stack:

        def start(**settings: Any) -> str:
            token = secret_file(tmp_path, "admin-token", ADMIN_TOKEN)
            app = create_app(WrapperSettings(admin_token_file=token, **settings))
            return stack.enter_context(serving(app))

        yield start


@pytest.fixture
def over_sim(start_wrapper: Starter, sim_url: str) -> str:
    return start_wrapper(backend_url=sim_url, model=DEFAULT_MODEL_NAME)


@pytest.fixture
def over_openai(start_wrapper: Starter, upstream: tuple[FakeOpenAI, str], tmp_path: Path) -> str:
    key = secret_file(tmp_path, "upstream-key", UPSTREAM_KEY)
    return start_wrapper(
        backend_url=upstream[1] + "/v1", backend_api="openai", backend_api_key_file=key, model="tiny"
    )


# ---------------------------------------------------------------------------- both upstreams


@pytest.fixture(params=["ollama", "openai"])
def wrapper(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The wrapper over each upstream, and the model it serves."""
    if request.param == "ollama":
        return request.getfixturevalue("over_sim"), DEFAULT_MODEL_NAME
    return request.getfixturevalue("over_openai"), "tiny"


def test_the_official_client_lists_and_retrieves_models(wrapper: tuple[str, str]) -> None:
    url, model = wrapper
    models = client(url).models.list()
    assert model in [m.id for m in models.data]
    assert all(m.object == "model" and isinstance(m.created, int) for m in models.data)
    assert client(url).models.retrieve(model).id == model
    with pytest.raises(openai.NotFoundError) as info:
        client(url).models.retrieve("no-such-model")
    assert info.value.body["type"] == "not_found_error"  # type: ignore[index]


def test_a_streamed_chat_with_usage_is_timed_and_counted(wrapper: tuple[str, str]) -> None:
    url, model = wrapper
    stream = client(url).chat.completions.create(
        model=model, messages=HELLO, max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == 4
    assert usage.prompt_tokens is not None and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    ep = {"endpoint": CHAT}
    assert metric(url, "llm_requests_total", status_code="200", **ep) == 1
    assert metric(url, "llm_request_duration_seconds_count", **ep) == 1
    assert metric(url, "llm_time_to_first_token_seconds_count") == 1
    assert metric(url, "llm_output_tokens_total") == 4
    assert metric(url, "llm_requests_in_flight") == 0
    provider = "ollama" if model == DEFAULT_MODEL_NAME else "openai"
    (labels, count), *_ = samples(url, "gen_ai_server_request_duration_seconds_count")
    assert count == 1
    assert labels["gen_ai_operation_name"] == "chat"
    assert labels["gen_ai_provider_name"] == labels["gen_ai_system"] == provider
    assert labels["gen_ai_request_model"] == labels["gen_ai_response_model"] == model
    assert labels["server_address"] == "127.0.0.1" and labels["server_port"].isdigit()
    assert labels["error_type"] == ""
    tokens = {lb["gen_ai_token_type"]: v for lb, v in samples(url, "gen_ai_client_token_usage_sum")}
    assert tokens == {"input": usage.prompt_tokens, "output": 4}
    assert [v for _, v in samples(url, "gen_ai_server_time_to_first_token_seconds_count")] == [1]
    assert [v for _, v in samples(url, "gen_ai_server_time_per_output_token_seconds_count")] == [1]
    assert promtool_check_metrics(httpx.get(url + "/metrics").text).returncode == 0


def test_chat_and_completions_without_streaming(wrapper: tuple[str, str]) -> None:
    url, model = wrapper
    chat = client(url).chat.completions.create(model=model, messages=HELLO, max_tokens=3)
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    assert chat.choices[0].finish_reason == "length" and chat.usage is not None
    assert chat.usage.completion_tokens == 3
    done = client(url).completions.create(model=model, prompt="Once upon a time", max_tokens=2)
    assert done.object == "text_completion" and done.choices[0].text
    assert done.usage is not None and done.usage.completion_tokens == 2
    streamed = client(url).completions.create(model=model, prompt="Once", max_tokens=2, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices)
    assert metric(url, "llm_requests_total", endpoint=COMPLETIONS, status_code="200") == 2
    operations = {
        lb["gen_ai_operation_name"] for lb, _ in samples(url, "gen_ai_server_request_duration_seconds_count")
    }
    assert operations == {"chat", "text_completion"}


def test_unknown_model_and_bad_bodies_get_openai_shaped_errors(wrapper: tuple[str, str]) -> None:
    url, model = wrapper
    with pytest.raises(openai.NotFoundError) as missing:
        client(url).chat.completions.create(model="no-such-model", messages=HELLO)
    assert missing.value.body["type"] == "not_found_error"  # type: ignore[index]
    assert metric(url, "llm_requests_total", endpoint=CHAT, status_code="404") == 1
    for bad in (
        {"messages": []},
        {"messages": HELLO, "max_tokens": 0},
        {"messages": HELLO, "temperature": 3},
    ):
        with pytest.raises(openai.BadRequestError) as info:
            client(url).chat.completions.create(model=model, **bad)  # type: ignore[call-overload]
        error = info.value.body
        assert error["type"] == "invalid_request_error" and error["param"], error  # type: ignore[index]
    # Beyond the wrapper's own limit (max_tokens_limit, 4096 by default).
    with pytest.raises(openai.BadRequestError, match="limit of 4096 tokens"):
        client(url).completions.create(model=model, prompt="x", max_tokens=5000)
    r = httpx.post(url + CHAT, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert metric(url, "llm_requests_total", endpoint=CHAT, status_code="400") == 4
    assert metric(url, "llm_requests_total", endpoint=COMPLETIONS, status_code="400") == 1
    r = httpx.get(url + "/v1/embeddings")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


# ---------------------------------------------------------------------------- the lab's reliability layer


def test_an_api_key_is_required_on_v1_when_the_wrapper_has_one(
    start_wrapper: Starter, sim_url: str, tmp_path: Path
) -> None:
    key = secret_file(tmp_path, "api-key", API_KEY)
    url = start_wrapper(backend_url=sim_url, model=DEFAULT_MODEL_NAME, api_key_file=key)
    for call in (
        lambda c: c.models.list(),
        lambda c: c.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=HELLO, max_tokens=1),
    ):
        with pytest.raises(openai.AuthenticationError) as info:
            call(client(url, api_key="wrong"))
        assert info.value.body["code"] == "invalid_api_key"  # type: ignore[index]
        call(client(url, api_key=API_KEY))
    assert metric(url, "llm_requests_total", endpoint=CHAT, status_code="401") == 1
    assert metric(url, "llm_requests_rejected_total", reason="unauthorized") == 2


def test_injected_faults_reach_openai_clients(over_sim: str) -> None:
    url, auth = over_sim, {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    fault = {"kind": "error", "duration_s": 30, "params": {"probability": 1.0, "status": 503}}
    assert httpx.post(url + "/admin/faults", json=fault, headers=auth).status_code == 201
    with pytest.raises(openai.InternalServerError) as info:
        client(url).chat.completions.create(model=DEFAULT_MODEL_NAME, messages=HELLO, max_tokens=2)
    assert info.value.status_code == 503 and "injected fault" in info.value.message
    httpx.delete(url + "/admin/faults", headers=auth)
    cut = {"kind": "stream_cut", "duration_s": 30, "params": {"after_tokens": 2}}
    assert httpx.post(url + "/admin/faults", json=cut, headers=auth).status_code == 201
    stream = client(url).chat.completions.create(
        model=DEFAULT_MODEL_NAME, messages=HELLO, max_tokens=8, stream=True
    )
    received: list[str] = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert len([r for r in received if r]) == 2
    assert metric(url, "llm_requests_total", endpoint=CHAT, status_code="503") == 1
    assert metric(url, "llm_requests_total", endpoint=CHAT, status_code="502") == 1
    errors = {lb["error_type"]: v for lb, v in samples(url, "gen_ai_server_request_duration_seconds_count")}
    assert errors["fault_error"] == 1 and errors["fault_stream_cut"] == 1


def test_the_in_flight_bound_sheds_v1_requests_with_429(
    start_wrapper: Starter, upstream: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    key = secret_file(tmp_path, "upstream-key", UPSTREAM_KEY)
    url = start_wrapper(
        backend_url=upstream[1] + "/v1", backend_api="openai", backend_api_key_file=key, model="tiny",
        max_in_flight=1, retry_after_s=2,
    )  # fmt: skip
    slow = threading.Thread(
        target=lambda: client(url).chat.completions.create(model="slow", messages=HELLO, max_tokens=3)
    )
    slow.start()
    try:
        wait_until(lambda: metric(url, "llm_requests_in_flight") == 1)
        with pytest.raises(openai.RateLimitError) as info:
            client(url).completions.create(model="tiny", prompt="x", max_tokens=1)
        assert info.value.response.headers["Retry-After"] == "2"
        assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
        # /generate sheds the same way, with its own status.
        r = httpx.post(url + "/generate", json={"prompt": "x"}, timeout=10)
        assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    finally:
        slow.join(timeout=10)
    assert metric(url, "llm_requests_total", endpoint=COMPLETIONS, status_code="429") == 1
    assert metric(url, "llm_requests_rejected_total", reason="in_flight_limit") == 2
    assert metric(url, "llm_requests_total", endpoint=CHAT, status_code="200") == 1


# ---------------------------------------------------------------------------- the OpenAI-compatible upstream


def test_the_openai_upstream_gets_a_streamed_call_with_the_key_and_the_options(
    over_openai: str, upstream: tuple[FakeOpenAI, str]
) -> None:
    fake = upstream[0]
    client(over_openai).chat.completions.create(
        model="tiny", messages=HELLO, max_completion_tokens=2, temperature=0.5, seed=7, stop=["\n"]
    )
    sent = fake.bodies["tiny"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 2 and sent["messages"] == HELLO
    assert (sent["temperature"], sent["seed"], sent["stop"]) == (0.5, 7, ["\n"])
    # /generate over the same upstream: a text completion, Ollama's options passed as body fields.
    r = httpx.post(
        over_openai + "/generate", json={"prompt": "hi", "options": {"num_predict": 3, "top_k": 5}}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["response"], r.json()["prompt_tokens"], r.json()["output_tokens"]) == ("t0 t1 t2 ", 7, 3)
    assert fake.bodies["tiny"]["prompt"] == "hi" and fake.bodies["tiny"]["top_k"] == 5
    assert "num_predict" not in fake.bodies["tiny"] and fake.bodies["tiny"]["max_tokens"] == 3
    assert httpx.get(over_openai + "/ready").json()["status"] == "ready"


def test_upstream_failures_map_to_the_wrappers_answers(over_openai: str) -> None:
    url = over_openai
    # 429 from the upstream is the shed path: 429 on /v1, 503 with Retry-After on /generate.
    with pytest.raises(openai.RateLimitError):
        client(url).chat.completions.create(model="busy", messages=HELLO)
    r = httpx.post(url + "/generate", json={"prompt": "hi", "model": "busy"})
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert metric(url, "llm_backend_errors_total", kind="busy") == 2
    assert metric(url, "llm_requests_rejected_total", reason="backend_busy") == 2
    with pytest.raises(openai.BadRequestError, match="temperature must be"):
        client(url).chat.completions.create(model="picky", messages=HELLO)
    # An error event mid-stream: the client sees it after the first tokens.
    stream = client(url).chat.completions.create(
        model="broken-mid", messages=HELLO, max_tokens=5, stream=True
    )
    with pytest.raises(openai.APIError, match="the engine died"):
        list(stream)
    r = httpx.post(url + "/generate", json={"prompt": "hi", "model": "broken-mid", "stream": True})
    assert json.loads(r.text.splitlines()[-1])["error"].endswith("the engine died")
    assert metric(url, "llm_backend_errors_total", kind="stream") == 2
    errors = {lb["error_type"] for lb, _ in samples(url, "gen_ai_server_request_duration_seconds_count")}
    assert {"busy", "bad_request", "stream"} <= errors


def test_an_upstream_without_usage_is_counted_by_chunks_and_says_nothing_of_prompts(over_openai: str) -> None:
    chat = client(over_openai).chat.completions.create(model="nousage", messages=HELLO, max_tokens=3)
    assert chat.usage is not None and chat.usage.completion_tokens == 3
    assert chat.usage.prompt_tokens is None and chat.usage.total_tokens is None
    assert metric(over_openai, "llm_output_tokens_total") == 3
    assert metric(over_openai, "llm_prompt_tokens_total") == 0
    counts = {lb["gen_ai_token_type"]: v for lb, v in samples(over_openai, "gen_ai_client_token_usage_count")}
    assert counts == {"input": 0, "output": 1}  # an input count the upstream never gave is not recorded


def test_a_wrong_upstream_key_or_url_is_the_labs_to_fix(
    start_wrapper: Starter, upstream: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    base = upstream[1]
    wrong = secret_file(tmp_path, "wrong-key", "not-the-key")
    url = start_wrapper(
        backend_url=base + "/v1", backend_api="openai", backend_api_key_file=wrong, model="tiny"
    )
    r = httpx.post(url + CHAT, json={"model": "tiny", "messages": HELLO})
    assert r.status_code == 502 and "--backend-api-key-file" in r.json()["error"]["message"]
    ready = httpx.get(url + "/ready")
    assert ready.status_code == 503 and "HTTP 401" in ready.json()["error"]
    # The base URL without /v1: the wrapper says what the URL should be.
    url = start_wrapper(backend_url=base, backend_api="openai", model="tiny")
    assert "often ending in /v1" in httpx.get(url + "/ready").json()["error"]


def test_request_model_labels_are_bounded(over_sim: str) -> None:
    for i in range(MAX_MODEL_LABELS + 3):
        with pytest.raises(openai.NotFoundError):
            client(over_sim).completions.create(model=f"made-up-{i}", prompt="x", max_tokens=1)
    models = {
        lb["gen_ai_request_model"]
        for lb, _ in samples(over_sim, "gen_ai_server_request_duration_seconds_count")
    }
    assert models == {OTHER_VALUE}  # never served: no name of its own


# ---------------------------------------------------------------------------- pieces


@pytest.mark.parametrize("piece", ["a", "", "line\nbreak", 'quote " and \\', "ünïcode \u2028", "\0"])
@pytest.mark.parametrize("operation", ["chat", "text_completion"])
def test_token_events_are_the_json_of_their_chunk(piece: str, operation: str) -> None:
    encoder = _SseEncoder(operation, model='m "\0" odd', include_usage=False)  # type: ignore[arg-type]
    event = encoder.token(piece)
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    data = json.loads(event[6:])
    choice = data["choices"][0]
    assert (choice["delta"]["content"] if operation == "chat" else choice["text"]) == piece
    assert data["model"] == 'm "\0" odd' and choice["finish_reason"] is None


class SplitBody:
    """A response body that arrives `step` bytes at a time. A fake: a real server's writes are rarely split
    mid-line on loopback, but a proxy or a slow network splits them anywhere."""

    def __init__(self, body: bytes, step: int, content_type: str = "text/event-stream") -> None:
        self.content_type = content_type
        self.content = self
        self._pieces = [body[i : i + step] for i in range(0, len(body), step)]
        self._body = body

    async def readany(self) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""

    def at_eof(self) -> bool:
        return not self._pieces

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        pass


def read_all(body: bytes, step: int = 1, content_type: str = "text/event-stream") -> list[Chunk]:
    async def collect() -> list[Chunk]:
        response: Any = SplitBody(body, step, content_type)
        return [c async for c in read_events(response, backend_url="http://up", timeout_s=1)]

    return asyncio.run(collect())


EVENTS = (
    b": a comment\r\n\r\n"
    b'data: {"model":"m","choices":[{"index":0,"delta":{"role":"assistant"}}]}\r\n\r\n'
    b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"h\\u00e9"}}]}\r\n\r\n'
    b"event: message\r\n"
    # one event's data on two lines: joined by a newline, which JSON reads as whitespace
    b'data: {"model":"m","choices":[{"index":0,\r\n'
    b'data: "delta":{"content":"llo"},"finish_reason":"stop"}]}\r\n\r\n'
    b'data: {"model":"m2","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\r\n\r\n'
    b"data: [DONE]\r\n\r\n"
)


@pytest.mark.parametrize("step", [1, 7, len(EVENTS)])
def test_server_sent_events_are_read_wherever_the_bytes_split(step: int) -> None:
    chunks = read_all(EVENTS, step)
    assert [c.text for c in chunks] == ["hé", "llo", ""]
    final = chunks[-1]
    assert final.done and (final.model, final.done_reason) == ("m2", "stop")
    assert (final.prompt_tokens, final.output_tokens) == (3, 2)


def test_an_event_stream_that_ends_early_is_an_upstream_failure() -> None:
    finished = b'data: {"choices":[{"index":0,"text":"a","finish_reason":"length"}]}\n\n'
    assert [(c.text, c.done, c.done_reason) for c in read_all(finished, 5)] == [
        ("a", False, None),
        ("", True, "length"),
    ]
    cut = b'data: {"choices":[{"index":0,"text":"a","finish_reason":null}]}\n\n'
    with pytest.raises(UpstreamError, match="ended the stream before its final event") as info:
        read_all(cut, 5)
    assert (info.value.status_code, info.value.kind) == (502, "stream")
    with pytest.raises(UpstreamError, match="not JSON"):
        read_all(b"data: {oops\n\n")
    # A server that ignored `stream` and answered one JSON object: one chunk, then the end.
    whole = json.dumps({"model": "m", "choices": [{"index": 0, "text": "all", "finish_reason": "stop"}]})
    chunks = read_all(whole.encode(), content_type="application/json")
    assert [(c.text, c.done) for c in chunks] == [("all", False), ("", True)]


def test_generation_endpoints_and_their_matcher_are_one_declaration() -> None:
    assert GENERATION_ENDPOINTS == ("/generate", CHAT, COMPLETIONS)
    assert GENERATION_ENDPOINT_MATCHER == 'endpoint=~"/generate|/v1/chat/completions|/v1/completions"'


def test_the_backend_api_flag_takes_only_known_apis(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--backend-api", "grpc"])
    assert info.value.code == 2
    assert "invalid choice: 'grpc'" in capsys.readouterr().err


def test_a_missing_backend_key_file_stops_the_wrapper_at_start(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="--backend-api-key-file"):
        create_app(WrapperSettings(backend_api="openai", backend_api_key_file=tmp_path / "absent"))


def test_requests_on_every_endpoint_leave_no_in_flight_slot_behind(over_sim: str) -> None:
    for i in range(10):
        if i % 2:
            client(over_sim).completions.create(model=DEFAULT_MODEL_NAME, prompt="x", max_tokens=1)
        else:
            list(
                client(over_sim).chat.completions.create(
                    model=DEFAULT_MODEL_NAME, messages=HELLO, stream=True, max_tokens=2
                )
            )
    assert metric(over_sim, "llm_requests_in_flight") == 0
    assert sum(v for lb, v in samples(over_sim, "llm_requests_total") if lb["status_code"] == "200") == 10
