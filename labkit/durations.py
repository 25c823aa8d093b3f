"""Ollama's keep_alive durations ("5m", "1h30m", "300ms", "0", "-1", or seconds), parsed once, and the
single-unit durations the lab passes to Prometheus' flags ("1d", "30m").

Shared by the lab's configuration (validated before anything starts) and the model server.
"""

from __future__ import annotations

import math
import re

__all__ = ["PROMETHEUS_DURATION_PATTERN", "parse_keep_alive", "prometheus_duration_s"]

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")

# A Prometheus flag's duration as the lab writes it: a positive integer and one unit.
PROMETHEUS_DURATION_PATTERN = r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$"
_PROMETHEUS_UNIT_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
                            "y": 31536000.0}  # fmt: skip


def prometheus_duration_s(text: str) -> float:
    """`1d` -> 86400.0, for a duration matching PROMETHEUS_DURATION_PATTERN (Prometheus' y is 365 days)."""
    match = re.match(PROMETHEUS_DURATION_PATTERN, text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration like 30m, 12h or 1d (an integer and ms, s, m, h, d, w or y)"
        )
    return int(text[: match.start(1)]) * _PROMETHEUS_UNIT_SECONDS[match.group(1)]


def parse_keep_alive(value: str | float | int) -> float | None:
    """Seconds a model stays loaded after a request; None means forever (any negative value).

    Accepts what Ollama accepts: a number of seconds, or a Go duration string ("5m", "1h30m",
    "300ms", "-1s"); a bare numeric string is seconds too. Raises ValueError otherwise.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}: expected a duration like '5m' or seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_go_duration(text, original=value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"invalid keep_alive {value!r}: must be finite")
    return None if seconds < 0 else seconds


def _parse_go_duration(text: str, *, original: str) -> float:
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if not body:
        raise ValueError(
            f"invalid keep_alive {original!r}: expected a duration like '5m', '30s', '0' or '-1'"
        )
    position, total = 0, 0.0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            raise ValueError(
                f"invalid keep_alive {original!r}: expected a duration like '5m', '30s', '0' or '-1'"
            )
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return sign * total
