"""The real model: `python -m labkit.services.modelserver --engine llama` serving SmolLM2-135M, driven by
the official `ollama` client and, on /v1, the official `openai` client. Skipped where llama-cpp-python or
the model file is missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ollama
import openai
import pytest

from labkit.config import DEFAULT_MODEL_NAME, embedded_model_path
from labkit.errors import ModelNotFoundError
from tests.conftest import free_port, wait_until_model_server_answers

pytestmark = [pytest.mark.integration, pytest.mark.llama]

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_PREDICT = 16


def _model_file() -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install labkit[llama])")
    try:
        return embedded_model_path()
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def llama_server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The llama engine in a child process on a free loopback port; always stopped afterwards."""
    _model_file()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "labkit.services.modelserver", "--engine", "llama", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_model_server_answers(url, process, 30)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def client(llama_server: tuple[str, subprocess.Popen[str]]) -> Iterator[ollama.Client]:
    with ollama.Client(host=llama_server[0], timeout=60) as own:
        yield own


def test_generate_real_text(client: ollama.Client) -> None:
    response = client.generate(
        model=DEFAULT_MODEL_NAME,
        prompt="The capital of France is",
        raw=True,
        options={"num_predict": NUM_PREDICT, "temperature": 0, "seed": 1},
    )
    assert response.response and response.response.strip()
    assert response.done is True and response.done_reason in ("stop", "length")
    assert isinstance(response.eval_count, int) and 0 < response.eval_count <= NUM_PREDICT
    if response.done_reason == "length":
        assert response.eval_count == NUM_PREDICT  # counted tokens are the sampled ones
    assert isinstance(response.prompt_eval_count, int) and response.prompt_eval_count >= 5
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        value = getattr(response, name)
        assert isinstance(value, int) and value >= 0, name
    assert response.total_duration is not None and response.eval_duration is not None
    assert 0 < response.eval_duration < response.total_duration < 60 * 10**9


def test_chat_streams_with_the_chat_template(client: ollama.Client) -> None:
    parts = list(
        client.chat(
            model=DEFAULT_MODEL_NAME,
            messages=[{"role": "user", "content": "Say hello."}],
            stream=True,
            options={"num_predict": NUM_PREDICT, "seed": 2},
        )
    )
    *pieces, final = parts
    assert "".join(part.message.content or "" for part in pieces).strip()
    assert "<|im_end|>" not in "".join(part.message.content or "" for part in pieces)
    assert final.done and final.message.content == ""
    assert final.eval_count is not None and 0 < final.eval_count <= NUM_PREDICT
    assert final.prompt_eval_count is not None and final.prompt_eval_count > 5  # template tokens included


def test_show_tags_and_keep_alive_reload(client: ollama.Client) -> None:
    shown = client.show(DEFAULT_MODEL_NAME)
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"
    assert shown.template and "im_start" in shown.template
    (listed,) = client.list().models
    model_file = embedded_model_path()
    assert listed.size == model_file.stat().st_size
    assert listed.digest == hashlib.sha256(model_file.read_bytes()).hexdigest()
    client.generate(model=DEFAULT_MODEL_NAME, prompt="", keep_alive=0)  # unload
    assert client.ps().models == []
    again = client.generate(model=DEFAULT_MODEL_NAME, prompt="Hi", options={"num_predict": 4})
    assert again.load_duration is not None and again.load_duration > 0
    assert len(client.ps().models) == 1


@pytest.fixture
def openai_client(llama_server: tuple[str, subprocess.Popen[str]]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=llama_server[0] + "/v1", api_key="unused", max_retries=0, timeout=60) as own:
        yield own


def test_openai_chat_streams_with_usage(openai_client: openai.OpenAI) -> None:
    chunks = list(
        openai_client.chat.completions.create(
            model=DEFAULT_MODEL_NAME,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=NUM_PREDICT,
            seed=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content, finish, usage_chunk = chunks
    text = "".join(chunk.choices[0].delta.content or "" for chunk in content)
    assert text.strip() and "<|im_end|>" not in text  # the chat template's end is a stop, never sent
    assert finish.choices[0].finish_reason in ("stop", "length")
    usage = usage_chunk.usage
    assert usage_chunk.choices == [] and usage is not None
    assert 0 < usage.completion_tokens <= NUM_PREDICT
    if finish.choices[0].finish_reason == "length":
        assert usage.completion_tokens == NUM_PREDICT
    assert usage.prompt_tokens > 5  # the chat template's tokens included, as /api/chat counts them
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_openai_seed_makes_the_answer_repeatable(openai_client: openai.OpenAI) -> None:
    def complete(seed: int) -> str:
        answer = openai_client.completions.create(
            model=DEFAULT_MODEL_NAME,
            prompt="Name a colour.",
            max_tokens=NUM_PREDICT,
            seed=seed,
            temperature=1.0,
        )
        return answer.choices[0].text

    first = complete(42)
    assert first.strip()
    assert complete(42) == first
    # Another seed samples another answer (at temperature 1 over 16 tokens, the same one would be a fluke).
    assert any(complete(seed) != first for seed in (43, 44))


def test_sigterm_exits_cleanly(llama_server: tuple[str, subprocess.Popen[str]]) -> None:
    _, process = llama_server
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
