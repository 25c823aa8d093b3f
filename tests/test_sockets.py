from __future__ import annotations

import socket
from pathlib import Path

import pytest

from labkit.config import LabConfig
from labkit.errors import ConfigError, PortInUseError
from labkit.services.wrapper._server import bind_socket as wrapper_socket
from labkit.sockets import http_url, is_loopback_address, listen_tcp


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


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("::1", "http://[::1]:8000"),
        ("[::1]", "http://[::1]:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),  # a wildcard bind is reached on loopback
        ("::", "http://[::1]:8000"),
        ("lab.example", "http://lab.example:8000"),
    ],
)
def test_a_service_url_is_made_one_way(host: str, url: str) -> None:
    assert http_url(host, 8000) == url


def test_every_service_url_of_a_lab_comes_from_its_config(tmp_path: Path) -> None:
    config = LabConfig(lab_dir=tmp_path, host="::1", wrapper_port=8001, prometheus_port=9091)
    assert config.wrapper_url == "http://[::1]:8001" == config.service_url("wrapper")
    assert config.prometheus_url == "http://[::1]:9091"
    assert config.model_url == "http://[::1]:11434" and config.exporter_url == "http://[::1]:9188"
    with pytest.raises(ConfigError, match="no service 'db'"):
        config.service_url("db")


def test_a_load_target_is_loopback_only_by_its_address_a_bind_also_by_name() -> None:
    assert is_loopback_address("localhost", resolve=False)
    assert is_loopback_address("127.0.0.9", resolve=False)
    assert not is_loopback_address("0.0.0.0", resolve=False)
    # A name is not resolved for a load target (what it resolves to may change); for a bind it is.
    assert not is_loopback_address(socket.gethostname(), resolve=False)
    assert not is_loopback_address("no-such-host.invalid", resolve=True)
