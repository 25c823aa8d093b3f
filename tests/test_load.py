"""labkit.measure.load without a lab: schedules, validation, and every failure kind recorded exactly once.

The failures come from tiny raw HTTP servers on 127.0.0.1 started by each test (a refused port, a stall,
a cut stream, a reset, 5xx, an error line): the wrapper cannot be made to produce each of them on demand,
so these stand in for it, as CONVENTIONS allow for failures that cannot be produced for real.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import labkit.measure.load
from labkit.cli import cli
from labkit.errors import ConfigError
from labkit.measure.load import (
    ERROR_KINDS,
    REQUEST_COLUMNS,
    LoadProgress,
    LoadResult,
    LoadSpec,
    load_requests_frame,
    prompt_choices,
    run_load,
    run_load_async,
    schedule,
)
from labkit.rundir import RunDirectory, RunFile
from tests.conftest import free_port, interruptible

Handler = Callable[[socket.socket, "RawServer"], None]


# ---- tiny raw HTTP servers -----------------------------------------------------------------------
class RawServer:
    """Accepts connections on 127.0.0.1, reads one request each, and lets `handler` write raw bytes."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.requests = 0
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                piece = conn.recv(65536)
                if not piece:
                    return
                data += piece
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(body) < length:
                body += conn.recv(65536)
            self.requests += 1
            self.handler(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self) -> RawServer:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.sock.close()
        self._accepter.join(timeout=2)
        for thread in self._threads:
            thread.join(timeout=2)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: close\r\n\r\n"
)
_FINAL = {
    "done": True,
    "model": "sim",
    "done_reason": "length",
    "prompt_tokens": 7,
    "output_tokens": 3,
    "time_to_first_token_seconds": 0.001,
    "duration_seconds": 0.002,
}


def ok_stream(conn: socket.socket, server: RawServer) -> None:
    conn.sendall(_STREAM_HEAD)
    for word in ("a", " b", " c"):
        conn.sendall(_chunk(_line({"response": word, "done": False})))
        server.stopping.wait(0.002)  # separate reads, so that inter-token gaps exist
    conn.sendall(_chunk(_line(_FINAL)) + b"0\r\n\r\n")


def ok_json(conn: socket.socket, server: RawServer) -> None:
    answer = {k: v for k, v in _FINAL.items() if k != "done"} | {"response": "a b c"}
    body = json.dumps(answer).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    conn.sendall(head.encode() + body)


def slow_ok_stream(conn: socket.socket, server: RawServer) -> None:
    server.stopping.wait(0.5)
    ok_stream(conn, server)


