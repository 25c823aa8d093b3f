"""The lab's Alertmanager receiver, served by the manager's control server (local supervisor and Docker
agent alike): POST ALERTS_WEBHOOK_ROUTE takes Alertmanager's webhook payload and journals one
`AlertNotification` per alert in the lab directory's alerts.jsonl; GET ALERTS_ROUTE?since=N reads them back.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from labkit.lab.contract import ALERTS_ROUTE, ALERTS_WEBHOOK_ROUTE
from labkit.lab.labdir import LabDir
from labkit.notifications import AlertNotification, WebhookPayload, notifications_from_webhook
from labkit.validation import describe_validation_error

__all__ = ["AlertJournal", "alert_routes"]

logger = logging.getLogger(__name__)

# Alertmanager's webhook bodies are a few kB per alert; a body this large is not one.
MAX_WEBHOOK_BYTES = 4 * 1024 * 1024
_USE_THE_HEADER = "send it as the header Authorization: Bearer <token> (the lab directory's token file)"


class AlertJournal:
    """The lab's notifications: in memory and in alerts.jsonl, one JSON line each, appended in one write
    and flushed, so a manager that restarts (or a reader) finds every line it had received."""

    def __init__(self, lab: LabDir) -> None:
        self.path = lab.alerts_file
        self.notifications: list[AlertNotification] = read_journal(self.path)

    def append(self, notifications: list[AlertNotification]) -> None:
        if not notifications:
            return
        text = "".join(n.model_dump_json() + "\n" for n in notifications).encode()
        # O_APPEND and one write: lines of two webhook calls never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)
        self.notifications.extend(notifications)

    def since(self, index: int) -> tuple[list[AlertNotification], int]:
        return self.notifications[index:], len(self.notifications)


def read_journal(path: os.PathLike[str] | str) -> list[AlertNotification]:
    """Every complete line of an alerts.jsonl (none when there is no file); a torn last line is left out."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    out: list[AlertNotification] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(AlertNotification(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            logger.warning("%s:%d is not a notification, skipped (%s)", path, number, exc)
    return out


def alert_routes(journal: AlertJournal, authorized: Callable[[Request], bool]) -> list[Route]:
    """The receiver's two routes, behind the lab's token (`authorized`)."""

    async def webhook(request: Request) -> Response:
        if request.url.query:
            return _error(400, "the webhook takes no query parameters")
        if not authorized(request):
            return _error(401, f"missing or wrong bearer token; {_USE_THE_HEADER}")
        body = await request.body()
        if len(body) > MAX_WEBHOOK_BYTES:
            return _error(413, f"the body is over {MAX_WEBHOOK_BYTES} bytes; not an Alertmanager webhook")
        try:
            payload = WebhookPayload.model_validate_json(body)
        except ValidationError as exc:
            return _error(
                400,
                "the body is not Alertmanager's webhook payload (version 4: status, alerts[] with status, "
                f"labels, startsAt): {describe_validation_error(exc)}",
            )
        lines = notifications_from_webhook(payload, time.time())
        journal.append(lines)
        logger.info(
            "alerts: %s",
            ", ".join(f"{n.alertname or '?'} {n.status}" for n in lines) or "an empty notification",
        )
        return JSONResponse({"received": len(lines), "next": len(journal.notifications)})

    async def notifications(request: Request) -> Response:
        extra = sorted(set(request.query_params) - {"since"})
        if extra:
            return _error(400, f"the only query parameter is since=N, not {', '.join(extra)}")
        if not authorized(request):
            return _error(401, f"missing or wrong bearer token; {_USE_THE_HEADER}")
        raw = request.query_params.get("since", "0")
        if not raw.isdigit():
            return _error(400, f"since must be a whole number of notifications, 0 or more, not {raw!r}")
        found, next_index = journal.since(int(raw))
        return JSONResponse({"notifications": [n.model_dump() for n in found], "next": next_index})

    return [
        Route(ALERTS_WEBHOOK_ROUTE, webhook, methods=["POST"]),
        Route(ALERTS_ROUTE, notifications, methods=["GET"]),
    ]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
