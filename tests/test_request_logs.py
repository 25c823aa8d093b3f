"""A failed row of requests.jsonl leads to its log lines: the load generator sends each request's
X-Request-ID and records it (`x_request_id`), the lines that carry the ids of a sample of the failed requests
are copied into the run (`labkit.measure.request_logs`), and the report's table shows them.

The server here is a small Starlette app that answers some requests 503 and writes its log lines as the lab's
services do (the lab itself is in tests/integration/test_request_logs_lab.py).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from labkit.measure.load import REQUEST_COLUMNS, LoadSpec, load_requests_frame, run_load
from labkit.measure.request_logs import (
    MAX_FAILED_REQUESTS,
    failed_request_ids,
    read_request_logs,
    save_request_logs,
)
from labkit.report import FAILED_REQUEST_COLUMNS, RunData, failed_requests_note, failed_requests_table
from labkit.rundir import RunDirectory, RunFile
from labkit.service_logs import REQUEST_ID_HEADER, json_formatter
from tests.test_wrapper import serving


class LoggingServer:
    """POST /generate: every third request fails with 503; each request leaves a JSON log line with its id."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lines: list[str] = []
        self.app = Starlette(routes=[Route("/generate", self.generate, methods=["POST"])])

    async def generate(self, request: Request) -> Response:
        request_id = request.headers[REQUEST_ID_HEADER]
        self.ids.append(request_id)
        failed = len(self.ids) % 3 == 0
        status = 503 if failed else 200
        record = logging.makeLogRecord(
            {"msg": f"POST /generate {status}", "levelname": "WARNING" if failed else "INFO"}
        )
        record.request_id = request_id
        record.status = status
        self.lines.append(json_formatter("wrapper").format(record))
        if failed:
            return JSONResponse({"error": "overloaded"}, status_code=503)
        return JSONResponse({"model": "m", "response": "ok", "done_reason": "stop", "output_tokens": 1})


@pytest.fixture
def server() -> Iterator[tuple[LoggingServer, str]]:
    fake = LoggingServer()
    with serving(fake.app) as url:
        yield fake, url


def _load(url: str, out: Path) -> pd.DataFrame:
    spec = LoadSpec(url=url, rate=40, duration_s=0.6, stream=False, max_tokens=1)
    return run_load(spec, out, progress=False).frame


def test_every_request_carries_an_id_of_its_run_and_the_row_records_it(
    server: tuple[LoggingServer, str], tmp_path: Path
) -> None:
    frame = _load(server[1], tmp_path / "a")
    assert "x_request_id" in REQUEST_COLUMNS and list(frame.columns) == list(REQUEST_COLUMNS)
    run_dir = next((tmp_path / "a").iterdir())
    prefix = json.loads((run_dir / RunFile.PARAMS).read_text())["load"]["request_id_prefix"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}", prefix)
    assert frame["x_request_id"].tolist() == [f"{prefix}-{n:012x}" for n in frame["request_id"]]
    assert all(
        str(uuid.UUID(x)) == x for x in frame["x_request_id"]
    )  # UUIDs: llama.cpp's server takes no other
    assert sorted(server[0].ids) == sorted(frame["x_request_id"])  # what went over the wire
    # The file holds it too, and another run has ids of its own.
    assert load_requests_frame(run_dir)["x_request_id"].tolist() == frame["x_request_id"].tolist()
    again = _load(server[1], tmp_path / "b")
    assert not set(again["x_request_id"]) & set(frame["x_request_id"])


def test_a_failed_row_leads_to_its_log_lines_in_the_run_and_the_report(
    server: tuple[LoggingServer, str], tmp_path: Path
) -> None:
    frame = _load(server[1], tmp_path)
    run_dir = RunDirectory(next(tmp_path.iterdir()))
    failed = frame[~frame["ok"]]
    assert len(failed) >= 3 and (failed["status"] == 503).all()
    logs = {"wrapper": server[0].lines, "model": []}
    kept = save_request_logs(run_dir, frame, lambda service: logs[service])
    lines = read_request_logs(run_dir)
    assert kept == len(lines) == len(failed)  # one wrapper line each; no model line (no model here)
    assert {line["request_id"] for line in lines} == set(failed["x_request_id"])
    assert all(line["log"] == "wrapper" and line["status"] == 503 for line in lines)

    run = RunData.load(run_dir.path)
    table = failed_requests_table(run)
    assert list(table.columns) == list(FAILED_REQUEST_COLUMNS)
    assert table["request id"].tolist() == failed["x_request_id"].tolist()
    first = table.iloc[0]
    assert "http_5xx" in first["client saw"] and "overloaded" in first["client saw"]
    assert "POST /generate 503" in first["wrapper log"] and first["wrapper log"].startswith("t ")
    assert first["model log"] == "no line with this id"
    html = table.to_html_for_people()
    assert failed["x_request_id"].iloc[0] in html and "POST /generate 503" in html
    assert f"{len(table)} of the {len(failed)} failed requests" in failed_requests_note(run, table)


def test_a_run_without_failures_or_without_kept_lines_says_so(tmp_path: Path) -> None:
    run_dir = RunDirectory.create(tmp_path, "load")
    base = {"prompt_index": 0, "chunks": 0, "status": 200, "itl_s": [], "e2e_s": 0.1}
    ok = {**base, "request_id": 0, "x_request_id": "p-0", "ok": True, "intended_send": 1.0}
    run_dir.append_jsonl(RunFile.REQUESTS, ok)
    frame = load_requests_frame(run_dir)
    assert save_request_logs(run_dir, frame, lambda service: ["never read"]) == 0
    assert not run_dir.file(RunFile.REQUEST_LOGS).exists()
    run = RunData.load(run_dir.path)
    assert failed_requests_table(run).empty
    assert failed_requests_note(run, failed_requests_table(run)) == "No request failed."
    bad = {**base, "request_id": 1, "x_request_id": "p-1", "ok": False, "status": 0, "intended_send": 2.0}
    run_dir.append_jsonl(RunFile.REQUESTS, bad)
    run = RunData.load(run_dir.path)
    assert "kept none of their log lines" in failed_requests_note(run, failed_requests_table(run))


def test_the_sample_is_bounded_and_takes_every_error_kind(tmp_path: Path) -> None:
    rows = [
        {"request_id": n, "x_request_id": f"p-{n}", "ok": False, "error_kind": "http_5xx"} for n in range(100)
    ]
    rows.append({"request_id": 100, "x_request_id": "p-100", "ok": False, "error_kind": "timeout"})
    rows.append({"request_id": 101, "x_request_id": None, "ok": False, "error_kind": "connect"})  # a v1 row
    frame = pd.DataFrame(rows)
    chosen = failed_request_ids(frame)
    assert len(chosen) == MAX_FAILED_REQUESTS
    assert "p-100" in chosen  # the rare kind is not crowded out by the storm
    assert chosen == sorted(chosen, key=lambda i: int(i.split("-")[1]))  # in request order
    assert failed_request_ids(frame.drop(columns=["x_request_id"])) == []