def status(code: int, reason: str) -> Handler:
    def handler(conn: socket.socket, server: RawServer) -> None:
        body = json.dumps({"error": f"{reason} on purpose"}).encode()
        conn.sendall(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    return handler


def stall(conn: socket.socket, server: RawServer) -> None:
    server.stopping.wait(10)


def cut_cleanly(conn: socket.socket, server: RawServer) -> None:
    conn.sendall(_STREAM_HEAD + _chunk(_line({"response": "a", "done": False})) + b"0\r\n\r\n")


def cut_abruptly(conn: socket.socket, server: RawServer) -> None:
    conn.sendall(_STREAM_HEAD + _chunk(_line({"response": "a", "done": False})) + b'40\r\n{"resp')


def error_line(conn: socket.socket, server: RawServer) -> None:
    conn.sendall(
        _STREAM_HEAD
        + _chunk(_line({"response": "a", "done": False}))
        + _chunk(_line({"error": "backend died", "done": True}))
        + b"0\r\n\r\n"
    )


def reset(conn: socket.socket, server: RawServer) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST


def close_silently(conn: socket.socket, server: RawServer) -> None:
    conn.shutdown(socket.SHUT_RDWR)


def status_with_a_cut_body(conn: socket.socket, server: RawServer) -> None:
    conn.sendall(b'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\n{"err')


def not_json(conn: socket.socket, server: RawServer) -> None:
    conn.sendall(_STREAM_HEAD + _chunk(b"<html>hello</html>\n") + b"0\r\n\r\n")


@contextmanager
def raw_server(handler: Handler) -> Iterator[RawServer]:
    server = RawServer(handler)
    with server:
        yield server


def _spec(url: str, **overrides: Any) -> LoadSpec:
    values: dict[str, Any] = {"url": url, "rate": 20.0, "duration_s": 0.15, "stream": True, "timeout_s": 2.0}
    return LoadSpec(**(values | overrides))


def _run(spec: LoadSpec, tmp_path: Path) -> LoadResult:
    return run_load(spec, tmp_path, progress=False)


def _check_rows_match_file(result: LoadResult) -> None:
    assert list(result.frame.columns) == list(REQUEST_COLUMNS)
    assert result.frame["request_id"].tolist() == list(range(len(result.frame)))
    from_file = load_requests_frame(result.run_dir)
    assert from_file.drop(columns="itl_s").equals(result.frame.drop(columns="itl_s"))
    assert from_file["itl_s"].tolist() == result.frame["itl_s"].tolist()


# ---- schedules -----------------------------------------------------------------------------------
def test_constant_schedule_is_evenly_spaced_and_fills_the_duration() -> None:
    offsets = schedule(LoadSpec(url="http://127.0.0.1:1", rate=10, duration_s=30))
    assert len(offsets) == 300
    assert offsets == [i / 10 for i in range(300)]
    assert offsets[-1] < 30


def test_poisson_schedule_is_seeded() -> None:
    spec = LoadSpec(url="http://127.0.0.1:1", arrival="poisson", rate=20, duration_s=10, seed=7)
    again = LoadSpec(url="http://127.0.0.1:1", arrival="poisson", rate=20, duration_s=10, seed=7)
    other = LoadSpec(url="http://127.0.0.1:1", arrival="poisson", rate=20, duration_s=10, seed=8)
    assert schedule(spec) == schedule(again)
    assert schedule(spec) != schedule(other)
    assert prompt_choices(spec, 50) == prompt_choices(again, 50)
    assert prompt_choices(spec, 50) != prompt_choices(other, 50)
    offsets = schedule(spec)
    assert offsets == sorted(offsets) and offsets[0] > 0 and offsets[-1] < 10


def test_poisson_schedule_has_the_mean_rate_over_many_arrivals() -> None:
    spec = LoadSpec(url="http://127.0.0.1:1", arrival="poisson", rate=50, duration_s=200, seed=3)
    offsets = schedule(spec)
    # 10 000 expected arrivals: the count's standard deviation is 1 %, so 3 % is a 3-sigma band.
    assert len(offsets) / 200 == pytest.approx(50, rel=0.03)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 50, rel=0.03)
    # Exponential gaps: the standard deviation equals the mean.
    mean = sum(gaps) / len(gaps)
    std = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert std == pytest.approx(mean, rel=0.05)


def test_poisson_schedule_never_exceeds_max_requests() -> None:
    spec = LoadSpec(
        url="http://127.0.0.1:1", arrival="poisson", rate=10, duration_s=10, max_requests=100, seed=1
    )
    assert len(schedule(spec)) <= 100


def test_prompt_choices_use_every_prompt() -> None:
    spec = LoadSpec(url="http://127.0.0.1:1", rate=1, duration_s=1, prompts=["a", "b", "c"])
    assert set(prompt_choices(spec, 100)) == {0, 1, 2}


def test_a_closed_loop_has_no_schedule() -> None:
    with pytest.raises(ConfigError, match="closed loop"):
        schedule(LoadSpec(url="http://127.0.0.1:1", mode="closed", concurrency=2, duration_s=1))


