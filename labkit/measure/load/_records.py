"""One row per scheduled request: its columns, the closed set of error kinds, and the DataFrame readers.

Durations come from the monotonic clock; wall-clock columns are converted once, through one anchor.
A non-streamed request has no client-side TTFT (its answer arrives all at once): `ttft_s` stays null and
the wrapper's own figure is in `server_ttft_s`, rather than adding the server's number to the client's
queue delay and calling the sum a measurement neither side made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.rundir import RunDirectory, RunFile

if TYPE_CHECKING:
    # pandas is imported where a frame is built: the CLI imports this package for every command.
    import pandas as pd

__all__ = [
    "ERROR_KINDS",
    "REQUEST_COLUMNS",
    "Attempt",
    "ClockAnchor",
    "load_requests_frame",
    "requests_frame",
]

# The closed set of `error_kind` values (None when the request succeeded).
ERROR_KINDS: dict[str, str] = {
    "connect": "no connection could be made (refused, unreachable, out of file descriptors)",
    "timeout": "not finished within timeout_s of its intended send time (waiting for a slot included)",
    "reset": "the connection broke before a response status arrived",
    "stream_cut": "a 200 answer whose body ended early: a stream without its final done line or its "
    "data: [DONE] (closed or broken), an OpenAI stream whose [DONE] came without a finish_reason, or a JSON "
    "answer cut short",
    "stream_error": 'a stream that ended with an {"error": ...} line or event (failed mid-stream)',
    "http_4xx": "the target answered 4xx (e.g. 422 bad request, 404 unknown model)",
    "http_5xx": "the target answered 5xx (e.g. 502/503/504; 503 also when overloaded)",
    "protocol": "an answer that does not follow the API asked for (other status, not JSON, not an event "
    "stream, error in a 200)",
    "cancelled": "the run was interrupted (Ctrl-C) or ended before the request finished",
    "client": "the load generator itself failed on this request (a bug; see its log)",
}

# Column order of `requests.jsonl` rows and of the DataFrame. Times are seconds.
REQUEST_COLUMNS: tuple[str, ...] = (
    "request_id",  # 0, 1, ... in schedule order (open loop) or start order (closed loop)
    "x_request_id",  # the X-Request-ID header it was sent with, `<run's prefix>-<request_id>`: the services'
    # log lines of this request carry it (None in runs made before labkit 0.2)
    "prompt_index",  # which prompt (or prompts-file entry) it sent; its own number for a prompt of its own
    "intended_send",  # unix time the schedule meant it to leave
    "actual_send",  # unix time it left (None if it never got a connection slot)
    "queue_delay_s",  # actual_send - intended_send: the client's own lag (0 in a closed loop)
    "ttft_s",  # intended send -> first chunk with text (streams only; None otherwise)
    "itl_s",  # gaps between consecutive chunks with text, after the first (streams only)
    "e2e_s",  # intended send -> last byte, or -> the failure
    "chunks",  # chunks with text received
    "output_tokens",  # the wrapper's final answer, or OpenAI's usage.completion_tokens (None without them)
    "prompt_tokens",  # likewise (usage.prompt_tokens)
    "status",  # HTTP status; 0 when no response arrived
    "ok",  # 200 and a complete answer: a final done line or a finish_reason and [DONE] without error,
    # or a whole JSON answer
    "error_kind",  # None or one of ERROR_KINDS
    "error",  # what happened, in words
    "done_reason",  # the wrapper's done_reason, or OpenAI's finish_reason (stop / length)
    "server_ttft_s",  # the wrapper's own time_to_first_token_seconds (generate only: from its final answer)
    "server_duration_s",  # the wrapper's own duration_seconds (generate only)
)


@dataclass(frozen=True)
class ClockAnchor:
    """One reading of both clocks: wall(t) = wall + (t - monotonic) for any monotonic time t."""

    wall: float
    monotonic: float

    @classmethod
    def now(cls) -> ClockAnchor:
        return cls(wall=time.time(), monotonic=time.monotonic())

    def to_wall(self, monotonic: float) -> float:
        return self.wall + (monotonic - self.monotonic)


class Attempt:
    """One request while it runs (monotonic times); `row()` turns it into its record."""

    __slots__ = (
        "actual",
        "chunk_times",
        "done_reason",
        "end",
        "error",
        "error_kind",
        "intended",
        "ok",
        "output_tokens",
        "prompt_index",
        "prompt_tokens",
        "recorded",
        "request_id",
        "server_duration",
        "server_ttft",
        "status",
        "x_request_id",
    )

    def __init__(self, request_id: int, intended: float, prompt_index: int, x_request_id: str) -> None:
        self.request_id = request_id
        self.x_request_id = x_request_id
        self.intended = intended
        self.prompt_index = prompt_index
        self.actual: float | None = None
        self.end: float | None = None
        self.chunk_times: list[float] = []
        self.status = 0
        self.ok = False
        self.error_kind: str | None = None
        self.error: str | None = None
        self.done_reason: str | None = None
        self.output_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.server_ttft: float | None = None
        self.server_duration: float | None = None
        self.recorded = False

    def fail(self, kind: str, message: str, at: float | None = None) -> None:
        """Mark the request failed at `at` (default now). The first failure stands, and an answer that
        is already complete (its final line is in) stays a success whatever happens to the rest."""
        if self.error_kind is None and not self.ok:
            self.error_kind = kind
            self.error = message
            self.end = time.monotonic() if at is None else at

    def row(self, anchor: ClockAnchor) -> dict[str, Any]:
        intended = self.intended
        times = self.chunk_times
        end = self.end if self.end is not None else time.monotonic()
        return {
            "request_id": self.request_id,
            "x_request_id": self.x_request_id,
            "prompt_index": self.prompt_index,
            "intended_send": anchor.to_wall(intended),
            "actual_send": None if self.actual is None else anchor.to_wall(self.actual),
            "queue_delay_s": None if self.actual is None else self.actual - intended,
            "ttft_s": times[0] - intended if times else None,
            "itl_s": [b - a for a, b in pairwise(times)],
            "e2e_s": end - intended,
            "chunks": len(times),
            "output_tokens": self.output_tokens,
            "prompt_tokens": self.prompt_tokens,
            "status": self.status,
            "ok": self.ok,
            "error_kind": self.error_kind,
            "error": self.error,
            "done_reason": self.done_reason,
            "server_ttft_s": self.server_ttft,
            "server_duration_s": self.server_duration,
        }


_NULLABLE_INTS = ("output_tokens", "prompt_tokens")


def requests_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame in `REQUEST_COLUMNS` order, sorted by request_id (also when empty)."""
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=list(REQUEST_COLUMNS))
    frame = frame.sort_values("request_id", kind="stable").reset_index(drop=True)
    for column in ("request_id", "prompt_index", "chunks", "status"):
        frame[column] = frame[column].astype("int64")
    for column in _NULLABLE_INTS:
        frame[column] = frame[column].astype("Int64")
    for column in (
        "intended_send",
        "actual_send",
        "queue_delay_s",
        "ttft_s",
        "e2e_s",
        "server_ttft_s",
        "server_duration_s",
    ):
        frame[column] = frame[column].astype("float64")
    frame["ok"] = frame["ok"].astype("bool")
    return frame


def load_requests_frame(run_dir: RunDirectory | Path) -> pd.DataFrame:
    """Rebuild the per-request DataFrame from a run directory's `requests.jsonl`.

    Reads every complete line; a torn last line (a crash mid-write) is skipped. A partial run (Ctrl-C,
    a killed process) gives the rows written so far.
    """
    run = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(Path(run_dir))
    return requests_frame(list(run.read_jsonl(RunFile.REQUESTS)))
