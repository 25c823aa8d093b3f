"""The load generator's OpenAI side without a server: SSE streams read into token timings, usage and every
failure kind (an error event, a cut stream, keep-alive comments, a usage chunk), whole JSON completions, and
which model an endpoint serves.

The answers come from httpx's MockTransport: an error event or a stream cut at a chosen byte cannot be had
from a real server on demand (tests/integration/test_load_openai_server.py drives a real one).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from labkit.errors import ConfigError
from labkit.measure.load import LoadSpec, run_load
from labkit.measure.load._api import discover_model
from labkit.measure.load._records import Attempt
from labkit.measure.load._sender import RequestSender

BASE = "http://127.0.0.1:9/v1"
Part = bytes | float | Exception


def event(data: dict[str, Any] | str, *, newline: str = "\n") -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}{newline}{newline}".encode()


def chat(content: str | None = None, *, role: str | None = None, finish: str | None = None) -> bytes:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return event({"object": "chat.completion.chunk", "choices": [choice]})


def text(piece: str, *, finish: str | None = None) -> bytes:
    return event(
        {"object": "text_completion", "choices": [{"index": 0, "text": piece, "finish_reason": finish}]}
    )


def usage(prompt: int, completion: int) -> bytes:
    counts = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return event({"object": "chat.completion.chunk", "choices": [], "usage": counts})


DONE = event("[DONE]")


def _transport(
    parts: list[Part], *, status: int = 200, content_type: str = "text/event-stream"
) -> httpx.MockTransport:
    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            if isinstance(part, float):
                await asyncio.sleep(part)
            elif isinstance(part, Exception):
                raise part
            else:
                yield part

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": content_type}, content=body())

    return httpx.MockTransport(handler)


def send(parts: list[Part], *, stream: bool = True, **answer: Any) -> Attempt:
    """One request through the real sender, answered with `parts` (bytes; a float sleeps; an exception
    breaks the body there)."""

    async def run() -> Attempt:
        async with httpx.AsyncClient(transport=_transport(parts, **answer)) as client:
            sender = RequestSender(client, f"{BASE}/chat/completions", stream=stream, openai=True, slots=None)
            attempt = Attempt(0, time.monotonic(), 0, "test-0")
            await sender.send(attempt, b"{}", time.monotonic() + 10)
            return attempt

    return asyncio.run(run())


def row(attempt: Attempt) -> dict[str, Any]:
    from labkit.measure.load._records import ClockAnchor

    return attempt.row(ClockAnchor.now())


# ---- streams -------------------------------------------------------------------------------------
def test_a_chat_stream_gives_ttft_itl_usage_and_finish_reason() -> None:
    attempt = send(
        [
            *(chat(role="assistant"), 0.05, chat("Hel"), 0.03, chat("lo"), 0.03, chat("!")),
            *(chat(finish="stop"), usage(7, 3), DONE),
        ]
    )
    r = row(attempt)
    assert r["ok"] and r["error_kind"] is None and r["status"] == 200
    assert r["chunks"] == 3  # the role chunk carries no text: TTFT is the first content
    assert r["ttft_s"] >= 0.05
    assert len(r["itl_s"]) == 2 and all(gap >= 0.025 for gap in r["itl_s"])
    assert (r["output_tokens"], r["prompt_tokens"], r["done_reason"]) == (3, 7, "stop")
    assert r["e2e_s"] >= r["ttft_s"] + sum(r["itl_s"])
    assert r["server_ttft_s"] is None and r["server_duration_s"] is None  # OpenAI answers carry none


def test_keep_alive_comments_and_crlf_lines_are_not_tokens() -> None:
    attempt = send(
        [
            *(b": ping\n\n", event(_chunk("a"), newline="\r\n"), b": keep-alive\r\n\r\n"),
            *(b"event: ping\n\n", event(_chunk("b")), event(_chunk(None, "length")), b"data: [DONE]\r\n\r\n"),
        ]
    )
    r = row(attempt)
    assert r["ok"] and r["chunks"] == 2 and r["done_reason"] == "length"
    assert r["output_tokens"] is None  # no usage chunk: not guessed from the chunks


def _chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_an_event_split_across_reads_is_one_chunk() -> None:
    whole = chat("split")
    attempt = send([whole[:9], 0.01, whole[9:20], whole[20:], chat(finish="stop"), DONE])
    assert attempt.ok and len(attempt.chunk_times) == 1


def test_an_error_event_mid_stream_is_a_stream_error() -> None:
    error = {"error": {"message": "the model crashed", "type": "api_error", "param": None, "code": None}}
    r = row(send([chat("a"), chat("b"), event(error), DONE]))
    assert not r["ok"] and r["error_kind"] == "stream_error" and r["status"] == 200
    assert "the model crashed (api_error)" in r["error"] and r["chunks"] == 2


def test_an_error_event_by_type_is_a_stream_error() -> None:
    r = row(send([chat("a"), b'event: error\ndata: {"message": "overloaded"}\n\n']))
    assert r["error_kind"] == "stream_error" and "overloaded" in r["error"]


def test_a_stream_closed_without_done_is_cut() -> None:
    r = row(send([chat("a"), chat("b"), chat(finish="stop")]))
    assert (
        not r["ok"]
        and r["error_kind"] == "stream_cut"
        and "without data: [DONE] after 2 chunks" in r["error"]
    )


def test_a_stream_broken_mid_way_is_cut() -> None:
    r = row(send([chat("a"), httpx.RemoteProtocolError("peer closed connection")]))
    assert r["error_kind"] == "stream_cut" and r["chunks"] == 1 and "broke off after 1 chunks" in r["error"]


def test_done_without_a_finish_reason_is_a_cut_answer() -> None:
    # llama-cpp-python's server ends a stream so when a newer request interrupts it
    r = row(send([chat("a"), chat("b"), DONE]))
    assert r["error_kind"] == "stream_cut" and "without a finish_reason" in r["error"]


def test_a_completions_stream_counts_its_text_chunks() -> None:
    r = row(send([text(" the"), text(" cat"), text("", finish="length"), usage(4, 2), DONE]))
    assert r["ok"] and r["chunks"] == 2 and len(r["itl_s"]) == 1 and r["output_tokens"] == 2


def test_reasoning_text_counts_as_the_first_token() -> None:
    thinking = event(
        {"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}, "finish_reason": None}]}
    )
    r = row(send([thinking, chat("x"), chat(finish="stop"), DONE]))
    assert r["ok"] and r["chunks"] == 2


@pytest.mark.parametrize(
    ("parts", "kwargs", "kind", "words"),
    [
        ([b'{"choices": []}'], {"content_type": "application/json"}, "protocol", "not a server-sent event"),
        ([b"data: not json\n\n"], {}, "protocol", "not JSON"),
        ([b"data: [1, 2]\n\n"], {}, "protocol", "not a JSON object"),
    ],
)
def test_an_answer_that_is_not_a_chunk_stream_is_a_protocol_error(
    parts: list[Part], kwargs: dict[str, Any], kind: str, words: str
) -> None:
    r = row(send(parts, **kwargs))
    assert r["error_kind"] == kind and words in r["error"] and not r["ok"]


# ---- whole answers and errors --------------------------------------------------------------------
def test_a_whole_completion_is_read_with_its_usage() -> None:
    answer = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    r = row(send([json.dumps(answer).encode()], stream=False, content_type="application/json"))
    assert r["ok"] and (r["output_tokens"], r["prompt_tokens"], r["done_reason"]) == (1, 5, "stop")
    assert r["ttft_s"] is None and r["chunks"] == 0


def test_a_whole_answer_without_choices_is_a_protocol_error() -> None:
    r = row(send([b'{"id": "x"}'], stream=False, content_type="application/json"))
    assert r["error_kind"] == "protocol" and "no choices" in r["error"]


@pytest.mark.parametrize(("status", "kind"), [(400, "http_4xx"), (404, "http_4xx"), (503, "http_5xx")])
def test_an_openai_error_answer_keeps_its_message(status: int, kind: str) -> None:
    error = {"error": {"message": 'model "nope" not found', "type": "not_found_error", "param": None}}
    r = row(send([json.dumps(error).encode()], status=status, content_type="application/json"))
    assert r["status"] == status and r["error_kind"] == kind
    assert r["error"] == f'HTTP {status}: model "nope" not found (not_found_error)'


# ---- which model ---------------------------------------------------------------------------------
def _models(handler: Callable[[httpx.Request], httpx.Response]) -> str:
    async def run() -> str:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await discover_model(client, BASE)

    return asyncio.run(run())


def _listing(*names: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET" and str(request.url) == f"{BASE}/models"
        return httpx.Response(
            200, json={"object": "list", "data": [{"id": n, "object": "model"} for n in names]}
        )

    return handler


def test_the_only_model_listed_is_the_one_asked_for() -> None:
    assert _models(_listing("smollm2:135m")) == "smollm2:135m"


def test_several_or_no_models_say_to_pass_one() -> None:
    with pytest.raises(ConfigError, match=r"lists 2 models \(a, b\); pass --model with one of them"):
        _models(_listing("a", "b"))
    with pytest.raises(ConfigError, match=r"lists no model; .*pass --model NAME"):
        _models(_listing())


def test_a_wrong_base_url_says_where_the_models_were_asked() -> None:
    with pytest.raises(
        ConfigError, match=r"GET http://127.0.0.1:9/v1/models answered HTTP 404.*ending in /v1"
    ):
        _models(lambda request: httpx.Response(404, text="404 page not found"))
    with pytest.raises(ConfigError, match=r"did not answer an OpenAI model list"):
        _models(lambda request: httpx.Response(200, json={"models": []}))


def test_a_run_without_a_reachable_model_list_fails_before_any_request(tmp_path: Path) -> None:
    spec = LoadSpec(url="http://127.0.0.1:1/v1", api="openai-chat", rate=1, duration_s=1)
    with pytest.raises(ConfigError, match=r"could not ask GET http://127.0.0.1:1/v1/models .*--model NAME"):
        run_load(spec, tmp_path, progress=False)
    (run_dir,) = tmp_path.iterdir()
    assert not (run_dir / "requests.jsonl").exists()
