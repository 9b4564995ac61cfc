"""Hostile input over the wire: every bad request gets its 4xx, and the server stays up."""

from __future__ import annotations

import json
import socket
import ssl
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.acmeserver.conftest import AcmeServerProcess


def exchange(server: AcmeServerProcess, data: bytes, *, tls: bool = True) -> bytes:
    """Send ``data`` on one connection and read the answer until the server closes it."""
    parts = urlsplit(server.directory)
    assert parts.port is not None
    raw = socket.create_connection(("127.0.0.1", parts.port), timeout=15)
    context = ssl.create_default_context(cafile=str(server.root))
    sock: socket.socket = context.wrap_socket(raw, server_hostname="localhost") if tls else raw
    with sock:
        sock.sendall(data)
        answer = b""
        while len(answer) < 1_000_000:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            answer += chunk
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def post(path: str, body: bytes, *, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/jose+json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n%s\r\n" % (path.encode(), len(body), extra)
    ) + body


def still_serves(server: AcmeServerProcess) -> None:
    assert server.process.poll() is None
    context = ssl.create_default_context(cafile=str(server.root))
    with urllib.request.urlopen(server.directory, context=context, timeout=15) as answer:
        assert "newNonce" in json.loads(answer.read())


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # A declared body over the 64 KiB limit is refused before it is read.
        (b"POST /acme/new-order HTTP/1.1\r\nHost: 127.0.0.1\r\n"
         b"Content-Type: application/jose+json\r\nContent-Length: 100000000\r\n\r\n", 413),
        # A chunked body that grows past the limit.
        (b"POST /acme/new-order HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
         b"Content-Type: application/jose+json\r\n\r\n" + b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
         + b"10000\r\n" + b"a" * 0x10000 + b"\r\n", 413),
        (post("/acme/new-order", b"{not json"), 400),
        (post("/acme/new-order", b'{"protected": "eyJhbGciOiJub25lIn0", "payload": "", "signature": ""}'), 400),
        (post("/acme/new-account", b"\xff\xfe\x00garbage"), 400),
        (post("/acme/new-order", b'{"protected": ' + b"[" * 5000 + b"]" * 5000 + b"}"), 400),
        (post("/acme/new-order", b"{}", extra=b"X-Big: " + b"a" * 40000 + b"\r\n"), 431),
        (b"GET /directory HTTP/1.1\r\nHost: bad host!\r\n\r\n", 400),
        (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414),
        (b"\x00\x01\x02 garbage that is not HTTP\r\n\r\n", 400),
    ],
)  # fmt: skip
def test_hostile_requests_get_their_status(
    acme_server: AcmeServerProcess, request_bytes: bytes, status: int
) -> None:
    answer = exchange(acme_server, request_bytes)
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    assert status_of(answer) == status, answer[:300]
    assert b"Replay-Nonce: " in answer
    still_serves(acme_server)


def test_plain_http_and_garbage_on_the_tls_port(acme_server: AcmeServerProcess) -> None:
    answer = exchange(acme_server, b"GET /directory HTTP/1.1\r\nHost: x\r\n\r\n", tls=False)
    assert status_of(answer) == 400
    assert exchange(acme_server, b"\x16\x03\x01\x00\x05hello" + b"\x00" * 100, tls=False) != (
        b"HTTP"
    )
    still_serves(acme_server)
