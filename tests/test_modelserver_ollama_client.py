"""The official `ollama` Python client against labkit's model server (sim engine).

If this client works, so do the tools built on it; its parsing is stricter than ours.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import ollama
import pytest

from labkit.services.modelserver import BackgroundModelServer, ModelServerSettings

MODEL = "smollm2:135m"
DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


def _settings(**overrides: object) -> ModelServerSettings:
    values: dict[str, object] = {"engine": "sim", "port": 0, "sim_ttft_s": 0.005, "sim_itl_s": 0.001}
    values.update(overrides)
    return ModelServerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundModelServer]:
    with BackgroundModelServer(_settings()) as running:
        yield running


@pytest.fixture
def client(server: BackgroundModelServer) -> Iterator[ollama.Client]:
    client = ollama.Client(host=server.url, timeout=10)
    try:
        yield client
    finally:
        client.close()


def _assert_final(response: ollama.GenerateResponse | ollama.ChatResponse) -> None:
    assert response.done is True
    assert response.done_reason in ("stop", "length")
    for name in DURATIONS:
        assert isinstance(getattr(response, name), int), name
    assert isinstance(response.eval_count, int) and response.eval_count > 0
    assert isinstance(response.prompt_eval_count, int) and response.prompt_eval_count > 0


def test_generate(client: ollama.Client) -> None:
    response = client.generate(model=MODEL, prompt="Why is the sky blue?", options={"num_predict": 8})
    assert response.model == MODEL
    assert response.response
    _assert_final(response)
    assert (response.eval_count, response.done_reason) == (8, "length")


def test_generate_streamed(client: ollama.Client) -> None:
    parts = list(client.generate(model=MODEL, prompt="Why is the sky blue?", stream=True))
    *pieces, final = parts
    assert pieces and not any(part.done for part in pieces)
    _assert_final(final)
    assert final.eval_count == len(pieces)
    whole = client.generate(model=MODEL, prompt="Why is the sky blue?")
    assert "".join(part.response or "" for part in pieces) == whole.response


def test_chat(client: ollama.Client) -> None:
    response = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hello"}], tools=[])
    assert response.message.role == "assistant"
    assert response.message.content
    _assert_final(response)


def test_chat_streamed(client: ollama.Client) -> None:
    parts = list(client.chat(model=MODEL, messages=[{"role": "user", "content": "Hello"}], stream=True))
    *pieces, final = parts
    assert all(part.message.role == "assistant" for part in parts)
    assert final.message.content == ""
    assert "".join(part.message.content or "" for part in pieces)
    _assert_final(final)


def test_list_ps_show_pull(client: ollama.Client) -> None:
    (listed,) = client.list().models
    assert listed.model == MODEL
    assert listed.details is not None and listed.details.family == "llama"
    assert listed.modified_at is not None
    client.generate(model=MODEL, prompt="load it")
    (running,) = client.ps().models
    assert running.model == MODEL
    assert running.size_vram == 0
    assert running.expires_at is not None
    shown = client.show(MODEL)
    assert shown.capabilities == ["completion"]
    assert shown.details is not None and shown.details.quantization_level == "Q4_1"
    assert client.pull(MODEL).status == "success"


def test_unknown_model_is_a_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="llama3:70b", prompt="hi")
    assert caught.value.status_code == 404
    assert caught.value.error == 'model "llama3:70b" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("llama3:70b")
    assert caught.value.status_code == 404


def test_missing_model_is_a_400(client: ollama.Client) -> None:
    # The client refuses an empty name before sending; a blank one reaches the server.
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model=" ", messages=[{"role": "user", "content": "hi"}])
    assert (caught.value.status_code, caught.value.error) == (400, "model is required")


def test_queue_full_is_a_503() -> None:
    # Each request holds its slot ~1.5 s, so that the third arrives while the first two are still
    # there even on a busy machine (a shorter hold made this a race).
    slow = _settings(num_parallel=1, max_queue=1, sim_ttft_s=0.05, sim_itl_s=0.15)
    with BackgroundModelServer(slow) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        statuses: list[int] = []

        def send() -> None:
            with ollama.Client(host=server.url, timeout=10) as own:
                own.generate(model=MODEL, prompt="x", options={"num_predict": 10})
                statuses.append(200)

        def gauge(name: str) -> float:
            for line in http.get("/metrics").text.splitlines():
                if line.startswith(f"{name} "):
                    return float(line.split()[1])
            return 0.0

        def wait_for(condition: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 5
            while not condition():
                assert time.monotonic() < deadline, "condition not met in time"
                time.sleep(0.01)

        threads = [threading.Thread(target=send) for _ in range(2)]
        threads[0].start()
        wait_for(lambda: gauge("model_requests_running") == 1)
        threads[1].start()
        wait_for(lambda: gauge("model_queue_depth") == 1)
        with (
            ollama.Client(host=server.url, timeout=10) as third,
            pytest.raises(ollama.ResponseError) as caught,
        ):
            third.generate(model=MODEL, prompt="x")
        assert caught.value.status_code == 503
        assert caught.value.error == "server busy, please try again.  maximum pending requests exceeded"
        for thread in threads:
            thread.join(10)
        assert statuses == [200, 200]
