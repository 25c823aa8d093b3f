"""What the lab's services write to their logs: one JSON object per line (python-json-logger), and the request
id (`X-Request-ID`) that ties a client's request to its lines in the wrapper and in the model server.

Every line has `time` (UTC, ISO 8601), `level`, `service`, `logger` and `message`; a line written while a
request is served has its `request_id`; a request's own line (`RequestLogMiddleware`, one when it ends) also
has `method`, `path`, `status` and `duration_s`, and `outcome` and `error` when the service counted the
request as failed after its status was sent (a stream cut, a client gone). docs/logs.md has the fields.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "LOG_FIELDS",
    "REQUEST_FIELDS",
    "REQUEST_ID_HEADER",
    "REQUEST_ID_MAX_CHARS",
    "RequestIdFilter",
    "RequestLogMiddleware",
    "checked_request_id",
    "configure_service_logging",
    "current_request_id",
    "json_formatter",
    "new_request_id",
    "note_request_outcome",
    "request_id_of",
]

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is taken as it is when it is this short and made of these characters (a UUID, a ULID, the
# load generator's `<run>-<n>`); anything else would let a client write what it likes into every log line,
# so the service makes a new id instead.
REQUEST_ID_MAX_CHARS = 128
_SAFE_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{REQUEST_ID_MAX_CHARS}}}")
# Every line has these; a request's own line has REQUEST_FIELDS too.
LOG_FIELDS: tuple[str, ...] = ("time", "level", "service", "logger", "message")
REQUEST_FIELDS: tuple[str, ...] = ("request_id", "method", "path", "status", "duration_s")

_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
_SCOPE_KEY = "labkit_request_id"
# The request being served in this task: its id and what the service noted about its outcome.
_current: ContextVar[dict[str, Any] | None] = ContextVar("labkit_request", default=None)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def checked_request_id(value: str | bytes | None) -> str | None:
    """`value` when it is a usable request id (1 to REQUEST_ID_MAX_CHARS of letters, digits, `._:-`), else
    None."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value is None or not _SAFE_REQUEST_ID.fullmatch(value):
        return None
    return value


def new_request_id() -> str:
    """A fresh request id: 32 hex digits (a random UUID)."""
    return str(uuid.uuid4())  # UUID-shaped: every upstream takes it (llama-cpp-python's server only such)


def current_request_id() -> str | None:
    """The id of the request this task serves, or None outside a request."""
    fields = _current.get()
    return None if fields is None else fields["request_id"]


def request_id_of(scope: Scope) -> str | None:
    """The id `RequestLogMiddleware` gave the request of `scope` (an exception handler's answer echoes it)."""
    state = scope.get("state")
    return state.get(_SCOPE_KEY) if isinstance(state, dict) else None


def note_request_outcome(status: int, error: str | None = None) -> None:
    """Record how the current request ended when it differs from the status sent (a stream that failed after
    its 200, a client that left): its request line then carries `outcome` and `error`. Outside a request,
    nothing happens."""
    fields = _current.get()
    if fields is not None:
        fields["outcome"] = status
        if error is not None:
            fields["error"] = error


class _Formatter(JsonFormatter):
    """python-json-logger's formatter with the lab's time (UTC, milliseconds) and its service's name."""

    def __init__(self, service: str) -> None:
        super().__init__(
            "{asctime}{levelname}{service}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        record.service = self._service
        return super().format(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def json_formatter(service: str) -> logging.Formatter:
    """The formatter of every lab service's log: one JSON object per line, in LOG_FIELDS' order first."""
    return _Formatter(service)


class RequestIdFilter(logging.Filter):
    """Adds the current request's id to a line written while the request is served (a backend failure)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            fields = _current.get()
            if fields is not None:
                record.request_id = fields["request_id"]
        return True


def configure_service_logging(
    service: str, *, level: int = logging.INFO, handler: logging.Handler | None = None
) -> logging.Handler:
    """Send every log line of this process through one handler (default: stderr) as JSON.

    labkit's own loggers log from `level`, other libraries from WARNING; Python's warnings become log lines.
    Called once by a service's main (the library never configures logging itself). Returns the handler.
    """
    handler = handler if handler is not None else logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter(service))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("labkit").setLevel(level)
    logging.captureWarnings(True)
    return handler


class RequestLogMiddleware:
    """Pure ASGI: gives every HTTP request an id (the client's `X-Request-ID` when usable, else a new one),
    echoes it on the answer, keeps it for the lines logged while the request is served, and logs one line
    when the request ends.

    A request to one of `quiet_paths` (probes, scrapes: several a second) that succeeds is not logged.
    """

    def __init__(self, app: ASGIApp, *, quiet_paths: Iterable[str] = ()) -> None:
        self._app = app
        self._quiet = frozenset(quiet_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        given = next((value for key, value in scope["headers"] if key == _HEADER_KEY), None)
        request_id = checked_request_id(given) or new_request_id()
        scope.setdefault("state", {})[_SCOPE_KEY] = request_id
        fields: dict[str, Any] = {"request_id": request_id}
        token = _current.set(fields)
        echoed = (_HEADER_KEY, request_id.encode("latin-1"))
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        started = time.perf_counter()
        try:
            await self._app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
            # No status sent: the app raised, and the server's error handler answers 500.
            self._log(scope, fields, 500 if status is None else status, time.perf_counter() - started)

    def _log(self, scope: Scope, fields: dict[str, Any], status: int, duration_s: float) -> None:
        path = scope.get("path", "")
        if fields.get("outcome") == status:
            del fields["outcome"]  # said by `status` already; an `error` stays
        outcome = fields.get("outcome")
        if status < 400 and outcome is None and path in self._quiet:
            return
        method = scope.get("method", "")
        failed = status >= 500 or (outcome is not None and outcome >= 500)
        message = f"{method} {path} {status}" + (f" (counted {outcome})" if outcome is not None else "")
        fields.update(method=method, path=path, status=status, duration_s=round(duration_s, 6))
        logger.log(logging.WARNING if failed else logging.INFO, message, extra=fields)
