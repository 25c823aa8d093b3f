"""The local lab's log files, each rotated with a bound (`LabConfig.log_max_bytes` x `log_files`): what a
child process writes (read from its pipe by the manager, a line at a time) and the manager's own lines.

A pipe, not a file of the child's own: Prometheus, Alertmanager, Ollama and llama-cpp-python's server write
to stderr and rotate nothing, so one reader in the manager bounds every service alike.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from labkit.config import LabConfig
from labkit.service_logs import json_formatter

__all__ = [
    "DEFAULT_LOG_FILES",
    "DEFAULT_LOG_MAX_BYTES",
    "ManagerLogHandler",
    "RotatingLog",
    "copy_lines",
]

logger = logging.getLogger(__name__)

DEFAULT_LOG_MAX_BYTES: int = LabConfig.model_fields["log_max_bytes"].default
DEFAULT_LOG_FILES: int = LabConfig.model_fields["log_files"].default
_READ_BYTES = 64 * 1024
# A "line" longer than this (a child writing without newlines) is written in pieces of this size.
_MAX_LINE_BYTES = 256 * 1024


class RotatingLog:
    """One service's log file: each line appended whole, the file rotated when it would pass `max_bytes`
    (`name.log` -> `name.log.1` -> ... -> `name.log.<files - 1>`, the oldest dropped): at most `max_bytes`
    x `files` on disk. The manager's own notes in it (a start) are JSON lines like the services'."""

    def __init__(self, path: Path, *, max_bytes: int, files: int, service: str = "supervisor") -> None:
        # The stdlib's rotation: maxBytes and a backup count; it never rotates when the count is 0.
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=max(1, files - 1), encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._notes = json_formatter(service)
        self._tasks: set[asyncio.Task[None]] = set()
        self.path = path

    def write_line(self, line: str) -> None:
        """Append one line (without its newline), rotating first when it would not fit."""
        self._handler.handle(logging.makeLogRecord({"msg": line}))

    def note(self, message: str) -> None:
        """A line of the manager's own in this log, as JSON (`logger`: this module)."""
        record = logging.makeLogRecord({"msg": message, "name": __name__, "levelname": "INFO", "levelno": 20})
        self.write_line(self._notes.format(record))

    def follow(self, stream: asyncio.StreamReader | None) -> None:
        """Copy `stream` (a child's stdout and stderr) into this log until it ends, in the background."""
        if stream is None:
            return
        task = asyncio.get_running_loop().create_task(copy_lines(stream, self))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        self._handler.close()


async def copy_lines(stream: asyncio.StreamReader, log: RotatingLog) -> None:
    """Every line of `stream` into `log` until its end; a last line without a newline too."""
    pending = b""
    while chunk := await stream.read(_READ_BYTES):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            log.write_line(line.decode("utf-8", errors="replace"))
        while len(pending) > _MAX_LINE_BYTES:
            log.write_line(pending[:_MAX_LINE_BYTES].decode("utf-8", errors="replace"))
            pending = pending[_MAX_LINE_BYTES:]
    if pending:
        log.write_line(pending.decode("utf-8", errors="replace"))


class ManagerLogHandler(logging.handlers.RotatingFileHandler):
    """The manager's own log file, rotated like the services'. The process's stdout and stderr (`labkit up`
    opened them on the same file, for what is written before logging starts) follow each rotation, so a
    crash's traceback lands in the current file, not in a rotated one that keeps growing."""

    def __init__(self, path: Path, *, max_bytes: int, files: int, own_std_streams: bool = True) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=max(1, files - 1), encoding="utf-8")
        self._own_std_streams = own_std_streams
        self._point_std_streams()

    def doRollover(self) -> None:
        super().doRollover()
        self._point_std_streams()

    def _point_std_streams(self) -> None:
        if not self._own_std_streams or self.stream is None:
            return
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        target = self.stream.fileno()
        os.dup2(target, 1)
        os.dup2(target, 2)
