from __future__ import annotations

import socket

import pytest

from labkit.errors import ConfigError, PortInUseError
from labkit.services.wrapper._server import bind_socket as wrapper_socket
from labkit.sockets import listen_tcp


def test_listening_socket_says_tcp_so_that_asyncio_disables_nagle() -> None:
    # asyncio sets TCP_NODELAY on accepted sockets only when the listening socket's proto is TCP;
    # without it the wrapper added ~40 ms (a delayed ACK) to every response of more than one write.
    for sock in (listen_tcp("127.0.0.1", 0, service="model"), wrapper_socket("127.0.0.1", 0)):
        with sock:
            assert sock.proto == socket.IPPROTO_TCP


def test_a_taken_port_names_the_service_and_the_flag() -> None:
    with listen_tcp("127.0.0.1", 0, service="wrapper") as first:
        port = first.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"port {port} \(for the wrapper service\).*--port"):
            listen_tcp("127.0.0.1", port, service="wrapper")


def test_an_address_of_another_machine_is_refused_clearly() -> None:
    with pytest.raises(ConfigError, match=r"cannot listen on 192\.0\.2\.1"):
        listen_tcp("192.0.2.1", 0, service="wrapper")  # TEST-NET-1: never an address of this host
