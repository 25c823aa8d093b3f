"""The wrapper in front of a real third-party OpenAI-compatible server: llama-cpp-python's own
(`python -m llama_cpp.server`, the `server` extra) serving SmolLM2-135M, driven by the official `openai`
client through the wrapper. Skipped where llama-cpp-python's server or the model file is missing.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from labkit.config import DEFAULT_MODEL_NAME, embedded_model_path
from labkit.errors import ModelNotFoundError
from labkit.services.wrapper import WrapperSettings, create_app
from tests.conftest import free_port
from tests.test_wrapper import metric, serving

pytestmark = [pytest.mark.integration, pytest.mark.llama]

MAX_TOKENS = 8
HELLO = [{"role": "user", "content": "Name one colour."}]


def _model_file() -> Path:
    if (
        importlib.util.find_spec("llama_cpp.server") is None
        or importlib.util.find_spec("sse_starlette") is None
    ):
        pytest.skip("llama-cpp-python's server is not installed (pip install 'llama-cpp-python[server]')")
    try:
        return embedded_model_path()
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def llamacpp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's server on a free loopback port, its log in a file; always stopped afterwards."""
    model = _model_file()
    port = free_port()
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                "--port", str(port), "--model_alias", DEFAULT_MODEL_NAME, "--n_ctx", "2048",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"llama_cpp.server did not answer (exit {process.poll()}): {log.read_text()[-2000:]}"
                )
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture(scope="module")
def wrapper_url(llamacpp_url: str) -> Iterator[str]:
    settings = WrapperSettings(backend_url=llamacpp_url, backend_api="openai", model=DEFAULT_MODEL_NAME)
    with serving(create_app(settings)) as url:
        yield url


def test_the_openai_client_goes_through_the_wrapper_to_llama_cpp(wrapper_url: str) -> None:
    client = openai.OpenAI(base_url=wrapper_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    assert httpx.get(wrapper_url + "/ready", timeout=10).json()["status"] == "ready"
    assert DEFAULT_MODEL_NAME in [m.id for m in client.models.list().data]

    stream = client.chat.completions.create(
        model=DEFAULT_MODEL_NAME,
        messages=HELLO,
        max_tokens=MAX_TOKENS,
        temperature=0,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    # llama-cpp-python's stream carries no usage: the wrapper counts the token chunks it received.
    assert 1 <= usage.completion_tokens <= MAX_TOKENS

    completion = client.completions.create(
        model=DEFAULT_MODEL_NAME, prompt="The sky is", max_tokens=MAX_TOKENS, temperature=0
    )
    assert completion.choices[0].text and completion.choices[0].finish_reason in ("stop", "length")

    r = httpx.post(wrapper_url + "/generate", json={"prompt": "Hello", "max_tokens": 4}, timeout=60)
    assert r.status_code == 200 and r.json()["output_tokens"] >= 1, r.text

    assert metric(wrapper_url, "llm_requests_total", endpoint="/v1/chat/completions", status_code="200") == 1
    assert metric(wrapper_url, "llm_requests_total", endpoint="/v1/completions", status_code="200") == 1
    assert metric(wrapper_url, "llm_time_to_first_token_seconds_count") == 3
    assert metric(wrapper_url, "llm_backend_errors_total", kind="stream") == 0
