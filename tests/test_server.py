"""The dashboard's server: it answers only requests that name this machine (DNS rebinding)."""
import socket
from urllib.parse import urlparse

import pytest

from tests.browser_support import streamlit_server


def handshake(url: str, host: str) -> str:
    """The status line the server answers to a WebSocket upgrade of the app's stream, sent with `host`."""
    port = urlparse(url).port
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               f"Origin: http://{host}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request.encode())
        return connection.recv(4096).decode("latin-1").split("\r\n")[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with streamlit_server(tmp_path_factory.mktemp("runs")) as url:
        yield url


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_the_app_connects_when_the_host_names_this_machine(server, host):
    port = urlparse(server).port
    assert " 101 " in handshake(server, f"{host}:{port}")


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:80", "localhost.attacker.example",
                                  "127.0.0.1.nip.io"])
def test_a_page_on_another_site_cannot_reach_the_app_by_dns_rebinding(server, host):
    status = handshake(server, host)
    assert " 101 " not in status and status.startswith("HTTP/1.1 4"), status
