"""The wrapper in front of a real third-party OpenAI-compatible server: llama-cpp-python's own
(`python -m llama_cpp.server`, the `server` extra) serving SmolLM2-135M, driven by the official `openai`
client through the wrapper. Skipped where llama-cpp-python's server or the model file is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from labkit.config import DEFAULT_MODEL_NAME
from labkit.services.wrapper import WrapperSettings, create_app
from tests.conftest import llamacpp_server
from tests.test_wrapper import metric, serving

pytestmark = [pytest.mark.integration, pytest.mark.llama]

MAX_TOKENS = 8
HELLO = [{"role": "user", "content": "Name one colour."}]


@pytest.fixture(scope="module")
def llamacpp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's server as the lab runs it, on a free loopback port: its OpenAI base URL."""
    with llamacpp_server(tmp_path_factory.mktemp("llamacpp")) as url:
        yield url


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
