"""A run directory (`reports/runs/<run_id>/`): parameters, per-request samples, the event journal,
Prometheus series and SLO results, written incrementally so that a crash leaves a readable partial run.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labkit.backends.labdir import write_atomically
from labkit.errors import LabkitError

__all__ = ["RunDirectory", "new_run_id"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_run_id(scenario: str) -> str:
    """`<UTC timestamp>-<scenario>`: sorts by time, names what ran."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")[:-4] + "Z"
    return f"{stamp}-{re.sub(r'[^A-Za-z0-9._-]+', '-', scenario).strip('-') or 'run'}"


@dataclass(frozen=True)
class RunDirectory:
    """Files of one run. JSON Lines files are appended one complete line at a time and flushed."""

    path: Path

    PARAMS = "params.json"
    REQUESTS = "requests.jsonl"
    EVENTS = "events.jsonl"
    SLO = "slo.json"
    PROMETHEUS = "prometheus"

    @classmethod
    def create(cls, parent: Path, scenario: str, run_id: str | None = None) -> RunDirectory:
        run_id = run_id or new_run_id(scenario)
        if not _RUN_ID.match(run_id):
            raise LabkitError(f"run id {run_id!r} must be 1-128 letters, digits, '.', '_' or '-'")
        path = parent / run_id
        path.mkdir(parents=True, exist_ok=False)
        return cls(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, data: Any) -> None:
        write_atomically(self.path / name, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def append_jsonl(self, name: str, record: Mapping[str, Any]) -> None:
        """One line, written and flushed in one call: a reader sees whole lines only."""
        with self.jsonl_writer(name) as write:
            write(record)

    @contextmanager
    def jsonl_writer(self, name: str) -> Iterator[Callable[[Mapping[str, Any]], None]]:
        """Keeps `name` open for many appends (the load generator's hot path); each line is flushed,
        so a killed process leaves every line it wrote (the OS keeps them; no fsync per line)."""
        with open(self.path / name, "a", encoding="utf-8") as fh:

            def write(record: Mapping[str, Any]) -> None:
                fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
                fh.flush()

            yield write

    def read_jsonl(self, name: str) -> Iterator[dict[str, Any]]:
        """Every complete line; a torn last line (a crash mid-write) is skipped, not an error."""
        try:
            with open(self.path / name, encoding="utf-8") as fh:
                for line in fh:
                    if not line.endswith("\n"):
                        break
                    yield json.loads(line)
        except FileNotFoundError:
            return

    def journal(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append an event to `events.jsonl` with wall-clock and monotonic times, as it happens."""
        event = {"kind": kind, "wall_time": time.time(), "monotonic": time.monotonic(), **fields}
        self.append_jsonl(self.EVENTS, event)
        return event
