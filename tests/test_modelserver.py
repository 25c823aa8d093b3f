"""Tests of labkit.services.modelserver with the sim engine: every endpoint and error by status and body,
NDJSON framing, queueing, disconnects, keep_alive, metrics, the CLI and the engine pieces.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import labkit.services.modelserver as modelserver
import labkit.services.modelserver._cli as cli
from labkit.errors import ModelNotFoundError
from labkit.services.modelserver import (
    BackgroundModelServer,
    ChatMessage,
    Engine,
    GenerationOptions,
    GenerationResult,
    ModelServerSettings,
    QueueFullError,
    SimEngine,
    TokenStream,
    parse_keep_alive,
)
from labkit.services.modelserver._gguf_metadata import read_gguf_metadata
from labkit.services.modelserver._lifecycle import ModelLifecycle
from labkit.services.modelserver._metrics import ModelServerMetrics
from labkit.services.modelserver._model_card import normalize_model_name
from labkit.services.modelserver._scheduler import SlotScheduler
from labkit.services.modelserver._server import bind_socket
from tests.conftest import promtool_check_metrics, wait_until_model_server_answers

MODEL = "smollm2:135m"
FINAL_INT_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)
QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"
REPO_ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# helpers and fixtures


def sim_settings(**overrides: Any) -> ModelServerSettings:
    values: dict[str, Any] = {
        "engine": "sim",
        "port": 0,
        "sim_ttft_s": 0.005,
        "sim_itl_s": 0.001,
        "sim_jitter": 0.0,
    }
    values.update(overrides)
    return ModelServerSettings(**values)


StartServer = Callable[..., BackgroundModelServer]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Starts sim model servers on free loopback ports; stops every one of them afterwards."""
    started: list[BackgroundModelServer] = []

    def start(*, engine: Engine | None = None, **overrides: Any) -> BackgroundModelServer:
        server = BackgroundModelServer(sim_settings(**overrides), engine=engine)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def client(start_server: StartServer) -> Iterator[httpx.Client]:
    """A client of a fresh server, for tests that look at state: loads, metrics, keep_alive."""
    with httpx.Client(base_url=start_server().url, timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def shared() -> Iterator[httpx.Client]:
    """A client of one server shared by tests whose answers do not depend on earlier requests."""
    with (
        BackgroundModelServer(sim_settings()) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        yield http


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    """Parse an NDJSON body strictly: every line a JSON object, no blank line, newline-terminated."""
    text = response.text
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert all(line.strip() for line in lines), "a blank line breaks the official client"
    return [json.loads(line) for line in lines]


def assert_final(chunk: dict[str, Any], *, done_reason: str | None = None) -> None:
    assert chunk["done"] is True
    assert chunk["model"] == MODEL
    datetime.fromisoformat(chunk["created_at"])
    for name in FINAL_INT_FIELDS:
        assert type(chunk[name]) is int, name
        assert chunk[name] >= 0, name
    assert chunk["total_duration"] >= chunk["prompt_eval_duration"] + chunk["eval_duration"]
    if done_reason is not None:
        assert chunk["done_reason"] == done_reason


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample on /metrics (0 when absent)."""
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        sample_name, _, label_text = series.partition("{")
        if sample_name != name:
            continue
        present = set(label_text.rstrip("}").split(",")) if label_text else set()
        if wanted <= present:
            return float(value)
    return 0.0


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def generate(
    client: httpx.Client, prompt: str = "hello", *, timeout: httpx.Timeout | None = None, **fields: Any
) -> httpx.Response:
    body = {"model": MODEL, "prompt": prompt, **fields}
    if timeout is None:
        return client.post("/api/generate", json=body)
    return client.post("/api/generate", json=body, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# public surface and settings


def test_all_is_sorted_and_complete() -> None:
    assert modelserver.__all__ == sorted(modelserver.__all__)
    for name in modelserver.__all__:
        assert hasattr(modelserver, name), name
    public = {
        name
        for name, value in vars(modelserver).items()
        if not name.startswith("_") and not isinstance(value, type(modelserver))
    }
    assert public == set(modelserver.__all__)
    for name in ("ModelServerSettings", "create_app", "Engine", "LlamaEngine", "SimEngine", "serve"):
        assert name in modelserver.__all__


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300.0), ("30s", 30.0), ("0", 0.0), ("-1", None), (-1, None), ("-1s", None), (10, 10.0),
     (2.5, 2.5), ("1h30m", 5400.0), ("300ms", 0.3), ("120", 120.0), (" 1m ", 60.0)],
)  # fmt: skip
def test_parse_keep_alive(value: str | float, seconds: float | None) -> None:
    assert (
        parse_keep_alive(value) == pytest.approx(seconds)
        if seconds is not None
        else parse_keep_alive(value) is None
    )


@pytest.mark.parametrize("value", ["5x", "", "m", "five minutes", "nan", True])
def test_parse_keep_alive_rejects_garbage(value: Any) -> None:
    with pytest.raises(ValueError, match="keep_alive"):
        parse_keep_alive(value)


def test_settings_defaults_and_validation(tmp_path: Path) -> None:
    settings = ModelServerSettings()
    assert (settings.host, settings.port, settings.engine) == ("127.0.0.1", 11434, "llama")
    assert (settings.num_parallel, settings.max_queue, settings.keep_alive_seconds) == (1, 512, 300.0)
    assert settings.model_name == MODEL
    assert 1 <= settings.n_threads <= 2
    with pytest.raises(ValueError, match="keep_alive"):
        ModelServerSettings(keep_alive="soon")
    with pytest.raises(ValueError, match="extra"):
        ModelServerSettings(colour="blue")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        ModelServerSettings(num_parallel=0)
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match=re.escape("nope.gguf")):
        ModelServerSettings(model_path=missing).resolved_model_path()


def test_model_names_match_like_ollama() -> None:
    assert normalize_model_name("SmolLM2:135m") == "smollm2:135m"
    assert normalize_model_name("registry.ollama.ai/library/smollm2") == "smollm2:latest"
    assert normalize_model_name("smollm2") == normalize_model_name("smollm2:latest")


# ---------------------------------------------------------------------------------------------
# simple endpoints


def test_root_answers_get_and_head(shared: httpx.Client) -> None:
    response = shared.get("/")
    assert (response.status_code, response.text) == (200, "Ollama is running")
    assert response.headers["content-type"].startswith("text/plain")
    head = shared.head("/")
    assert (head.status_code, head.content) == (200, b"")


def test_version(shared: httpx.Client) -> None:
    response = shared.get("/api/version")
    assert response.status_code == 200
    assert response.json() == {"version": modelserver.API_VERSION}


def test_tags_lists_the_served_model(shared: httpx.Client) -> None:
    response = shared.get("/api/tags")
    assert response.status_code == 200
    (entry,) = response.json()["models"]
    assert entry["name"] == entry["model"] == MODEL
    assert entry["size"] == 0
    assert entry["digest"] == hashlib.sha256(MODEL.encode()).hexdigest()  # sim: documented stand-in
    assert datetime.fromisoformat(entry["modified_at"]).tzinfo is not None
    assert entry["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "135M",
        "quantization_level": "Q4_1",
    }


def test_ps_shows_the_model_only_while_loaded(client: httpx.Client) -> None:
    assert client.get("/api/ps").json() == {"models": []}
    assert generate(client, stream=False).status_code == 200
    (entry,) = client.get("/api/ps").json()["models"]
    assert entry["name"] == entry["model"] == MODEL
    assert entry["size_vram"] == 0
    assert entry["context_length"] == 2048
    expires = datetime.fromisoformat(entry["expires_at"])
    now = datetime.now(UTC)
    assert now < expires <= now + timedelta(minutes=5, seconds=5)  # default keep_alive 5m
    assert set(entry) >= {"size", "digest", "details", "expires_at", "size_vram"}


def test_show(shared: httpx.Client) -> None:
    response = shared.post("/api/show", json={"model": MODEL})
    assert response.status_code == 200
    body = response.json()
    assert "model_info" in body and body["model_info"] is None  # sim: no model file to describe
    assert body["capabilities"] == ["completion"]
    assert body["details"]["family"] == "llama"
    assert "FROM" in body["modelfile"]
    assert isinstance(body["parameters"], str) and isinstance(body["template"], str)
    datetime.fromisoformat(body["modified_at"])


def test_show_errors(shared: httpx.Client) -> None:
    response = shared.post("/api/show", json={"model": "llama3:70b"})
    assert response.status_code == 404
    assert response.json() == {"error": 'model "llama3:70b" not found, try pulling it first'}
    response = shared.post("/api/show", json={})
    assert (response.status_code, response.json()) == (400, {"error": "model is required"})
    response = shared.post("/api/show", json={"model": " \t"})
    assert (response.status_code, response.json()) == (400, {"error": "model is required"})
    # Schema-valid (the OpenAPI document asks for a non-space character as JSON Schema sees it), found by
    # schemathesis: Python's str.strip() also drops the control characters \x1c-\x1f; they are a name.
    response = shared.post("/api/show", json={"model": "\x1e\x1e"})
    assert response.status_code == 404


def test_pull_succeeds_for_the_served_model_only(shared: httpx.Client) -> None:
    response = shared.post("/api/pull", json={"model": MODEL, "stream": False})
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    streamed = shared.post("/api/pull", json={"model": MODEL})
    assert ndjson(streamed) == [{"status": "success"}]
    other = shared.post("/api/pull", json={"model": "llama3"})
    assert other.status_code == 404
    assert "labkit serves only" in other.json()["error"]


def test_unknown_path_is_a_json_404(shared: httpx.Client) -> None:
    response = shared.get("/api/nothing")
    assert response.status_code == 404
    assert "error" in response.json()


# ---------------------------------------------------------------------------------------------
# generate and chat


def test_generate_streams_ndjson_by_default(client: httpx.Client) -> None:
    response = generate(client, "tell me about queues")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    chunks = ndjson(response)
    *pieces, final = chunks
    assert pieces and all(chunk["done"] is False and chunk["model"] == MODEL for chunk in pieces)
    assert all(isinstance(chunk["response"], str) for chunk in pieces)
    assert final["response"] == ""
    assert_final(final, done_reason="stop")
    assert final["eval_count"] == len(pieces)  # sim: one piece per token
    assert "context" not in final
    assert final["load_duration"] > 0  # the first request loads the model


def test_generate_without_streaming_returns_one_object(shared: httpx.Client) -> None:
    streamed = "".join(chunk["response"] for chunk in ndjson(generate(shared, "same prompt"))[:-1])
    response = generate(shared, "same prompt", stream=False)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert_final(body, done_reason="stop")
    assert body["response"] == streamed
    assert body["load_duration"] == 0  # already loaded by the first request


def test_num_predict_caps_output_with_done_reason_length(shared: httpx.Client) -> None:
    body = generate(shared, stream=False, options={"num_predict": 5}).json()
    assert (body["eval_count"], body["done_reason"]) == (5, "length")
    assert len(body["response"].split()) == 5
    free = generate(shared, stream=False).json()
    assert 16 <= free["eval_count"] <= 64 and free["done_reason"] == "stop"


def test_stop_sequence_ends_generation(shared: httpx.Client) -> None:
    full = generate(shared, "stop test", stream=False, options={"num_predict": 30}).json()["response"]
    stop_word = full.split()[3]
    cut = full[: full.index(stop_word)]
    chunks = ndjson(generate(shared, "stop test", options={"num_predict": 30, "stop": [stop_word]}))
    assert "".join(chunk["response"] for chunk in chunks) == cut
    assert chunks[-1]["done_reason"] == "stop"


def test_chat_streams_assistant_messages(shared: httpx.Client) -> None:
    response = shared.post(
        "/api/chat",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": []},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    *pieces, final = ndjson(response)
    assert pieces
    for chunk in [*pieces, final]:
        assert chunk["message"]["role"] == "assistant"
        assert isinstance(chunk["message"]["content"], str)
    assert final["message"]["content"] == ""
    assert_final(final, done_reason="stop")


def test_chat_without_streaming(shared: httpx.Client) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    response = shared.post("/api/chat", json={"model": MODEL, "messages": messages, "stream": False})
    assert response.status_code == 200
    body = response.json()
    assert body["message"]["role"] == "assistant" and body["message"]["content"]
    assert_final(body)


def test_generate_uses_the_chat_template_unless_raw(shared: httpx.Client) -> None:
    templated = generate(shared, "hi", stream=False).json()["response"]
    chat = shared.post(
        "/api/chat", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    ).json()["message"]["content"]
    raw = generate(shared, "hi", stream=False, raw=True).json()["response"]
    assert templated == chat
    assert raw != templated


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, re.compile(r"^invalid JSON body: ")),
        (b"", 400, "missing request body"),
        (b"[1, 2]", 400, "invalid JSON body: expected an object, got list"),
        (b'{"prompt": "x"}', 400, "model is required"),
        (b'{"model": "", "prompt": "x"}', 400, "model is required"),
        (b'{"model": 7, "prompt": "x"}', 400, '"model" must be a string, got a number'),
        (b'{"model": "nope:1b", "prompt": "x"}', 404, 'model "nope:1b" not found, try pulling it first'),
        (b'{"model": "smollm2:135m", "prompt": "x", "options": {"num_predict": "many"}}', 400,
         'option "num_predict" must be an integer, got "many"'),
        (b'{"model": "smollm2:135m", "prompt": "x", "keep_alive": "soon"}', 400,
         re.compile(r"^invalid keep_alive 'soon'")),
        (b'{"model": "smollm2:135m", "prompt": 5}', 400, '"prompt" must be a string, got a number'),
    ],
)  # fmt: skip
def test_generate_errors(
    shared: httpx.Client, body: bytes, status: int, error: str | re.Pattern[str]
) -> None:
    response = shared.post("/api/generate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    payload = response.json()
    assert set(payload) == {"error"}
    if isinstance(error, re.Pattern):
        assert error.search(payload["error"]), payload
    else:
        assert payload["error"] == error


def test_chat_errors(shared: httpx.Client) -> None:
    response = shared.post("/api/chat", json={"messages": []})
    assert (response.status_code, response.json()) == (400, {"error": "model is required"})
    response = shared.post("/api/chat", json={"model": "x", "messages": []})
    assert (response.status_code, response.json()) == (
        404,
        {"error": 'model "x" not found, try pulling it first'},
    )
    response = shared.post("/api/chat", json={"model": MODEL, "messages": [{"content": "no role"}]})
    assert (response.status_code, response.json()) == (400, {"error": 'messages[0] needs a "role" string'})


# ---------------------------------------------------------------------------------------------
# determinism of the sim engine


def test_same_seed_and_prompt_give_the_same_text(start_server: StartServer) -> None:
    texts = []
    for _ in range(2):
        server = start_server(seed=7, sim_jitter=0.5)
        with httpx.Client(base_url=server.url, timeout=10) as http:
            texts.append(generate(http, "determinism", stream=False).json()["response"])
    assert texts[0] == texts[1]
    with httpx.Client(base_url=server.url, timeout=10) as http:
        others = {
            generate(http, "determinism", stream=False, options={"seed": s}).json()["response"]
            for s in (1, 2, 3)
        }
        assert generate(http, "determinism", stream=False, options={"seed": 7}).json()["response"] == texts[0]
    assert len(others) > 1 or texts[0] not in others


def test_sim_engine_directly_is_deterministic_and_cancellable() -> None:
    engine = SimEngine(seed=3, ttft_s=0.0, itl_s=0.0, jitter=0.0)
    engine.load()
    first = _drain(engine.generate("p", GenerationOptions(), threading.Event()))
    second = _drain(engine.generate("p", GenerationOptions(), threading.Event()))
    assert first == second
    text, result = first
    assert result.done_reason == "stop" and 16 <= result.output_tokens <= 64
    assert result.prompt_tokens == engine.tokenize_count("p") == 1
    cancel = threading.Event()
    cancel.set()
    text, result = _drain(engine.generate("p", GenerationOptions(num_predict=50), cancel))
    assert (text, result.output_tokens, result.done_reason) == ("", 0, "cancelled")


def test_sim_engine_holds_back_a_possible_stop_sequence() -> None:
    engine = SimEngine(seed=0, ttft_s=0.0, itl_s=0.0, jitter=0.0)
    full, _ = _drain(engine.generate("q", GenerationOptions(num_predict=20), threading.Event()))
    stop = full.split()[2] + " " + full.split()[3][:2]
    pieces: list[str] = []
    stream = engine.generate("q", GenerationOptions(num_predict=20, stop=(stop,)), threading.Event())
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as end:
            result: GenerationResult = end.value
            break
    assert "".join(pieces) == full[: full.index(stop)]
    assert result.done_reason == "stop"


def _drain(stream: TokenStream) -> tuple[str, GenerationResult]:
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as end:
            return "".join(pieces), end.value


# ---------------------------------------------------------------------------------------------
# queueing, disconnects, mid-stream errors


def test_queue_full_answers_503(start_server: StartServer) -> None:
    server = start_server(num_parallel=1, max_queue=1, sim_ttft_s=0.05, sim_itl_s=0.01)
    results: list[int] = []

    def send() -> None:
        # ~3 s each: the one running and the one queued must still be there when the third request arrives,
        # however slow the machine is between the test seeing the queue full and sending it (0.15 s was not).
        with httpx.Client(base_url=server.url, timeout=30) as http:
            results.append(generate(http, stream=False, options={"num_predict": 300}).status_code)

    with httpx.Client(base_url=server.url, timeout=10) as http:
        running = threading.Thread(target=send)
        running.start()
        wait_for(lambda: metric(http, "model_requests_running") == 1)
        waiting = threading.Thread(target=send)
        waiting.start()
        wait_for(lambda: metric(http, "model_queue_depth") == 1)
        rejected = generate(http, stream=False)
        assert rejected.status_code == 503
        assert rejected.json() == {"error": QUEUE_FULL}
        assert rejected.json()["error"].count("  ") == 1
        running.join(30)
        waiting.join(30)
        assert results == [200, 200]
        assert metric(http, "model_rejected_requests_total", reason="queue_full") == 1
        assert metric(http, "model_requests_total", endpoint="/api/generate", status_code="503") == 1
        assert metric(http, "model_queue_depth") == 0
        assert metric(http, "model_requests_running") == 0


def test_client_disconnect_mid_stream_is_counted_and_stops_generation(start_server: StartServer) -> None:
    server = start_server(num_parallel=1, sim_itl_s=0.01)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        body = {"model": MODEL, "prompt": "long", "options": {"num_predict": 2000}}
        with http.stream("POST", "/api/generate", json=body) as response:
            lines = response.iter_lines()
            for _ in range(3):
                assert json.loads(next(lines))["done"] is False
        # Leaving the block closed the connection half-way through a ~20 s generation.
        wait_for(
            lambda: metric(http, "model_requests_total", endpoint="/api/generate", status_code="499") == 1
        )
        wait_for(lambda: metric(http, "model_requests_running") == 0)
        assert metric(http, "model_output_tokens_total") < 2000
        # The slot is free again: a new request is served at once.
        after = generate(http, stream=False, options={"num_predict": 3})
        assert (after.status_code, after.json()["eval_count"]) == (200, 3)


def test_client_disconnect_without_streaming_is_counted(start_server: StartServer) -> None:
    server = start_server(num_parallel=1, sim_itl_s=0.01)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post(
                "/api/chat",
                json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": False,
                      "options": {"num_predict": 2000}},
                timeout=httpx.Timeout(10, read=0.3),
            )  # fmt: skip
        wait_for(lambda: metric(http, "model_requests_total", endpoint="/api/chat", status_code="499") == 1)
        wait_for(lambda: metric(http, "model_requests_running") == 0)
        assert metric(http, "model_output_tokens_total") < 2000


def test_client_leaving_while_queued_is_counted_and_leaves_the_queue(start_server: StartServer) -> None:
    server = start_server(num_parallel=1, sim_itl_s=0.01)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        body = {"model": MODEL, "prompt": "hold the slot", "options": {"num_predict": 2000}}
        with http.stream("POST", "/api/generate", json=body) as holder:
            lines = holder.iter_lines()  # kept: a discarded iterator closes the connection
            next(lines)
            with pytest.raises(httpx.ReadTimeout):
                generate(http, stream=False, timeout=httpx.Timeout(10, read=0.3))
            wait_for(
                lambda: metric(http, "model_requests_total", endpoint="/api/generate", status_code="499") == 1
            )
            assert metric(http, "model_queue_depth") == 0
            assert metric(http, "model_requests_running") == 1
        wait_for(lambda: metric(http, "model_requests_running") == 0)


class _FailingEngine(SimEngine):
    """A fake for a failure the real engines cannot be made to produce on demand: the engine
    raising half-way through a generation (e.g. llama.cpp failing to decode)."""

    def generate(self, prompt: str, options: GenerationOptions, cancel: threading.Event) -> TokenStream:
        stream = super().generate(prompt, options, cancel)
        yield next(stream)
        yield next(stream)
        raise RuntimeError("decode failed")


def test_error_mid_stream_keeps_200_and_ends_with_an_error_line(start_server: StartServer) -> None:
    server = start_server(engine=_FailingEngine(ttft_s=0.0, itl_s=0.0, jitter=0.0))
    with httpx.Client(base_url=server.url, timeout=10) as http:
        response = generate(http, raw=True)
        assert response.status_code == 200
        chunks = ndjson(response)
        assert [chunk.get("done") for chunk in chunks[:2]] == [False, False]
        assert chunks[-1] == {"error": "generation failed: decode failed"}
        failed = generate(http, raw=True, stream=False)
        assert (failed.status_code, failed.json()) == (500, {"error": "generation failed: decode failed"})
        assert metric(http, "model_requests_total", endpoint="/api/generate", status_code="500") == 2
        assert metric(http, "model_requests_running") == 0


# ---------------------------------------------------------------------------------------------
# keep_alive, load and unload


def test_keep_alive_zero_unloads_after_the_request_and_the_next_one_reloads(client: httpx.Client) -> None:
    first = generate(client, stream=False, keep_alive=0).json()
    assert first["load_duration"] > 0
    wait_for(lambda: client.get("/api/ps").json() == {"models": []})
    assert metric(client, "model_loaded_models") == 0
    assert metric(client, "model_unloads_total", reason="keep_alive_zero") == 1
    chunks = ndjson(generate(client))
    assert chunks[-1]["load_duration"] > 0  # loaded again, and the time is real
    assert len(client.get("/api/ps").json()["models"]) == 1
    assert metric(client, "model_load_duration_seconds_count") == 2


def test_unload_request_waits_for_running_requests(start_server: StartServer) -> None:
    server = start_server(num_parallel=2, sim_itl_s=0.005)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        body = {"model": MODEL, "prompt": "busy", "options": {"num_predict": 2000}}
        with http.stream("POST", "/api/generate", json=body) as running:
            lines = running.iter_lines()  # kept: a discarded iterator closes the connection
            next(lines)
            unload = http.post("/api/generate", json={"model": MODEL, "keep_alive": 0}).json()
            assert unload["done_reason"] == "unload"
            assert len(http.get("/api/ps").json()["models"]) == 1  # still in use
        wait_for(lambda: http.get("/api/ps").json() == {"models": []})
        assert metric(http, "model_unloads_total", reason="keep_alive_zero") == 1


def test_keep_alive_expiry_unloads(client: httpx.Client) -> None:
    generate(client, stream=False, keep_alive="200ms")
    (entry,) = client.get("/api/ps").json()["models"]
    assert datetime.fromisoformat(entry["expires_at"]) <= datetime.now(UTC) + timedelta(seconds=1)
    wait_for(lambda: client.get("/api/ps").json() == {"models": []}, timeout_s=5)
    assert metric(client, "model_unloads_total", reason="expired") == 1


class _GatedUnloadEngine(SimEngine):
    """A sim engine whose unload marks itself unloaded, then holds its worker thread until released."""

    def __init__(self) -> None:
        super().__init__(ttft_s=0.0, itl_s=0.0, jitter=0.0)
        self.unloaded = threading.Event()
        self.release = threading.Event()

    def unload(self) -> None:
        super().unload()
        self.unloaded.set()
        self.release.wait(timeout=10)


def test_the_model_leaves_api_ps_only_with_its_unload_counted() -> None:
    # /api/ps used to read the engine's own flag, which the worker thread clears before the lifecycle counts
    # the unload: a client could see the model gone and the expiry not yet counted (a CI failure above).
    engine = _GatedUnloadEngine()
    metrics = ModelServerMetrics(engine="sim", model="m", version="v", num_parallel=1, max_queue=1)
    lifecycle = ModelLifecycle(engine=engine, metrics=metrics, default_keep_alive=0.0)

    def unloads() -> float | None:
        return metrics.registry.get_sample_value("model_unloads_total", {"reason": "keep_alive_zero"})

    async def scenario() -> None:
        await lifecycle.acquire(0.0)
        assert lifecycle.loaded
        releasing = asyncio.create_task(lifecycle.release())
        assert await asyncio.to_thread(engine.unloaded.wait, 10)
        assert not engine.loaded
        assert lifecycle.loaded, "the engine is gone but the unload is not yet counted"
        assert unloads() is None
        engine.release.set()
        await releasing
        assert not lifecycle.loaded
        assert unloads() == 1

    asyncio.run(scenario())


def test_keep_alive_forever_and_server_default(start_server: StartServer) -> None:
    server = start_server(keep_alive="-1")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        generate(http, stream=False)
        (entry,) = http.get("/api/ps").json()["models"]
        assert datetime.fromisoformat(entry["expires_at"]).year > 2200


def test_empty_prompt_loads_and_keep_alive_zero_unloads(client: httpx.Client) -> None:
    response = client.post("/api/generate", json={"model": MODEL})
    assert response.status_code == 200
    body = response.json()
    assert (body["done"], body["done_reason"], body["response"]) == (True, "load", "")
    assert body["load_duration"] > 0
    assert len(client.get("/api/ps").json()["models"]) == 1
    response = client.post("/api/chat", json={"model": MODEL, "messages": [], "keep_alive": 0})
    body = response.json()
    assert (response.status_code, body["done_reason"], body["message"]) == (
        200,
        "unload",
        {"role": "assistant", "content": ""},
    )
    assert client.get("/api/ps").json() == {"models": []}
    again = client.post("/api/chat", json={"model": MODEL, "messages": []}).json()
    assert again["done_reason"] == "load" and again["message"]["content"] == ""


# ---------------------------------------------------------------------------------------------
# metrics


def test_metrics_count_requests_and_tokens(client: httpx.Client) -> None:
    body = generate(client, stream=False, options={"num_predict": 4}).json()
    client.get("/api/tags")
    assert metric(client, "model_requests_total", endpoint="/api/generate", status_code="200") == 1
    assert metric(client, "model_requests_total", endpoint="/api/tags", status_code="200") == 1
    assert metric(client, "model_output_tokens_total") == 4
    assert metric(client, "model_prompt_tokens_total") == body["prompt_eval_count"] > 0
    assert metric(client, "model_loaded_models") == 1
    assert metric(client, "model_parallel_slots") == 1
    assert metric(client, "model_queue_capacity") == 512
    assert metric(client, "model_time_to_first_token_seconds_count", endpoint="/api/generate") == 1
    assert metric(client, "model_request_duration_seconds_count", endpoint="/api/generate") == 1
    assert metric(client, "model_server_info", engine="sim", model=MODEL) == 1


def test_each_app_has_its_own_registry() -> None:
    first = ModelServerMetrics(engine="sim", model="a", version="v", num_parallel=1, max_queue=1)
    second = ModelServerMetrics(engine="sim", model="a", version="v", num_parallel=1, max_queue=1)
    first.output_tokens.inc(3)
    assert b"model_output_tokens_total 0.0" in second.exposition()


def test_metrics_pass_promtool(shared: httpx.Client) -> None:
    generate(shared, stream=False)
    shared.post("/api/generate", json={"model": "nope"})
    response = shared.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    checked = promtool_check_metrics(response.text)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


# ---------------------------------------------------------------------------------------------
# scheduler (on its own event loop)


def test_scheduler_hands_slots_over_in_order_and_bounds_the_queue() -> None:
    async def scenario() -> list[str]:
        metrics = ModelServerMetrics(engine="sim", model="m", version="v", num_parallel=1, max_queue=2)
        scheduler = SlotScheduler(num_parallel=1, max_queue=2, metrics=metrics)
        order: list[str] = []
        await scheduler.acquire()

        async def waiter(name: str) -> None:
            await scheduler.acquire()
            order.append(name)

        first = asyncio.create_task(waiter("a"))
        second = asyncio.create_task(waiter("b"))
        await asyncio.sleep(0)
        assert scheduler.waiting == 2
        with pytest.raises(QueueFullError):
            await scheduler.acquire()
        first.cancel()  # a waiter that gives up leaves the line
        await asyncio.sleep(0)
        assert scheduler.waiting == 1
        scheduler.release()
        await second
        assert (scheduler.running, scheduler.waiting) == (1, 0)
        scheduler.release()
        assert scheduler.running == 0
        return order

    assert asyncio.run(scenario()) == ["b"]


# ---------------------------------------------------------------------------------------------
# GGUF metadata


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def test_read_gguf_metadata_of_a_small_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    kvs = [
        _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("llama"),
        _gguf_string("llama.context_length") + struct.pack("<I", 4) + struct.pack("<I", 8192),
        _gguf_string("general.file_type") + struct.pack("<I", 5) + struct.pack("<i", 3),
        _gguf_string("tokenizer.ggml.tokens")
        + struct.pack("<I", 9)
        + struct.pack("<IQ", 8, 2)
        + _gguf_string("a")
        + _gguf_string("b"),
        _gguf_string("tokenizer.ggml.scores") + struct.pack("<I", 9) + struct.pack("<IQ", 6, 2) + b"\0" * 8,
        _gguf_string("eps") + struct.pack("<I", 6) + struct.pack("<f", 0.5),
    ]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    assert read_gguf_metadata(path) == {
        "general.architecture": "llama",
        "llama.context_length": 8192,
        "general.file_type": 3,
        "tokenizer.ggml.tokens": None,
        "tokenizer.ggml.scores": None,
        "eps": 0.5,
    }
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + b"\0" * 20)
    with pytest.raises(ModelNotFoundError, match="not a GGUF"):
        read_gguf_metadata(bad)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ModelNotFoundError, match="not a valid GGUF"):
        read_gguf_metadata(truncated)


# ---------------------------------------------------------------------------------------------
# the command line (real child processes)


def _run_cli(args: Sequence[str], timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labkit.services.modelserver", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO_ROOT,
        check=False,
    )


def test_cli_bad_flag_is_one_line_and_exit_2() -> None:
    result = _run_cli(["--engine", "gpt"])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--engine" in result.stderr and "Traceback" not in result.stderr


def test_cli_flags_map_onto_settings() -> None:
    flags = (
        "--host 127.0.0.1 --port 0 --engine sim --model-name m:1 --num-parallel 3 --max-queue 4 "
        "--keep-alive -1 --seed 5 --sim-ttft-s 0.1 --sim-itl-s 0.2 --sim-jitter 0 --n-threads 1 "
        "--n-ctx 512 --model-path x.gguf"
    )
    args = cli.build_parser().parse_args(flags.split())
    settings = cli.settings_from_args(args)
    assert (settings.port, settings.engine, settings.model_name) == (0, "sim", "m:1")
    assert (settings.num_parallel, settings.max_queue, settings.keep_alive_seconds, settings.seed) == (
        3,
        4,
        None,
        5,
    )
    assert (settings.sim_ttft_s, settings.sim_itl_s, settings.sim_jitter) == (0.1, 0.2, 0.0)
    assert (settings.n_threads, settings.n_ctx, settings.model_path) == (1, 512, Path("x.gguf"))
    assert cli.settings_from_args(cli.build_parser().parse_args([])) == ModelServerSettings()


def test_cli_invalid_value_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--engine", "sim", "--num-parallel", "0", "--port", "0"]) == 2
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1
    assert "--num-parallel" in stderr


def test_cli_missing_model_file_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.gguf"
    assert cli.main(["--engine", "llama", "--model-path", str(missing), "--port", "0"]) == 2
    stderr = capsys.readouterr().err
    assert str(missing) in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_cli_port_in_use_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["--engine", "sim", "--port", str(port)]) == 2
    stderr = capsys.readouterr().err
    assert f"port {port}" in stderr and "--port" in stderr


def test_cli_serves_and_exits_cleanly_on_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labkit.services.modelserver",
            "--engine",
            "sim",
            "--port",
            str(port),
            "--sim-ttft-s",
            "0",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_model_server_answers(url, process, 20)
        assert httpx.post(
            f"{url}/api/generate", json={"model": MODEL, "prompt": "x", "stream": False}
        ).is_success
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_listening_socket_is_tcp_so_asyncio_disables_nagle() -> None:
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY only then
    finally:
        sock.close()


def test_chat_message_as_dict() -> None:
    assert ChatMessage(role="user", content="x").as_dict() == {"role": "user", "content": "x"}


def test_engines_satisfy_the_protocol() -> None:
    assert isinstance(SimEngine(), Engine)
    assert isinstance(modelserver.LlamaEngine(model_path=Path(os.devnull)), Engine)
