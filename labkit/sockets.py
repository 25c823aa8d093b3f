"""Addresses and listening sockets of the lab's HTTP services, each made one way: the URL a client uses for a
host and port (`http_url`), whether an address is loopback, whether a port is free, and the listening socket.

Sockets are made with proto IPPROTO_TCP, as asyncio makes its own: asyncio only disables Nagle's algorithm on
accepted sockets whose proto says TCP, and with Nagle every small write after the first (an NDJSON
token line, a response body after its headers) waits ~40 ms for a delayed ACK.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from labkit.errors import ConfigError, PortInUseError

__all__ = ["client_host", "http_url", "is_loopback_address", "listen_tcp", "port_is_free"]

# A service bound to a wildcard address is reached on the loopback address of the same family.
_WILDCARD_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def client_host(host: str) -> str:
    """The host a client on this machine connects to for a service bound to `host` (a wildcard bind is
    reached on loopback); IPv6 literals in brackets, as a URL needs them."""
    host = _WILDCARD_TO_LOOPBACK.get(host.strip("[]"), host.strip("[]"))
    return f"[{host}]" if ":" in host else host


def http_url(host: str, port: int) -> str:
    """`http://host:port` of a service bound to `host`, for a client on this machine."""
    return f"http://{client_host(host)}:{port}"


def is_loopback_address(host: str, *, resolve: bool) -> bool:
    """True when `host` is a loopback address (127.0.0.0/8, ::1): nothing there is reachable from another
    machine. The wildcards 0.0.0.0 and :: are not loopback: they are every address.

    `resolve=False` (a target to send load to): only `localhost` and literal addresses count, since a name
    that resolves to loopback today may not tomorrow. `resolve=True` (an address the lab binds, to warn
    about exposure): a name counts when every address it resolves to is loopback."""
    literal = host.strip("[]").lower()
    if literal in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(literal).is_loopback
    except ValueError:
        if not resolve:
            return False
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False  # not resolvable: `up` refuses it anyway, and a warning too many is harmless
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def port_is_free(host: str, port: int) -> bool:
    """True when `host:port` can be bound now (with SO_REUSEADDR, as the services bind it).

    Raises ConfigError when `host` cannot be bound at all (not an address of this machine)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"host {host!r} is not a valid address ({exc}); pass --host 127.0.0.1") from exc
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pass --host with an address of this "
                "machine, e.g. 127.0.0.1"
            ) from exc
    return True


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
