"""Run the wrapper under uvicorn on a socket it binds itself, and stop cleanly on SIGTERM.

Binding first turns "address in use" into one clear PortInUseError instead of a uvicorn log line.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from types import FrameType

import uvicorn

from labkit.services.wrapper._app import create_app
from labkit.services.wrapper._settings import WrapperSettings
from labkit.sockets import listen_tcp

__all__ = ["bind_socket", "serve"]

logger = logging.getLogger(__name__)

# Streams still open at shutdown get this long to finish before uvicorn cancels them.
_GRACEFUL_SHUTDOWN_S = 5


def bind_socket(host: str, port: int) -> socket.socket:
    """The wrapper's listening socket (see `labkit.sockets.listen_tcp`: TCP_NODELAY on accepted sockets)."""
    return listen_tcp(host, port, service="wrapper")


def _note_sigterm(signum: int, frame: FrameType | None) -> None:
    logger.debug("SIGTERM received again after shutdown; exiting normally")


def serve(settings: WrapperSettings) -> None:
    """Serve the wrapper until SIGINT or SIGTERM; both shut it down gracefully, then return."""
    app = create_app(settings)  # before binding: a bad admin token file must not leave a socket open
    sock = bind_socket(settings.host, settings.port)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        # uvicorn's own lines go through the process's logging (JSON); its access log is off: the request
        # lines are RequestLogMiddleware's, with their request ids.
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises a caught SIGTERM after its graceful shutdown so that the previous handler runs;
    # with the default handler that would end the process with -15 instead of returning normally.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _note_sigterm) if in_main else None
    try:
        server.run(sockets=[sock])
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        sock.close()
