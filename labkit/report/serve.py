"""`labkit serve`: the reports folder over HTTP on 127.0.0.1, the index as its front page, for a headless box
reached through an SSH tunnel (`ssh -L 8080:127.0.0.1:8080 host`). Python's own http.server: the folder is
static files, so nothing more is needed (docs/decisions.md)."""

from __future__ import annotations

import functools
import logging
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from labkit.errors import ConfigError
from labkit.report.index import write_index
from labkit.sockets import http_url

__all__ = ["ReportServer", "serve_reports"]

logger = logging.getLogger(__name__)


class _Handler(SimpleHTTPRequestHandler):
    """Static files, and listings of folders (a report links its run's prometheus/ folder)."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


class ReportServer(ThreadingHTTPServer):
    daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return http_url(str(host), int(port)) + "/"

    def start(self) -> threading.Thread:
        """Serve from a background thread (tests, notebooks); `shutdown()` stops it."""
        thread = threading.Thread(target=self.serve_forever, name="labkit-serve", daemon=True)
        thread.start()
        return thread


def serve_reports(reports_dir: Path | str, *, port: int = 8080, host: str = "127.0.0.1") -> ReportServer:
    """A server for `reports_dir` bound to `host:port` (port 0: any free one), its index written first so
    that / always answers. Loopback only: a report can hold prompts and hostnames."""
    directory = Path(reports_dir)
    if not directory.is_dir():
        raise ConfigError(f"no reports folder at {directory}; run a scenario first (`labkit run baseline`)")
    if host not in ("127.0.0.1", "localhost"):
        raise ConfigError(f"labkit serve binds loopback only, not {host}; publish the folder itself instead")
    write_index(directory)
    handler = functools.partial(_Handler, directory=str(directory))
    try:
        return ReportServer((host, port), handler)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve on {host}:{port} ({exc.strerror}); pass --port with a free port"
        ) from exc