# ---- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"rate": 0}, r"rate \(--rate\).*greater than 0"),
        ({"rate": -5}, r"rate \(--rate\)"),
        ({"rate": float("nan")}, r"rate \(--rate\)"),
        ({"rate": None}, r"rate \(--rate\): an open loop needs a rate"),
        ({"duration_s": 0}, r"duration_s \(--duration-s\)"),
        ({"duration_s": 7200}, r"duration_s \(--duration-s\): 7200 s is over the cap of 3600 s"),
        ({"duration_s": 11, "max_duration_s": 10}, r"over the cap of 10 s"),
        ({"rate": 1000, "duration_s": 200}, r"200000 requests, over the cap max_requests = 100000"),
        ({"concurrency": 4}, r"concurrency \(--concurrency\) drives a closed loop"),
        ({"mode": "closed", "concurrency": 2}, r"rate \(--rate\) drives an open loop"),
        ({"mode": "closed"}, r"concurrency \(--concurrency\): a closed loop needs"),
        ({"url": "ftp://127.0.0.1/"}, r"url \(--url\).*http:// or https://"),
        ({"url": "http://10.1.2.3:8000"}, r"'10.1.2.3' is not a loopback address.*--allow-non-loopback"),
        ({"url": "http://example.com"}, r"not a loopback address"),
        ({"prompts": []}, r"prompts \(--prompt\): .*at least one non-empty prompt"),
        ({"prompts": ["ok", " "]}, r"prompts \(--prompt\): every prompt must be a non-empty string"),
        ({"max_tokens": 0}, r"max_tokens \(--max-tokens\)"),
        ({"timeout_s": 0}, r"timeout_s \(--timeout-s\)"),
        ({"unknown": 1}, r"unknown: Extra inputs are not permitted"),
    ],
)
def test_bad_specs_are_one_config_error_naming_the_field(overrides: dict[str, Any], match: str) -> None:
    values = {"url": "http://127.0.0.1:8000", "rate": 10.0, "duration_s": 5.0} | overrides
    with pytest.raises(ConfigError, match=match) as info:
        LoadSpec(**values)
    assert str(info.value).startswith("invalid load spec: ")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://127.0.0.2:8000/", "http://localhost:1", "http://[::1]:8000"]
)
def test_loopback_targets_are_accepted(url: str) -> None:
    spec = LoadSpec(url=url, rate=1, duration_s=1)
    assert spec.target.endswith("/generate") and "//generate" not in spec.target


def test_non_loopback_target_is_allowed_with_the_flag() -> None:
    spec = LoadSpec(url="http://10.1.2.3:8000/generate", rate=1, duration_s=1, allow_non_loopback=True)
    assert spec.target == "http://10.1.2.3:8000/generate"


# ---- outcomes, one row each -----------------------------------------------------------------------
def test_streamed_success_has_token_timings(tmp_path: Path) -> None:
    with raw_server(ok_stream) as server:
        result = _run(_spec(server.url), tmp_path)
        assert server.requests == 3
    frame = result.frame
    assert len(frame) == result.scheduled == 3
    assert frame["ok"].all() and (frame["status"] == 200).all()
    assert frame["error_kind"].isna().all()
    assert (frame["chunks"] == 3).all() and frame["itl_s"].map(len).eq(2).all()
    assert frame["output_tokens"].tolist() == [3, 3, 3] and (frame["done_reason"] == "length").all()
    assert (frame["server_ttft_s"] == 0.001).all()
    assert (frame["queue_delay_s"] >= 0).all()
    assert (frame["ttft_s"] <= frame["e2e_s"]).all()
    assert (frame["actual_send"] - frame["intended_send"] - frame["queue_delay_s"]).abs().max() < 1e-5
    # TTFT and the gaps after it add up to the time of the last token chunk, which is before the end.
    last_token = frame["ttft_s"] + frame["itl_s"].map(sum)
    assert (last_token <= frame["e2e_s"] + 1e-9).all()
    _check_rows_match_file(result)


def test_non_streamed_success_leaves_client_ttft_empty(tmp_path: Path) -> None:
    with raw_server(ok_json) as server:
        result = _run(_spec(server.url, stream=False), tmp_path)
    frame = result.frame
    assert frame["ok"].all() and len(frame) == 3
    assert frame["ttft_s"].isna().all() and frame["itl_s"].map(len).eq(0).all()
    assert (frame["server_ttft_s"] == 0.001).all() and (frame["output_tokens"] == 3).all()
    _check_rows_match_file(result)


@pytest.mark.parametrize(
    ("handler", "kind", "code", "message"),
    [
        (status(500, "Internal Server Error"), "http_5xx", 500, "HTTP 500: Internal Server Error on purpose"),
        (status(503, "Service Unavailable"), "http_5xx", 503, "HTTP 503: Service Unavailable on purpose"),
        (status(422, "Unprocessable Entity"), "http_4xx", 422, "HTTP 422"),
        (cut_cleanly, "stream_cut", 200, "without its final done line after 1 chunks"),
        (cut_abruptly, "stream_cut", 200, "broke off after 1 chunks"),
        (error_line, "stream_error", 200, "the stream ended with an error: backend died"),
        (status_with_a_cut_body, "http_5xx", 503, "HTTP 503 (its body broke off"),
        (reset, "reset", 0, "broke before a response"),
        (close_silently, "reset", 0, "broke before a response"),
        (not_json, "protocol", 200, "not JSON"),
    ],
)
def test_each_failure_is_recorded_once_with_its_kind(
    tmp_path: Path, handler: Handler, kind: str, code: int, message: str
) -> None:
    with raw_server(handler) as server:
        result = _run(_spec(server.url), tmp_path)
    frame = result.frame
    assert len(frame) == 3 and frame["request_id"].tolist() == [0, 1, 2]
    assert frame["error_kind"].tolist() == [kind] * 3
    assert frame["status"].tolist() == [code] * 3
    assert not frame["ok"].any()
    assert frame["error"].str.contains(message, regex=False).all(), frame["error"].tolist()
    assert frame["e2e_s"].notna().all() and frame["output_tokens"].isna().all()
    assert kind in ERROR_KINDS
    _check_rows_match_file(result)


