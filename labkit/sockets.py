"""Listening sockets for the lab's HTTP services (model server, wrapper), made one way.

Made with proto IPPROTO_TCP, as asyncio makes its own: asyncio only disables Nagle's algorithm on
accepted sockets whose proto says TCP, and with Nagle every small write after the first (an NDJSON
token line, a response body after its headers) waits ~40 ms for a delayed ACK.
"""

from __future__ import annotations

import errno
import socket

from labkit.errors import ConfigError, PortInUseError

__all__ = ["listen_tcp"]


def listen_tcp(host: str, port: int, *, service: str, port_flag: str = "--port") -> socket.socket:
    """A listening TCP socket on host:port (0: any free port), inheritable for uvicorn.

    PortInUseError when the port is taken, ConfigError when the address cannot be used."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(
            f"cannot resolve --host {host!r}: {exc.strerror}; pass an address like 127.0.0.1"
        ) from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(service, port, port_flag) from exc
        raise ConfigError(
            f"the {service} cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "pass another --host or --port"
        ) from exc
    sock.set_inheritable(True)
    return sock
