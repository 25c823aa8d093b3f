"""The alerts.jsonl line format: Alertmanager's webhook payload split into one notification per alert."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from labkit.notifications import WebhookPayload, notifications_from_webhook, parse_alert_time

PAYLOAD = {
    "version": "4",
    "groupKey": '{}:{alertname="SloErrorBudgetBurnPage"}',
    "truncatedAlerts": 0,
    "status": "resolved",
    "receiver": "lab",
    "groupLabels": {"alertname": "SloErrorBudgetBurnPage"},
    "commonLabels": {},
    "commonAnnotations": {},
    "externalURL": "http://127.0.0.1:9093",
    "alerts": [
        {
            "status": "resolved",
            "labels": {"alertname": "SloErrorBudgetBurnPage", "severity": "page", "slo": "availability"},
            "annotations": {"summary": "burning"},
            "startsAt": "2026-12-03T10:00:01.123456789Z",
            "endsAt": "2026-12-03T10:01:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": "abc123",
        },
        {
            "status": "firing",
            "labels": {"alertname": "SloErrorBudgetBurnTicket", "severity": "ticket"},
            "annotations": {},
            "startsAt": "2026-12-03T10:00:30+00:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "def456",
        },
    ],
}


def test_one_line_per_alert_with_the_receive_time() -> None:
    received = datetime(2026, 12, 3, 10, 1, 2, tzinfo=UTC).timestamp()
    lines = notifications_from_webhook(WebhookPayload.model_validate(PAYLOAD), received)
    assert [(n.alertname, n.status) for n in lines] == [
        ("SloErrorBudgetBurnPage", "resolved"),
        ("SloErrorBudgetBurnTicket", "firing"),
    ]
    page, ticket = lines
    assert page.labels["slo"] == "availability" and page.receiver == "lab"
    assert page.received_at == "2026-12-03T10:01:02Z" and page.received_unix == received
    assert page.starts_unix == pytest.approx(datetime(2026, 12, 3, 10, 0, 1, 123456, tzinfo=UTC).timestamp())
    assert page.ends_unix == datetime(2026, 12, 3, 10, 1, tzinfo=UTC).timestamp()
    assert ticket.ends_unix is None  # Alertmanager's zero time: still firing
    # A line survives a JSON round trip unchanged (what alerts.jsonl holds).
    assert type(page).model_validate_json(page.model_dump_json()) == page


def test_a_body_that_is_not_a_webhook_payload_is_refused() -> None:
    with pytest.raises(ValidationError):
        WebhookPayload.model_validate({"status": "firing"})
    with pytest.raises(ValidationError):
        WebhookPayload.model_validate({**PAYLOAD, "status": "pending"})


@pytest.mark.parametrize("text", ["", "0001-01-01T00:00:00Z", "yesterday"])
def test_times_that_are_not_times_read_as_none(text: str) -> None:
    assert parse_alert_time(text) is None