def test_an_answer_complete_before_a_failure_stays_ok(tmp_path: Path) -> None:
    def final_line_then_stall(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(_STREAM_HEAD + _chunk(_line({"response": "a", "done": False})) + _chunk(_line(_FINAL)))
        server.stopping.wait(10)  # never ends the chunked body

    with raw_server(final_line_then_stall) as server:
        result = _run(_spec(server.url, timeout_s=0.5), tmp_path)
    frame = result.frame
    assert frame["ok"].all() and frame["error_kind"].isna().all()
    assert (frame["e2e_s"] < 0.5).all()  # timed to the last byte, not to the deadline that ended the read


def test_refused_connections_are_recorded(tmp_path: Path) -> None:
    result = _run(_spec(f"http://127.0.0.1:{free_port()}"), tmp_path)
    frame = result.frame
    assert frame["error_kind"].tolist() == ["connect"] * 3
    assert (frame["status"] == 0).all() and frame["actual_send"].notna().all()
    _check_rows_match_file(result)


def test_a_stalled_server_gives_timeouts_and_the_run_still_ends(tmp_path: Path) -> None:
    with raw_server(stall) as server:
        result = _run(_spec(server.url, timeout_s=0.3), tmp_path)
    frame = result.frame
    assert frame["error_kind"].tolist() == ["timeout"] * 3
    assert frame["error"].str.contains("in flight").all()
    # The deadline counts from the intended send, like the latency.
    assert (frame["e2e_s"] >= 0.3).all()
    _check_rows_match_file(result)


def test_a_request_waiting_for_a_slot_shows_the_wait_as_queue_delay(tmp_path: Path) -> None:
    with raw_server(slow_ok_stream) as server:
        result = _run(_spec(server.url, rate=20, duration_s=0.1, max_in_flight=1), tmp_path)
    first, second = result.frame.iloc[0], result.frame.iloc[1]
    assert result.frame["ok"].all() and len(result.frame) == 2
    # One slot: the second request left only when the first (>= 0.5 s) had ended, and its latency,
    # counted from its intended send, includes that wait.
    assert second["actual_send"] >= first["intended_send"] + first["e2e_s"] - 1e-3
    assert second["queue_delay_s"] >= 0.4
    assert second["e2e_s"] >= second["queue_delay_s"] + 0.5


def test_a_loopback_check_skipped_by_model_copy_is_applied_by_run_load(tmp_path: Path) -> None:
    spec = _spec("http://127.0.0.1:1").model_copy(update={"url": "http://10.1.2.3:8000"})
    with pytest.raises(ConfigError, match="not a loopback address"):
        _run(spec, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_streamed_answer_to_a_non_streamed_request_is_a_protocol_error(tmp_path: Path) -> None:
    with raw_server(ok_stream) as server:
        result = _run(_spec(server.url, stream=False), tmp_path)
    assert result.frame["error_kind"].tolist() == ["protocol"] * 3


def test_a_json_answer_cut_short_is_a_stream_cut(tmp_path: Path) -> None:
    def cut_json(conn: socket.socket, server: RawServer) -> None:
        conn.sendall(_STREAM_HEAD + _chunk(b'{"response": "a b') + b"0\r\n\r\n")

    with raw_server(cut_json) as server:
        result = _run(_spec(server.url, stream=False), tmp_path)
    assert result.frame["error_kind"].tolist() == ["stream_cut"] * 3


def test_open_loop_sends_on_schedule_while_earlier_requests_are_still_running(tmp_path: Path) -> None:
    with raw_server(slow_ok_stream) as server:
        result = _run(_spec(server.url, rate=20, duration_s=0.2), tmp_path)
    frame = result.frame
    assert frame["ok"].all() and len(frame) == 4
    # Each request took >= 0.5 s, sends were 0.05 s apart: every later send happened before the first ended.
    first_end = frame["intended_send"].iloc[0] + frame["e2e_s"].iloc[0]
    assert (frame["actual_send"].iloc[1:] < first_end).all()
    assert (frame["e2e_s"] >= 0.5).all()


def test_closed_loop_keeps_at_most_concurrency_requests_in_flight(tmp_path: Path) -> None:
    with raw_server(ok_stream) as server:
        spec = LoadSpec(
            url=server.url, mode="closed", concurrency=2, duration_s=5, max_requests=8, stream=True
        )
        result = _run(spec, tmp_path)
    frame = result.frame
    assert len(frame) == 8 and frame["ok"].all()  # max_requests ends it long before duration_s
    assert (frame["queue_delay_s"] == 0).all()
    events = sorted(
        [(t, 1) for t in frame["intended_send"]] + [(t, -1) for t in frame["intended_send"] + frame["e2e_s"]]
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak <= 2


def test_params_and_journal_are_written(tmp_path: Path) -> None:
    with raw_server(ok_stream) as server:
        result = _run(_spec(server.url), tmp_path)
    params = result.run_dir.read_json(RunFile.PARAMS)["load"]
    assert params["spec"]["rate"] == 20.0 and params["schedule"]["scheduled"] == 3
    assert params["columns"] == list(REQUEST_COLUMNS)
    kinds = [e["kind"] for e in result.run_dir.read_jsonl(RunFile.EVENTS)]
    assert kinds == ["load_started", "load_finished"]
    summary = result.summary()
    assert summary["requests"] == 3 and summary["ok"] == 3 and summary["error_kinds"] == {}
    assert summary["e2e_s"]["p50"] is not None


def test_a_run_directory_holds_one_load_run(tmp_path: Path) -> None:
    run_dir = RunDirectory.create(tmp_path, "shared")
    run_dir.write_json(RunFile.PARAMS, {"notebook": {"duration_s": 1}})
    with raw_server(ok_stream) as server:
        result = run_load(_spec(server.url), run_dir, progress=False)
        assert result.run_dir == run_dir
        assert set(run_dir.read_json(RunFile.PARAMS)) == {"notebook", "load"}
        with pytest.raises(ConfigError, match="one load run per run directory"):
            run_load(_spec(server.url), run_dir, progress=False)


def test_cancelling_a_run_records_what_was_in_flight(tmp_path: Path) -> None:
    run_dir = RunDirectory.create(tmp_path, "cancel")

    async def start_then_cancel(url: str) -> None:
        task = asyncio.create_task(run_load_async(_spec(url, rate=10, duration_s=2), run_dir, progress=False))
        await asyncio.sleep(0.35)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with raw_server(stall) as server:
        asyncio.run(start_then_cancel(server.url))
    frame = load_requests_frame(run_dir)
    assert 1 <= len(frame) < 20
    assert frame["request_id"].tolist() == list(range(len(frame)))
    assert (frame["error_kind"] == "cancelled").all()
    finished = [e for e in run_dir.read_jsonl(RunFile.EVENTS) if e["kind"] == "load_finished"]
    assert finished[0]["interrupted"] is True and finished[0]["requests"] == len(frame)


def test_a_monitor_stops_a_run_early_and_its_reason_is_kept(tmp_path: Path) -> None:
    seen: list[LoadProgress] = []

    def monitor(progress: LoadProgress) -> str | None:
        seen.append(progress)
        return "too many in flight" if progress.in_flight >= 3 else None

    with raw_server(stall) as server:
        result = run_load(_spec(server.url, rate=10, duration_s=5), tmp_path, progress=False, monitor=monitor)
    assert result.stopped == "too many in flight"
    # Stopped long before the 50 requests of its schedule: every row is a request cancelled by the stop.
    assert 3 <= len(result.frame) < 10 and result.scheduled == 50
    assert (result.frame["error_kind"] == "cancelled").all()
    assert result.frame["error"].str.contains("stopped early: too many in flight").all()
    assert seen[-1].in_flight >= 3 and seen[-1].duration_s == 5
    assert all(b.elapsed_s > a.elapsed_s for a, b in itertools.pairwise(seen))
    finished = [e for e in result.run_dir.read_jsonl(RunFile.EVENTS) if e["kind"] == "load_finished"]
    assert finished[0]["stopped"] == "too many in flight" and finished[0]["interrupted"] is False
    assert result.summary()["stopped"] == "too many in flight"


def test_a_monitor_that_never_objects_changes_nothing(tmp_path: Path) -> None:
    calls: list[int] = []

    def monitor(progress: LoadProgress) -> str | None:
        calls.append(progress.completed)
        return None

    with raw_server(ok_stream) as server:
        result = run_load(
            _spec(server.url, rate=10, duration_s=0.6), tmp_path, progress=False, monitor=monitor
        )
    assert result.stopped is None and result.frame["ok"].all() and len(result.frame) == 6
    assert calls and calls == sorted(calls)


def test_run_load_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    async def from_a_notebook_cell(url: str) -> LoadResult:
        return run_load(_spec(url), tmp_path, progress=False)

    with raw_server(ok_stream) as server:
        result = asyncio.run(from_a_notebook_cell(server.url))
    assert result.frame["ok"].all() and len(result.frame) == 3


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with raw_server(ok_stream) as server:
        run_load(_spec(server.url), tmp_path, progress=True)
    captured = capsys.readouterr()
    assert "load open" in captured.err and captured.out == ""


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    with raw_server(ok_stream) as server:
        result = _run(_spec(server.url), tmp_path)
    with open(result.run_dir.file(RunFile.REQUESTS), "a", encoding="utf-8") as fh:
        fh.write('{"request_id": 3, "ok": tr')
    frame = load_requests_frame(result.run_dir.path)
    assert frame["request_id"].tolist() == [0, 1, 2]


def test_an_empty_frame_has_the_columns(tmp_path: Path) -> None:
    frame = load_requests_frame(RunDirectory.create(tmp_path, "empty"))
    assert list(frame.columns) == list(REQUEST_COLUMNS) and len(frame) == 0


def test_public_surface_is_sorted_and_complete() -> None:
    names = labkit.measure.load.__all__
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions.
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n))
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(labkit.measure.load, name), name
    public = {n for n in vars(labkit.measure.load) if not n.startswith("_") and n != "annotations"}
    assert public - set(names) == set()


# ---- CLI -----------------------------------------------------------------------------------------
def test_cli_load_prints_a_summary_and_the_run_directory(tmp_path: Path) -> None:
    with raw_server(ok_stream) as server:
        result = CliRunner().invoke(
            cli,
            [
                "load",
                "--rate",
                "20",
                "--duration-s",
                "0.15",
                "--stream",
                "--url",
                server.url,
                "--out",
                str(tmp_path),
            ],
        )
    assert result.exit_code == 0, result.output
    assert "requests 3  ok 3" in result.output
    assert "ttft" in result.output and "e2e" in result.output
    (run_dir,) = tmp_path.iterdir()
    assert str(run_dir) in result.output
    assert len(load_requests_frame(run_dir)) == 3


def test_cli_load_refuses_a_bad_rate_before_sending(tmp_path: Path) -> None:
    with raw_server(ok_stream) as server:
        result = CliRunner().invoke(
            cli, ["load", "--rate", "0", "--duration-s", "1", "--url", server.url, "--out", str(tmp_path)]
        )
        assert server.requests == 0
    assert result.exit_code == 1
    assert "error: invalid load spec: rate (--rate)" in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_load_without_a_lab_or_url_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "--lab-dir",
            str(tmp_path / "lab"),
            "load",
            "--rate",
            "1",
            "--duration-s",
            "1",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1
    assert "no lab is running" in result.output and "--url" in result.output


def test_ctrl_c_on_the_cli_keeps_every_request_sent_so_far(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "from labkit.cli import main; main()", "load", "--rate", "10"]
    command += ["--duration-s", "5", "--timeout-s", "30", "--no-progress", "--out", str(tmp_path)]
    with raw_server(stall) as server:
        proc = subprocess.Popen(
            [*command, "--url", server.url], stderr=subprocess.PIPE, text=True, preexec_fn=interruptible
        )
        try:
            deadline = time.monotonic() + 30
            while server.requests < 3 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err
    (run_dir,) = tmp_path.iterdir()
    assert f"the requests so far are in {run_dir}" in err
    frame = load_requests_frame(run_dir)
    assert 3 <= len(frame) < 50
    assert frame["request_id"].tolist() == list(range(len(frame)))
    assert (frame["error_kind"] == "cancelled").all()
