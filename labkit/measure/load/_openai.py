"""Reading OpenAI-compatible answers into an attempt: a server-sent event stream of completion chunks
(`data: {json}` events ending in `data: [DONE]`), or one JSON completion.

The stream is parsed by httpx-sse (comments, keep-alives, multi-line data and CR/LF variants as the SSE
standard has them). A chunk counts as a token chunk when it carries text: `delta.content` (or a reasoning
model's `delta.reasoning_content` / `delta.reasoning`) for chat, `text` for completions; TTFT is the first
such chunk and ITL the gaps between them. Token counts come only from `usage`, when the server sends it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from labkit.measure.load._records import Attempt

__all__ = ["error_text", "read_openai_stream", "take_openai_answer"]

_DONE = "[DONE]"
# llama-cpp-python's server ends a stream this way when a newer request interrupts it (its default).
_NO_FINISH = (
    "the stream ended (data: [DONE]) after {chunks} chunks without a finish_reason: the server cut the "
    "answer short"
)
# Text fields of a chat chunk's delta: the answer, and what reasoning models stream before it.
_DELTA_TEXT = ("content", "reasoning_content", "reasoning")


def error_text(error: Any) -> str:
    """An error value in words: OpenAI's `{"message", "type", "code"}` object, or whatever else was sent."""
    if isinstance(error, dict):
        message = error.get("message")
        kind = error.get("type") or error.get("code")
        if message is not None:
            return f"{message} ({kind})" if kind else str(message)
    return str(error)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _choice_text(choice: Any) -> bool:
    """Whether one choice of a chunk carries text (chat delta or completion text)."""
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return any(isinstance(t, str) and t for t in (delta.get(k) for k in _DELTA_TEXT))
    text = choice.get("text")
    return isinstance(text, str) and bool(text)


def _take_usage_and_reason(a: Attempt, chunk: dict[str, Any]) -> None:
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        a.output_tokens = _int_or_none(usage.get("completion_tokens"))
        a.prompt_tokens = _int_or_none(usage.get("prompt_tokens"))
    choices = chunk.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            reason = choice.get("finish_reason") if isinstance(choice, dict) else None
            if isinstance(reason, str):
                a.done_reason = reason


async def read_openai_stream(a: Attempt, resp: httpx.Response) -> None:
    """Read a 200 answer's event stream to its end: token chunk times, usage, finish reason; a failure
    (an error event, data that is not a chunk, a stream without `data: [DONE]`) recorded with its kind."""
    clock = time.monotonic
    chunk_times = a.chunk_times
    finished = False
    try:
        async for event in EventSource(resp).aiter_sse():
            now = clock()
            a.end = now
            data = event.data
            if finished or not data:
                continue  # after [DONE]: read on so the connection can be reused; an empty event: keep-alive
            if data == _DONE:
                finished = True
                if a.done_reason is None:  # OpenAI's last chunk of a choice always says why it ended
                    a.fail("stream_cut", _NO_FINISH.format(chunks=len(chunk_times)), now)
                    return
                a.ok = True  # every failure above returned: the answer is whole
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                a.fail("protocol", f"an event's data is not JSON: {data[:120]!r}", now)
                return
            if not isinstance(chunk, dict):
                a.fail("protocol", f"an event's data is not a JSON object: {data[:120]!r}", now)
                return
            if "error" in chunk or event.event == "error":
                error = error_text(chunk.get("error", chunk))
                a.fail("stream_error", f"the stream ended with an error: {error}", now)
                return
            choices = chunk.get("choices")
            if isinstance(choices, list) and any(_choice_text(c) for c in choices):
                chunk_times.append(now)
            _take_usage_and_reason(a, chunk)
    except SSEError as exc:  # the answer is not an event stream at all
        a.fail("protocol", f"the 200 answer is not a server-sent event stream: {exc}")
        return
    if not finished:
        a.fail("stream_cut", f"the stream ended without data: [DONE] after {len(chunk_times)} chunks")


def take_openai_answer(a: Attempt, answer: dict[str, Any], now: float) -> None:
    """A whole (non-streamed) completion: ok when it has choices; usage and finish reason taken."""
    if not isinstance(answer.get("choices"), list):
        a.fail("protocol", f"the 200 answer is not a completion (no choices): {str(answer)[:200]}", now)
        return
    a.ok = True
    _take_usage_and_reason(a, answer)
