"""The wrapper and X-Request-ID: a client's id (or a new one) on every answer, success or error, /generate and
the OpenAI-compatible routes, streamed or not; sent on to the model upstream, which logs it too; and the
request's JSON log line.

The upstream here is a small fake that records the header it got (nothing else could show what went over the
wire), and labkit's real model server for the OpenAI-compatible upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from labkit.service_logs import REQUEST_FIELDS, REQUEST_ID_HEADER, json_formatter
from labkit.services.modelserver import BackgroundModelServer, ModelServerSettings
from labkit.services.wrapper import WrapperSettings, create_app
from tests.test_wrapper import serving

MODEL = "tiny"
NEW_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class RecordingUpstream:
    """An Ollama API that records the X-Request-ID of each generation it got, by prompt."""

    def __init__(self) -> None:
        self.ids: dict[str, str | None] = {}
        self.hold = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/api/generate", self.generate, methods=["POST"]),
                Route("/api/chat", self.generate, methods=["POST"]),
                Route("/api/tags", self.tags, methods=["GET"]),
            ]
        )

    async def tags(self, request: Request) -> Response:
        return JSONResponse({"models": [{"name": "tiny:latest", "model": "tiny:latest"}]})

    async def generate(self, request: Request) -> Response:
        payload = await request.json()
        prompt = payload.get("prompt") or payload["messages"][-1]["content"]
        self.ids[prompt] = request.headers.get(REQUEST_ID_HEADER)
        if prompt == "slow":
            await asyncio.sleep(1.0)
        return StreamingResponse(self._chunks(), media_type="application/x-ndjson")

    async def _chunks(self) -> AsyncIterator[bytes]:
        for i in range(3):
            yield json.dumps({"model": MODEL, "response": f"t{i} ", "done": False}).encode() + b"\n"
        yield (
            json.dumps({"model": MODEL, "response": "", "done": True, "done_reason": "stop"}).encode() + b"\n"
        )


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[RecordingUpstream, str]]:
    fake = RecordingUpstream()
    with serving(fake.app) as url:
        yield fake, url


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text("s3cret")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def wrapper(upstream: tuple[RecordingUpstream, str], token_file: Path) -> Iterator[str]:
    settings = WrapperSettings(
        backend_url=upstream[1], model=MODEL, max_in_flight=1, admin_token_file=token_file
    )
    with serving(create_app(settings)) as url:
        yield url


def _generate(
    url: str, prompt: str, *, stream: bool = False, request_id: str | None = None
) -> httpx.Response:
    headers = {REQUEST_ID_HEADER: request_id} if request_id is not None else {}
    return httpx.post(
        f"{url}/generate", json={"prompt": prompt, "stream": stream}, headers=headers, timeout=10
    )


def _chat(url: str, prompt: str, *, stream: bool, request_id: str, model: str = MODEL) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={REQUEST_ID_HEADER: request_id}, timeout=10
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_s_id_is_echoed_and_sent_upstream(
    upstream: tuple[RecordingUpstream, str], wrapper: str, stream: bool
) -> None:
    prompt = f"generate stream={stream}"
    answer = _generate(wrapper, prompt, stream=stream, request_id=f"gen-{stream}")
    assert answer.status_code == 200, answer.text
    assert answer.headers[REQUEST_ID_HEADER] == f"gen-{stream}"
    assert upstream[0].ids[prompt] == f"gen-{stream}"
    chat = f"chat stream={stream}"
    answer = _chat(wrapper, chat, stream=stream, request_id=f"chat-{stream}")
    assert answer.status_code == 200, answer.text
    assert answer.headers[REQUEST_ID_HEADER] == f"chat-{stream}"
    assert upstream[0].ids[chat] == f"chat-{stream}"


@pytest.mark.parametrize("given", [None, "has spaces", "x" * 129, "semi;colon"])
def test_without_a_usable_id_the_wrapper_makes_one_and_sends_that_upstream(
    upstream: tuple[RecordingUpstream, str], wrapper: str, given: str | None
) -> None:
    prompt = f"no usable id {given!r}"
    answer = _generate(wrapper, prompt, request_id=given)
    made = answer.headers[REQUEST_ID_HEADER]
    assert NEW_ID.fullmatch(made)
    assert upstream[0].ids[prompt] == made


def test_every_error_answer_carries_its_id(wrapper: str, token_file: Path) -> None:
    def check(answer: httpx.Response, status: int, request_id: str) -> None:
        assert answer.status_code == status, answer.text
        assert answer.headers[REQUEST_ID_HEADER] == request_id

    check(_generate(wrapper, "", request_id="e-422"), 422, "e-422")
    check(httpx.get(f"{wrapper}/nowhere", headers={REQUEST_ID_HEADER: "e-404"}), 404, "e-404")
    check(
        httpx.post(f"{wrapper}/v1/chat/completions", json={}, headers={REQUEST_ID_HEADER: "e-400"}),
        400,
        "e-400",
    )

    async def full() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        # max_in_flight is 1: while "slow" holds it, /generate answers 503 and /v1 429.
        async with httpx.AsyncClient(timeout=10) as client:
            slow = asyncio.create_task(client.post(f"{wrapper}/generate", json={"prompt": "slow"}))
            await asyncio.sleep(0.3)
            busy = await client.post(
                f"{wrapper}/generate", json={"prompt": "x"}, headers={REQUEST_ID_HEADER: "e-503"}
            )
            body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
            limited = await client.post(
                f"{wrapper}/v1/chat/completions", json=body, headers={REQUEST_ID_HEADER: "e-429"}
            )
            return await slow, busy, limited

    slow, busy, limited = asyncio.run(full())
    assert slow.status_code == 200
    check(busy, 503, "e-503")
    check(limited, 429, "e-429")
    # An injected error fault: the wrapper answers it without calling the upstream.
    auth = {"Authorization": f"Bearer {token_file.read_text()}"}
    fault = {"kind": "error", "duration_s": 30, "params": {"probability": 1, "status": 502}}
    assert httpx.post(f"{wrapper}/admin/faults", json=fault, headers=auth).status_code == 201
    try:
        check(_generate(wrapper, "faulted", request_id="e-502"), 502, "e-502")
        check(_generate(wrapper, "faulted", stream=True, request_id="e-502s"), 502, "e-502s")
    finally:
        httpx.delete(f"{wrapper}/admin/faults", headers=auth)


def test_an_unexpected_error_s_500_carries_its_id(upstream: tuple[RecordingUpstream, str]) -> None:
    app = create_app(WrapperSettings(backend_url=upstream[1], model=MODEL))

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    app.state.wrapper.upstream.open = broken  # a bug in the wrapper, not an upstream failure

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport) as client:
            return await client.post(
                "http://w/generate", json={"prompt": "hi"}, headers={REQUEST_ID_HEADER: "e-500"}
            )

    answer = asyncio.run(call())
    assert answer.status_code == 500 and answer.headers[REQUEST_ID_HEADER] == "e-500"


def test_the_request_line_is_json_with_the_request_s_fields(
    wrapper: str, token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _generate(wrapper, "logged", request_id="log-1")
    httpx.get(f"{wrapper}/health")  # a probe: not logged
    auth = {"Authorization": f"Bearer {token_file.read_text()}"}
    fault = {"kind": "stream_cut", "duration_s": 30, "params": {"after_tokens": 1}}
    assert httpx.post(f"{wrapper}/admin/faults", json=fault, headers=auth).status_code == 201
    try:
        with pytest.raises(httpx.RemoteProtocolError):
            _generate(wrapper, "cut", stream=True, request_id="log-cut")
    finally:
        httpx.delete(f"{wrapper}/admin/faults", headers=auth)
    lines = {
        line["request_id"]: line
        for line in (json.loads(json_formatter("wrapper").format(r)) for r in caplog.records)
        if line["logger"] == "labkit.service_logs"
    }
    assert "/health" not in {line["path"] for line in lines.values()}
    ok = lines["log-1"]
    assert set(REQUEST_FIELDS) <= set(ok)
    assert (ok["service"], ok["method"], ok["path"], ok["status"], ok["level"]) == (
        "wrapper", "POST", "/generate", 200, "INFO"
    )  # fmt: skip
    cut = lines["log-cut"]
    assert (cut["status"], cut["outcome"], cut["error"], cut["level"]) == (
        200,
        502,
        "fault_stream_cut",
        "WARNING",
    )


OA_ID = "0f3c2a9e-5b1d-4c7e-9a2b-1d2e3f4a5b6c"


def test_an_openai_compatible_upstream_gets_the_id_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    model = ModelServerSettings(engine="sim", port=0, sim_ttft_s=0.001, sim_itl_s=0.001)
    with BackgroundModelServer(model) as server:
        settings = WrapperSettings(
            backend_url=f"{server.url}/v1", backend_api="openai", model=model.model_name
        )
        with serving(create_app(settings)) as url:
            answer = _chat(url, "hello", stream=True, request_id=OA_ID, model=model.model_name)
            other = _chat(url, "hello", stream=True, request_id="oa-7", model=model.model_name)
    assert answer.status_code == 200 and answer.headers[REQUEST_ID_HEADER] == OA_ID
    # An id that is not a UUID is echoed and logged by the wrapper, not sent to an OpenAI-compatible upstream
    # (llama-cpp-python's server answers 400 to one).
    assert other.status_code == 200 and other.headers[REQUEST_ID_HEADER] == "oa-7"
    lines = [
        json.loads(json_formatter("test").format(r))
        for r in caplog.records
        if r.name == "labkit.service_logs"
    ]
    # One line in the wrapper's log, one in the model server's (the same route on both): the same id.
    seen = [(line["path"], line["status"]) for line in lines if line.get("request_id") == OA_ID]
    assert seen == [("/v1/chat/completions", 200)] * 2
    assert [line["path"] for line in lines if line.get("request_id") == "oa-7"] == ["/v1/chat/completions"]
