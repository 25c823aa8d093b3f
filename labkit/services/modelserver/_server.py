"""Runs the model server with uvicorn: in the foreground (`serve`, used by the CLI) or on a
background thread (`BackgroundModelServer`, for tests and notebooks).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from types import FrameType, TracebackType

import uvicorn

from labkit.services.modelserver._app import create_app
from labkit.services.modelserver._engine import Engine
from labkit.services.modelserver._settings import ModelServerSettings
from labkit.sockets import http_url, listen_tcp

__all__ = ["GRACEFUL_SHUTDOWN_S", "BackgroundModelServer", "bind_socket", "serve"]

logger = logging.getLogger(__name__)

# How long a SIGTERM waits for running streams before they are cut.
GRACEFUL_SHUTDOWN_S = 5


class _Server(uvicorn.Server):
    """uvicorn, except that a handled SIGTERM/SIGINT ends the process with status 0.

    uvicorn re-raises the signal after its graceful shutdown, which makes the exit status
    "killed by SIGTERM"; a supervisor should see a clean exit after a clean shutdown.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def bind_socket(host: str, port: int) -> socket.socket:
    """The model server's listening socket (see `labkit.sockets.listen_tcp`)."""
    return listen_tcp(host, port, service="model")


def _config(settings: ModelServerSettings, engine: Engine | None) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings, engine=engine),
        log_level="warning",
        # uvicorn's own lines go through the process's logging (JSON); its access log is off: the request
        # lines are RequestLogMiddleware's, with their request ids.
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


def serve(settings: ModelServerSettings, *, engine: Engine | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully and return.

    Raises ModelNotFoundError (llama engine, model file missing) and PortInUseError before serving.
    """
    config = _config(settings, engine)
    sock = bind_socket(settings.host, settings.port)
    logger.info("model server (%s engine) listening on %s:%d", settings.engine, settings.host, settings.port)
    _Server(config).run(sockets=[sock])


class BackgroundModelServer:
    """The model server on a daemon thread, bound before `start()` returns.

    Use as a context manager: `with BackgroundModelServer(settings) as server: server.url`.
    Port 0 in the settings picks a free port.
    """

    def __init__(self, settings: ModelServerSettings, *, engine: Engine | None = None) -> None:
        self._server = _Server(_config(settings, engine))
        self._socket = bind_socket(settings.host, settings.port)
        host, port = self._socket.getsockname()[:2]
        self.host: str = host
        self.port: int = port
        self._thread = threading.Thread(target=self._run, name="labkit-modelserver", daemon=True)
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    def start(self, timeout_s: float = 10.0) -> BackgroundModelServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the model server did not start within {timeout_s} s: {self._failure!r}")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._socket.close()

    def __enter__(self) -> BackgroundModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported by start(); a thread has nobody else to tell
            self._failure = exc
            raise
