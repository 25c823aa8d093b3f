"""Tests of labkit.services.wrapper: the public API, its error answers and metrics, against a fake backend.

Every server here binds 127.0.0.1 on an ephemeral port and is stopped in a fixture's `finally`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import labkit.services.wrapper
from labkit.config import DEFAULT_MODEL_NAME
from labkit.services.wrapper import WrapperSettings, create_app, main
from labkit.services.wrapper._generation import _ndjson, _token_line
from tests.conftest import free_port, promtool_check_metrics

GEN = "/generate"
EP = {"endpoint": GEN}
MODEL = "tiny"  # listed by the fake backend as "tiny:latest"


# --------------------------------------------------------------------------------------------------
# A fake Ollama backend. It stands in for failures that are hard to trigger on the real model server
# (slow chunks, a full queue, a stream that dies or breaks midway, an HTTP 500); the real
# labkit.services.modelserver is tested elsewhere. Behaviour is chosen per request, by the model name and by
# `fake_*` keys in the options the wrapper passes through, so tests never share mutable switches.
# --------------------------------------------------------------------------------------------------
class FakeOllama:
    def __init__(self) -> None:
        self.payloads: dict[str, dict[str, Any]] = {}
        self.client_ports: dict[str, int] = {}  # by fake_id: which connection the request came on
        self.cancelled: set[str] = set()
        self.app = Starlette(
            routes=[
                Route("/api/generate", self.generate, methods=["POST"]),
                Route("/api/tags", self.tags, methods=["GET"]),
            ]
        )

    async def tags(self, request: Request) -> Response:
        models = [{"name": n, "model": n} for n in (DEFAULT_MODEL_NAME, "tiny:latest")]
        return JSONResponse({"models": models})

    async def generate(self, request: Request) -> Response:
        payload = await request.json()
        model = payload["model"]
        options = payload.get("options") or {}
        fake_id = str(options.get("fake_id", ""))
        if fake_id:
            self.payloads[fake_id] = payload
            self.client_ports[fake_id] = request.client.port if request.client else 0
        if model == "busy":
            return JSONResponse(
                {"error": "server busy, please try again.  maximum pending requests exceeded"}, 503
            )
        if model == "broken":
            return JSONResponse({"error": "something broke inside"}, 500)
        if model == "picky":
            return JSONResponse({"error": "invalid option provided"}, 400)
        if model not in ("tiny", "tiny:latest", DEFAULT_MODEL_NAME):
            return JSONResponse({"error": f'model "{model}" not found, try pulling it first'}, 404)
        return StreamingResponse(self._chunks(payload, fake_id), media_type="application/x-ndjson")

    async def _chunks(self, payload: dict[str, Any], fake_id: str) -> AsyncIterator[bytes]:
        options = payload.get("options") or {}
        tokens = min(int(options.get("num_predict", 3)), 64)
        fail_after = options.get("fake_fail_after")
        cut_after = options.get("fake_cut_after")
        delay = float(options.get("fake_delay_s", 0))
        model = payload["model"]
        try:
            await asyncio.sleep(float(options.get("fake_first_delay_s", 0)))
            for i in range(tokens):
                if i == fail_after:
                    yield b'{"error":"the runner crashed"}\n'
                    return
                if i == cut_after:
                    raise ConnectionAbortedError("fake backend drops the connection mid-stream")
                if i:
                    await asyncio.sleep(delay)
                yield json.dumps({"model": model, "response": f"t{i} ", "done": False}).encode() + b"\n"
            final = {
                "model": model,
                "response": "",
                "done": True,
                "done_reason": "length",
                "total_duration": 1000,
                "prompt_eval_count": len(payload["prompt"].split()),
                "eval_count": tokens,
            }
            yield json.dumps(final).encode() + b"\n"
        except asyncio.CancelledError:
            self.cancelled.add(fake_id)
            raise


Fake = tuple[FakeOllama, str]
Starter = Callable[..., str]


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread on 127.0.0.1:<ephemeral>; stop it on exit."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def closed_port() -> int:
    """A loopback port nothing listens on (free_port's port, closed again)."""
    return free_port()


@pytest.fixture(scope="module")
def fake() -> Iterator[Fake]:
    backend = FakeOllama()
    with serving(backend.app) as url:
        yield backend, url


@pytest.fixture
def start_wrapper(fake: Fake) -> Iterator[Starter]:
    """Start a fresh wrapper (fresh metrics) in front of the fake backend, unless told otherwise."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> str:
            settings = {"backend_url": fake[1], "model": MODEL, **overrides}
            return stack.enter_context(serving(create_app(WrapperSettings(**settings))))

        yield start


@pytest.fixture(scope="module")
def wrapper(fake: Fake) -> Iterator[str]:
    """One shared wrapper for tests that do not count metrics."""
    settings = WrapperSettings(backend_url=fake[1], model=MODEL, max_prompt_chars=50, max_tokens_limit=100)
    with serving(create_app(settings)) as url:
        yield url


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in /metrics")


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(url + GEN, json=body, timeout=10, **kwargs)


# ---------------------------------------------------------------------------- public surface, settings


def test_all_is_sorted_and_complete() -> None:
    assert labkit.services.wrapper.__all__ == sorted(labkit.services.wrapper.__all__)
    for name in labkit.services.wrapper.__all__:
        assert getattr(labkit.services.wrapper, name) is not None
    assert {"WrapperSettings", "create_app", "serve"} <= set(labkit.services.wrapper.__all__)


def test_settings_defaults_are_keyword_only_and_validated() -> None:
    s = WrapperSettings()
    assert (s.host, s.port, s.model) == ("127.0.0.1", 8000, DEFAULT_MODEL_NAME)
    assert s.backend_url == "http://127.0.0.1:11434"
    assert (s.max_in_flight, s.max_prompt_chars, s.max_tokens_limit) == (32, 16384, 4096)
    assert (s.backend_timeout_s, s.connect_timeout_s, s.retry_after_s) == (60, 2, 1)
    assert WrapperSettings(backend_url="http://h:1/").backend_url == "http://h:1"
    with pytest.raises(TypeError):
        WrapperSettings("0.0.0.0")  # type: ignore[misc]
    with pytest.raises(ValidationError):
        WrapperSettings(backend_url="localhost:11434")
    with pytest.raises(ValidationError):
        WrapperSettings(max_in_flight=0)
    with pytest.raises(ValidationError):
        WrapperSettings(colour="blue")  # type: ignore[call-arg]


# ---------------------------------------------------------------------------- success


def test_non_streamed_generation_answers_json_and_counts_metrics(fake: Fake, start_wrapper: Starter) -> None:
    url = start_wrapper()
    body = {"prompt": "one two three", "max_tokens": 4, "options": {"temperature": 0, "fake_id": "ns"}}
    r = post(url, body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data) == {
        "model", "response", "done_reason", "prompt_tokens", "output_tokens",
        "time_to_first_token_seconds", "duration_seconds",
    }  # fmt: skip
    assert data["model"] == MODEL
    assert data["response"] == "t0 t1 t2 t3 "
    assert (data["done_reason"], data["prompt_tokens"], data["output_tokens"]) == ("length", 3, 4)
    assert 0 <= data["time_to_first_token_seconds"] <= data["duration_seconds"]
    # The backend is always streamed; max_tokens becomes num_predict, other options pass through.
    sent = fake[0].payloads["ns"]
    assert sent["stream"] is True
    assert sent["options"]["num_predict"] == 4 and sent["options"]["temperature"] == 0

    assert metric(url, "llm_requests_total", status_code="200", **EP) == 1
    assert metric(url, "llm_request_duration_seconds_count", **EP) == 1
    assert metric(url, "llm_time_to_first_token_seconds_count") == 1
    assert metric(url, "llm_inter_token_latency_seconds_count") == 3  # 4 token chunks, 3 gaps
    assert metric(url, "llm_output_tokens_total") == 4
    assert metric(url, "llm_prompt_tokens_total") == 3
    assert metric(url, "llm_requests_in_flight") == 0


def test_streamed_generation_is_ndjson_without_blank_lines(start_wrapper: Starter) -> None:
    url = start_wrapper()
    r = post(url, {"prompt": "a b", "max_tokens": 3, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.text.endswith("\n")
    lines = r.text[:-1].split("\n")
    assert all(line.strip() for line in lines)
    chunks = [json.loads(line) for line in lines]
    assert chunks[:3] == [{"response": f"t{i} ", "done": False} for i in range(3)]
    final = chunks[3]
    assert len(chunks) == 4 and final["done"] is True
    assert (final["done_reason"], final["prompt_tokens"], final["output_tokens"]) == ("length", 2, 3)
    assert 0 <= final["time_to_first_token_seconds"] <= final["duration_seconds"]
    assert metric(url, "llm_requests_total", status_code="200", **EP) == 1
    assert metric(url, "llm_inter_token_latency_seconds_count") == 2
    assert metric(url, "llm_requests_in_flight") == 0


def test_sequential_requests_reuse_one_backend_connection(fake: Fake, start_wrapper: Starter) -> None:
    # A backend response read to its end goes back to the pool; a connect per request was most of the
    # wrapper's added latency once.
    url = start_wrapper()
    ids = [f"reuse-{i}" for i in range(6)]
    for i, fake_id in enumerate(ids):
        body = {"prompt": "hi", "max_tokens": 2, "stream": i % 2 == 1, "options": {"fake_id": fake_id}}
        assert post(url, body).status_code == 200
    assert len({fake[0].client_ports[fake_id] for fake_id in ids}) == 1


@pytest.mark.parametrize("piece", ["t0 ", "é", 'say "hi"\n', "\u2028", "\x00\t", "😀"])
def test_token_lines_are_the_ndjson_of_their_chunk(piece: str) -> None:
    assert _token_line(piece) == _ndjson({"response": piece, "done": False})


def test_max_tokens_defaults_to_the_limit(fake: Fake, start_wrapper: Starter) -> None:
    url = start_wrapper(max_tokens_limit=5)
    r = post(url, {"prompt": "x", "options": {"fake_id": "default-limit"}})
    assert r.status_code == 200 and r.json()["output_tokens"] == 5
    assert fake[0].payloads["default-limit"]["options"]["num_predict"] == 5
    assert fake[0].payloads["default-limit"]["model"] == MODEL


# ---------------------------------------------------------------------------- request errors


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "prompt: Field required"),
        ({"prompt": "hi", "max_tokens": "ten"}, "max_tokens: Input should be a valid integer"),
        ({"prompt": 5}, "prompt: Input should be a valid string"),
        ({"prompt": "x" * 51}, "prompt: longer than the limit of 50 characters"),
        ({"prompt": ""}, "prompt: String should have at least 1 character"),
        ({"prompt": "hi", "max_tokens": 101}, "max_tokens: more than the limit of 100 tokens"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"prompt": "hi", "options": {"num_predict": -1}}, "options.num_predict: must be an integer"),
        ({"prompt": "hi", "stream": "yes"}, "stream: Input should be a valid boolean"),
        ({"prompt": "hi", "temperature": 1}, "temperature: Extra inputs are not permitted"),
        (["hi"], "body: Input should be a valid dictionary"),
    ],
)
def test_invalid_requests_are_422_naming_the_field(wrapper: str, body: Any, message: str) -> None:
    r = post(wrapper, body)
    assert r.status_code == 422
    assert r.json()["error"].startswith(message), r.json()
    assert isinstance(r.json()["detail"], list)


def test_malformed_json_is_422(wrapper: str) -> None:
    r = httpx.post(wrapper + GEN, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"].startswith("body: invalid JSON at character 1")


def test_body_without_json_content_type_gets_a_hint(wrapper: str) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
    r = httpx.post(wrapper + GEN, content=b'{"prompt": "hi"}', headers=form)
    assert r.status_code == 422
    assert r.json()["error"].endswith("send a JSON object with the header Content-Type: application/json")


def test_unknown_route_and_wrong_method_answer_json(wrapper: str) -> None:
    r = httpx.get(wrapper + "/nope")
    assert r.status_code == 404
    assert r.json()["error"].startswith("no such endpoint: GET /nope")
    r = httpx.get(wrapper + GEN)
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    assert r.json()["error"].startswith("method not allowed: GET /generate")


# ---------------------------------------------------------------------------- backend errors


def test_backend_down_is_502_and_not_ready(start_wrapper: Starter) -> None:
    port = closed_port()
    url = start_wrapper(backend_url=f"http://127.0.0.1:{port}")
    r = post(url, {"prompt": "hi"})
    assert r.status_code == 502
    assert r.json()["error"].startswith(f"model backend unreachable at http://127.0.0.1:{port}: ")
    r = post(url, {"prompt": "hi", "stream": True})
    assert r.status_code == 502 and "unreachable" in r.json()["error"]
    assert metric(url, "llm_backend_errors_total", kind="connect") == 2
    assert metric(url, "llm_requests_total", status_code="502", **EP) == 2
    assert metric(url, "llm_requests_in_flight") == 0
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    ready = httpx.get(url + "/ready")
    assert ready.status_code == 503 and "unreachable" in ready.json()["error"]


def test_in_flight_limit_answers_503_with_retry_after(start_wrapper: Starter) -> None:
    url = start_wrapper(max_in_flight=1, retry_after_s=3)
    slow = {"prompt": "hi", "max_tokens": 4, "options": {"fake_delay_s": 0.2}}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, url, slow)
        wait_until(lambda: metric(url, "llm_requests_in_flight") == 1)
        r = post(url, {"prompt": "hi", "max_tokens": 1})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "3"
        assert r.json()["error"].startswith("too many requests in flight (1 of 1)")
        assert first.result().status_code == 200
    assert metric(url, "llm_requests_rejected_total", reason="in_flight_limit") == 1
    assert metric(url, "llm_requests_total", status_code="503", **EP) == 1
    assert metric(url, "llm_requests_total", status_code="200", **EP) == 1
    assert metric(url, "llm_requests_in_flight") == 0


def test_backend_busy_is_503_with_retry_after(start_wrapper: Starter) -> None:
    url = start_wrapper()
    r = post(url, {"prompt": "hi", "model": "busy"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"] == (
        "model backend is busy: server busy, please try again.  maximum pending requests exceeded"
    )
    assert metric(url, "llm_backend_errors_total", kind="busy") == 1
    assert metric(url, "llm_requests_rejected_total", reason="backend_busy") == 1
    assert metric(url, "llm_requests_rejected_total", reason="in_flight_limit") == 0


def test_unknown_model_is_404_with_the_backends_message(start_wrapper: Starter) -> None:
    url = start_wrapper()
    r = post(url, {"prompt": "hi", "model": "nosuch", "stream": True})
    assert r.status_code == 404
    assert r.json() == {"error": 'model "nosuch" not found, try pulling it first'}
    assert metric(url, "llm_backend_errors_total", kind="model_not_found") == 1
    assert metric(url, "llm_requests_total", status_code="404", **EP) == 1


@pytest.mark.parametrize(
    ("model", "status", "kind", "message"),
    [
        ("broken", 502, "http_5xx", "model backend answered HTTP 500: something broke inside"),
        ("picky", 400, "bad_request", "model backend rejected the request: invalid option provided"),
    ],
)
def test_other_backend_http_errors(
    start_wrapper: Starter, model: str, status: int, kind: str, message: str
) -> None:
    url = start_wrapper()
    r = post(url, {"prompt": "hi", "model": model})
    assert (r.status_code, r.json()) == (status, {"error": message})
    assert metric(url, "llm_backend_errors_total", kind=kind) == 1
    assert metric(url, "llm_requests_total", status_code=str(status), **EP) == 1


def test_backend_timeout_is_504(start_wrapper: Starter) -> None:
    url = start_wrapper(backend_timeout_s=0.3)
    late = {"prompt": "hi", "max_tokens": 2, "options": {"fake_first_delay_s": 1.5}}
    r = post(url, late)
    assert r.status_code == 504 and "sent nothing for 0.3 s" in r.json()["error"]
    # A streamed request waits for the first token before committing to 200, so it gets 504 too.
    r = post(url, {**late, "stream": True})
    assert r.status_code == 504
    assert metric(url, "llm_backend_errors_total", kind="timeout") == 2
    assert metric(url, "llm_requests_total", status_code="504", **EP) == 2


def test_backend_failing_mid_stream_ends_the_stream_with_an_error_line(start_wrapper: Starter) -> None:
    url = start_wrapper()
    r = post(url, {"prompt": "hi", "max_tokens": 5, "stream": True, "options": {"fake_fail_after": 2}})
    assert r.status_code == 200  # the headers were sent before the failure
    chunks = [json.loads(line) for line in r.text.splitlines()]
    assert all(line for line in r.text.splitlines())
    assert chunks[:2] == [{"response": "t0 ", "done": False}, {"response": "t1 ", "done": False}]
    assert chunks[2] == {"error": "model backend failed mid-stream: the runner crashed", "done": True}
    assert len(chunks) == 3
    # A dropped connection mid-stream, and the same failures without streaming (-> 502).
    r = post(url, {"prompt": "hi", "max_tokens": 5, "stream": True, "options": {"fake_cut_after": 1}})
    last = json.loads(r.text.splitlines()[-1])
    assert r.status_code == 200 and last["done"] is True and "broke the connection" in last["error"]
    r = post(url, {"prompt": "hi", "max_tokens": 5, "options": {"fake_fail_after": 2}})
    assert r.status_code == 502 and r.json()["error"] == "model backend failed mid-stream: the runner crashed"
    assert metric(url, "llm_backend_errors_total", kind="stream") == 3
    assert metric(url, "llm_requests_total", status_code="502", **EP) == 3
    assert metric(url, "llm_request_duration_seconds_count", **EP) == 0  # only successes are timed
    assert metric(url, "llm_requests_in_flight") == 0


# ---------------------------------------------------------------------------- disconnects


def test_streaming_client_disconnect_frees_the_slot_and_cancels_the_backend(
    fake: Fake, start_wrapper: Starter
) -> None:
    url = start_wrapper()
    options = {"fake_delay_s": 0.1, "fake_id": "gone"}
    body = {"prompt": "hi", "max_tokens": 50, "stream": True, "options": options}
    with httpx.Client(timeout=5) as client, client.stream("POST", url + GEN, json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # keep a reference: a collected line iterator closes the connection
        assert json.loads(next(lines)) == {"response": "t0 ", "done": False}
        assert metric(url, "llm_requests_in_flight") == 1
        assert json.loads(next(lines)) == {"response": "t1 ", "done": False}
    wait_until(lambda: metric(url, "llm_requests_in_flight") == 0)
    wait_until(lambda: "gone" in fake[0].cancelled)
    assert metric(url, "llm_requests_total", status_code="499", **EP) == 1
    assert metric(url, "llm_requests_total", status_code="200", **EP) == 0


def test_non_streamed_client_disconnect_frees_the_slot_and_cancels_the_backend(
    fake: Fake, start_wrapper: Starter
) -> None:
    url = start_wrapper()
    body = {"prompt": "hi", "max_tokens": 50, "options": {"fake_delay_s": 0.1, "fake_id": "left"}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + GEN, json=body, timeout=0.5)
    wait_until(lambda: metric(url, "llm_requests_in_flight") == 0)
    wait_until(lambda: "left" in fake[0].cancelled)
    assert metric(url, "llm_requests_total", status_code="499", **EP) == 1


# ---------------------------------------------------------------------------- health, readiness, metrics


def test_health_and_readiness(start_wrapper: Starter) -> None:
    url = start_wrapper()  # model "tiny" matches the backend's "tiny:latest"
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    r = httpx.get(url + "/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    missing = start_wrapper(model="absent")
    r = httpx.get(missing + "/ready")
    assert r.status_code == 503
    assert r.json()["error"].startswith("model 'absent' is not on the model backend")
    assert httpx.get(start_wrapper(model=DEFAULT_MODEL_NAME) + "/ready").status_code == 200


def test_metrics_preinitialised_and_promtool_clean(start_wrapper: Starter) -> None:
    url = start_wrapper()
    assert metric(url, "llm_requests_rejected_total", reason="backend_busy") == 0
    assert metric(url, "llm_backend_errors_total", kind="connect") == 0
    for kind in ("latency", "error", "stream_cut"):
        assert metric(url, "llm_faults_active", kind=kind) == 0
    assert metric(url, "llm_requests_total", status_code="500", **EP) == 0
    assert post(url, {"prompt": "hi", "max_tokens": 2}).status_code == 200
    assert post(url, {"prompt": "hi", "model": "busy"}).status_code == 503
    assert post(url, {}).status_code == 422
    assert metric(url, "llm_requests_total", status_code="422", **EP) == 1
    r = httpx.get(url + "/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    buckets = {s.labels["le"] for f in text_string_to_metric_families(r.text) for s in f.samples
               if s.name == "llm_time_to_first_token_seconds_bucket"}  # fmt: skip
    assert "0.04" in buckets and "+Inf" in buckets
    check = promtool_check_metrics(r.text)
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")


# ---------------------------------------------------------------------------- command line


def test_cli_bad_flags_give_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, needle in ((["--port", "abc"], "--port: invalid int value"), (["--port", "70000"], "--port: ")):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err


def test_cli_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        assert main(["--port", str(taken.getsockname()[1])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use" in err and "--port" in err


def test_cli_serves_and_exits_cleanly_on_sigterm(fake: Fake) -> None:
    port = closed_port()
    flags = ["--port", str(port), "--backend-url", fake[1], "--model", MODEL]
    argv = [sys.executable, "-m", "labkit.services.wrapper", *flags]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout_s=15)
        assert httpx.get(url + "/ready").status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert (proc.returncode, out, err) == (0, b"", b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
