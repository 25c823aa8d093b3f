"""The log lines of a run's failed requests, copied from the lab into the run directory when the run ends
(the lab may be gone, or its logs rotated, by the time the report renders): for a bounded sample of the failed
rows of requests.jsonl, every line of the wrapper's and the model server's logs that carries its X-Request-ID.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from labkit.lab.contract import ServiceName
from labkit.rundir import RunDirectory, RunFile

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "LOGGED_SERVICES",
    "MAX_FAILED_REQUESTS",
    "MAX_LINES_PER_REQUEST",
    "failed_request_ids",
    "read_request_logs",
    "save_request_logs",
]

logger = logging.getLogger(__name__)

# At most this many failed requests have their lines copied (and shown): a storm of a thousand failures
# says no more than its first few of each kind, and the run directory stays small.
MAX_FAILED_REQUESTS = 20
# A request's lines in one service's log (its request line, a warning or two); more are not kept.
MAX_LINES_PER_REQUEST = 10
# The services whose logs carry the load generator's request ids (the wrapper's upstream gets it passed on).
LOGGED_SERVICES: tuple[ServiceName, ...] = ("wrapper", "model")
# Only a line that names a request id is parsed: a 30 MiB log is read in about a second.
_REQUEST_ID = re.compile(r'"request_id":\s*"([^"\\]+)"')


def failed_request_ids(frame: pd.DataFrame, limit: int = MAX_FAILED_REQUESTS) -> list[str]:
    """The X-Request-IDs of up to `limit` failed rows, in request order, taken in turn from each error kind
    (so a rare kind is shown beside a storm of another); [] for rows without ids (runs before labkit 0.2)."""
    if frame.empty or "x_request_id" not in frame.columns:
        return []
    failed = frame[~frame["ok"].astype(bool) & frame["x_request_id"].notna()].sort_values("request_id")
    queues = [
        list(group["x_request_id"]) for _, group in failed.groupby("error_kind", dropna=False, sort=False)
    ]
    chosen: list[str] = []
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(str(queue.pop(0)))
    order = {rid: n for n, rid in enumerate(failed["x_request_id"])}
    return sorted(chosen, key=order.__getitem__)


def save_request_logs(
    run_dir: RunDirectory, frame: pd.DataFrame, log_lines: Callable[[ServiceName], Iterable[str]]
) -> int:
    """Copy the lines of the run's failed requests (`failed_request_ids`) from each of `LOGGED_SERVICES`'
    logs (`log_lines(service)`, a backend's `log_lines`) into RunFile.REQUEST_LOGS, each line as the service
    wrote it plus `log` (whose log it came from). Returns the lines written; none when no request failed."""
    wanted = set(failed_request_ids(frame))
    if not wanted:
        return 0
    kept: list[dict[str, Any]] = []
    for service in LOGGED_SERVICES:
        counts: dict[str, int] = {}
        for text in log_lines(service):
            found = _REQUEST_ID.search(text)
            if found is None or found.group(1) not in wanted:
                continue
            try:
                line = json.loads(text)
            except ValueError:
                continue
            request_id = line.get("request_id") if isinstance(line, dict) else None
            if request_id not in wanted or counts.get(request_id, 0) >= MAX_LINES_PER_REQUEST:
                continue
            counts[request_id] = counts.get(request_id, 0) + 1
            kept.append({"log": service, **line})
    path = run_dir.file(RunFile.REQUEST_LOGS)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_dir.write_text(
        RunFile.REQUEST_LOGS, "".join(json.dumps(line, sort_keys=True, default=str) + "\n" for line in kept)
    )
    logger.info("kept %d log lines of %d failed requests in %s", len(kept), len(wanted), path)
    return len(kept)


def read_request_logs(run_dir: RunDirectory, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """The lines `save_request_logs` kept ([] when the run has none)."""
    return list(run_dir.read_jsonl(RunFile.REQUEST_LOGS, problems))
