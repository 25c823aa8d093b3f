"""What the lab keeps of an Alertmanager notification: one line of `alerts.jsonl` per alert per notification.

Alertmanager's webhook receiver posts a group of alerts (its payload version 4: `receiver`, `status`,
`groupKey`, `alerts[]` with `status`, `labels`, `annotations`, `startsAt`, `endsAt`, `fingerprint`); the
lab's receiver (the manager's control server) splits it into one `AlertNotification` per alert with the time
it arrived, appends each to the lab directory's `alerts.jsonl`, and runs copy those received while they run
into their own `alerts.jsonl` (RunFile.ALERTS). Declared here, in the foundation, because the manager writes
these lines and measurement, chaos (remediation on alerts) and the report read them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AlertNotification",
    "AlertStatus",
    "WebhookAlert",
    "WebhookPayload",
    "notifications_from_webhook",
    "parse_alert_time",
]

AlertStatus = Literal["firing", "resolved"]


class WebhookAlert(BaseModel):
    """One alert of Alertmanager's webhook payload."""

    model_config = ConfigDict(extra="ignore")

    status: AlertStatus
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str  # Alertmanager's field names, kept as they are on the wire
    endsAt: str = ""
    fingerprint: str = ""
    generatorURL: str = ""


class WebhookPayload(BaseModel):
    """Alertmanager's webhook body (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""

    model_config = ConfigDict(extra="ignore")

    version: str = "4"
    groupKey: str = ""
    truncatedAlerts: int = 0
    status: AlertStatus
    receiver: str = ""
    alerts: list[WebhookAlert]


class AlertNotification(BaseModel):
    """One line of `alerts.jsonl`: one alert as one notification carried it, and when the lab received it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    alertname: str
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str  # RFC 3339, as Alertmanager sent it
    endsAt: str = ""  # Alertmanager's zero time (0001-01-01T00:00:00Z) while firing
    fingerprint: str = ""
    receiver: str = ""
    group_key: str = ""
    received_at: str  # RFC 3339 UTC, when the lab's receiver got the notification
    received_unix: float  # the same, unix seconds (the clock every run file uses)

    @property
    def starts_unix(self) -> float | None:
        return parse_alert_time(self.startsAt)

    @property
    def ends_unix(self) -> float | None:
        return parse_alert_time(self.endsAt)


def parse_alert_time(text: str) -> float | None:
    """Unix seconds of an RFC 3339 time as Alertmanager writes it; None for its zero time or nothing."""
    if not text or text.startswith("0001-01-01"):
        return None
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    # Go writes up to nine fractional digits; Python's parser takes six.
    head, dot, rest = value.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        value = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def notifications_from_webhook(payload: WebhookPayload, received_unix: float) -> list[AlertNotification]:
    """The lines one webhook call becomes: one per alert, each with the payload's receiver and group."""
    received_at = datetime.fromtimestamp(received_unix, UTC).isoformat().replace("+00:00", "Z")
    lines: list[AlertNotification] = []
    for alert in payload.alerts:
        fields: dict[str, Any] = {
            "alertname": alert.labels.get("alertname", ""),
            "status": alert.status,
            "labels": alert.labels,
            "annotations": alert.annotations,
            "startsAt": alert.startsAt,
            "endsAt": alert.endsAt,
            "fingerprint": alert.fingerprint,
            "receiver": payload.receiver,
            "group_key": payload.groupKey,
            "received_at": received_at,
            "received_unix": received_unix,
        }
        lines.append(AlertNotification(**fields))
    return lines
