"""labkit.service_logs: the request id's checks, the JSON line's shape, and the middleware that gives every
request its id, echoes it and logs the request's line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from labkit.service_logs import (
    LOG_FIELDS,
    REQUEST_FIELDS,
    REQUEST_ID_HEADER,
    REQUEST_ID_MAX_CHARS,
    RequestIdFilter,
    RequestLogMiddleware,
    checked_request_id,
    current_request_id,
    json_formatter,
    new_request_id,
    note_request_outcome,
)

REQUEST_LOGGER = "labkit.service_logs"


@pytest.mark.parametrize(
    "value", ["abc", "0f3a9c2e71b4-17", "a" * REQUEST_ID_MAX_CHARS, "2f1e:run.7_x-1", b"bytes-id"]
)
def test_usable_ids_are_kept_as_given(value: str | bytes) -> None:
    expected = value.decode() if isinstance(value, bytes) else value
    assert checked_request_id(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "a" * (REQUEST_ID_MAX_CHARS + 1),
        "two words",
        "id\r\nX-Evil: 1",
        'q"uote',
        "caf\u00e9",
        "<b>",
    ],
)
def test_unusable_ids_are_refused(value: str | None) -> None:
    assert checked_request_id(value) is None


UUID_SHAPE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_new_ids_are_usable_and_distinct() -> None:
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(UUID_SHAPE, i) and checked_request_id(i) == i for i in ids)


def _format(record: logging.LogRecord, service: str = "wrapper") -> dict[str, object]:
    line = json_formatter(service).format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_a_line_is_one_json_object_with_the_fields_every_line_has() -> None:
    record = logging.makeLogRecord(
        {"name": "labkit.x", "levelname": "WARNING", "levelno": 30, "msg": "backend %s", "args": ("down",)}
    )
    line = _format(record, "model")
    assert list(line)[: len(LOG_FIELDS)] == list(LOG_FIELDS)  # time first: `tail` reads in order
    assert (line["level"], line["service"], line["logger"], line["message"]) == (
        "WARNING",
        "model",
        "labkit.x",
        "backend down",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", str(line["time"]))
    assert "request_id" not in line  # written outside any request


def test_an_exception_is_kept_in_the_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info(), "levelname": "ERROR"})
    line = _format(record)
    assert "RuntimeError: boom" in str(line["exc_info"])


def _app() -> Starlette:
    async def ok(request: Request) -> Response:
        logging.getLogger("labkit.test").warning("inside %s", current_request_id())
        return JSONResponse({"id": current_request_id()})

    async def cut(request: Request) -> Response:
        note_request_outcome(502, "fault_stream_cut")
        return PlainTextResponse("partial")

    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok", status_code=int(request.query_params.get("status", "200")))

    app = Starlette(
        routes=[
            Route("/ok", ok, methods=["POST"]),
            Route("/cut", cut),
            Route("/boom", boom),
            Route("/health", health),
        ]
    )
    app.add_middleware(RequestLogMiddleware, quiet_paths=("/health",))
    return app


class _Client:
    """Calls the app in-process (httpx's ASGI transport), one event loop per call."""

    def __init__(self, app: Starlette) -> None:
        self._transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            async with httpx.AsyncClient(transport=self._transport, base_url="http://test") as c:
                return await c.request(method, path, **kwargs)

        return asyncio.run(call())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@pytest.fixture
def client() -> _Client:
    return _Client(_app())


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [_format(r) for r in caplog.records if r.name == REQUEST_LOGGER]


def test_the_client_s_id_is_echoed_kept_for_the_request_s_lines_and_logged(
    client: _Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(RequestIdFilter())
    answer = client.post("/ok", headers={REQUEST_ID_HEADER: "run1-7"})
    assert answer.headers[REQUEST_ID_HEADER] == "run1-7"
    assert answer.json() == {"id": "run1-7"}
    inside = next(r for r in caplog.records if r.name == "labkit.test")
    assert _format(inside)["request_id"] == "run1-7"  # a line written while serving it carries it
    (line,) = _request_lines(caplog)
    assert set(REQUEST_FIELDS) <= set(line)
    assert (line["request_id"], line["method"], line["path"], line["status"]) == (
        "run1-7",
        "POST",
        "/ok",
        200,
    )
    assert isinstance(line["duration_s"], float) and line["duration_s"] >= 0
    assert line["level"] == "INFO" and "outcome" not in line
    assert current_request_id() is None  # nothing leaks out of the request


def test_an_unusable_id_gets_a_new_one_on_the_answer_and_in_the_log(
    client: _Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = client.post("/ok", headers={REQUEST_ID_HEADER: "no spaces please"})
    given = answer.headers[REQUEST_ID_HEADER]
    assert re.fullmatch(UUID_SHAPE, given)
    assert _request_lines(caplog)[0]["request_id"] == given
    # Without any header, likewise.
    assert re.fullmatch(UUID_SHAPE, client.post("/ok").headers[REQUEST_ID_HEADER])


def test_a_request_that_failed_after_its_status_says_how_it_ended(
    client: _Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert client.get("/cut", headers={REQUEST_ID_HEADER: "c-1"}).status_code == 200
    (line,) = _request_lines(caplog)
    assert (line["status"], line["outcome"], line["error"], line["level"]) == (
        200,
        502,
        "fault_stream_cut",
        "WARNING",
    )


def test_an_unhandled_error_is_logged_as_a_500(client: _Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert client.get("/boom", headers={REQUEST_ID_HEADER: "b-1"}).status_code == 500
    line = next(line for line in _request_lines(caplog) if line["path"] == "/boom")
    assert (line["status"], line["level"], line["request_id"]) == (500, "WARNING", "b-1")


def test_probes_are_logged_only_when_they_fail(client: _Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ok = client.get("/health")
    assert ok.status_code == 200 and REQUEST_ID_HEADER in ok.headers  # echoed, not logged
    assert _request_lines(caplog) == []
    assert client.get("/health", params={"status": "503"}).status_code == 503
    (line,) = _request_lines(caplog)
    assert (line["path"], line["status"]) == ("/health", 503)


def test_configure_service_logging_sends_every_line_as_json_to_stderr() -> None:
    # In a child: configuring logging changes the whole process's.
    code = (
        "import logging, warnings\n"
        "from labkit.service_logs import configure_service_logging\n"
        "configure_service_logging('wrapper')\n"
        "logging.getLogger('labkit.x').info('kept')\n"
        "logging.getLogger('somelib').info('dropped: other libraries log from WARNING')\n"
        "logging.getLogger('somelib').warning('kept too')\n"
        "warnings.warn('a warning')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in io.StringIO(done.stderr)]
    assert [line["message"] for line in lines][:2] == ["kept", "kept too"]
    assert "a warning" in lines[2]["message"] and lines[2]["logger"] == "py.warnings"
    assert all(line["service"] == "wrapper" and set(LOG_FIELDS) <= set(line) for line in lines)
