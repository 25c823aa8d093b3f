"""Renders the lab's Alertmanager configuration from the `stack/alertmanager` template: one route that
makes every alert its own group, one webhook receiver (`lab`) posting to the lab manager's receiver.

The routing delays are declared here once: the alert measures add them to the expected time to page.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from labkit.config import stack_dir

__all__ = [
    "ALERTMANAGER_GROUP_INTERVAL_S",
    "ALERTMANAGER_GROUP_WAIT_S",
    "ALERTMANAGER_RECEIVER",
    "ALERTMANAGER_REPEAT_INTERVAL",
    "render_alertmanager_config",
]

# How long Alertmanager holds a new group's first notification (group_wait), and the least time between two
# notifications of one group (group_interval: a resolved alert is sent at the group's next tick after it).
ALERTMANAGER_GROUP_WAIT_S = 1.0
ALERTMANAGER_GROUP_INTERVAL_S = 5.0
# A firing alert is notified again this long after its last notification; longer than any lab run, so each
# alert's notifications are its firing and its resolved.
ALERTMANAGER_REPEAT_INTERVAL = "4h"
ALERTMANAGER_RECEIVER = "lab"


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def render_alertmanager_config(*, webhook_url: str, token_file: Path | str) -> str:
    """`alertmanager.yml` for a lab whose receiver is at `webhook_url` (the manager's ALERTS_WEBHOOK_ROUTE)
    and whose token Alertmanager reads from `token_file` (the path as Alertmanager sees it)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(stack_dir() / "alertmanager"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template("alertmanager.yml.j2").render(
        receiver=ALERTMANAGER_RECEIVER,
        group_wait=_duration(ALERTMANAGER_GROUP_WAIT_S),
        group_interval=_duration(ALERTMANAGER_GROUP_INTERVAL_S),
        repeat_interval=ALERTMANAGER_REPEAT_INTERVAL,
        webhook_url=webhook_url,
        token_file=str(token_file),
    )
