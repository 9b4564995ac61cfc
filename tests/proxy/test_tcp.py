"""devtls serve --tcp: upstreams that speak first, ALPN as the user says, PostgreSQL's SSLRequest."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from tests.proxy.conftest import Harness, pattern_bytes

GREETING = b"220 greeter.test ESMTP ready\r\n"


class Greeter(asyncio.Protocol):
    """Speaks first, as SMTP, MySQL, SSH and h2 servers do: the greeting goes out on accept."""

    def __init__(self, *, then_close: bool = False, greeting: bytes = GREETING) -> None:
        self.then_close = then_close
        self.greeting = greeting
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.write(self.greeting)
        if self.then_close:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"250 " + data)


@pytest.fixture
def greeter(harness: Harness) -> Iterator[int]:
    async def start() -> asyncio.Server:
        return await harness.loop.loop.create_server(Greeter, "127.0.0.1", 0)

    server = harness.loop.run(start())
    yield server.sockets[0].getsockname()[1]
    harness.loop.call(server.close)


def client_context(h: Harness) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(h.ca_file))


def read_until_closed(tls: ssl.SSLSocket) -> bytes:
    received = b""
    try:
        while chunk := tls.recv(65536):
            received += chunk
    except (ssl.SSLError, ConnectionError):
        pass
    return received


# -- bug 7: an upstream that speaks first ----------------------------------------------------

CONNECTIONS = 1000


def test_every_connection_gets_the_greeting(harness: Harness, greeter: int) -> None:
    """The greeting arrives before the tunnel is attached; it must never be lost."""
    proxy = harness.start_proxy(str(greeter), tcp=True, quiet=True)
    context = client_context(harness)
    deadline = time.monotonic() + 120
    got = 0
    for _ in range(CONNECTIONS):
        assert time.monotonic() < deadline, f"only {got} connections in 120 s"
        with (
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            received = b""
            while len(received) < len(GREETING):
                chunk = tls.recv(65536)  # a lost greeting ends in socket.timeout, not a hang
                if not chunk:
                    break
                received += chunk
            assert received == GREETING, f"connection {got + 1} got {received!r}"
            got += 1
    assert got == CONNECTIONS


def test_a_greeting_then_close_reaches_the_client_and_ends_it(harness: Harness) -> None:
    """An upstream that greets and hangs up at once (MySQL's 'too many connections')."""

    async def start() -> asyncio.Server:
        return await harness.loop.loop.create_server(
            lambda: Greeter(then_close=True), "127.0.0.1", 0
        )

    server = harness.loop.run(start())
    try:
        port = server.sockets[0].getsockname()[1]
        proxy = harness.start_proxy(str(port), tcp=True, quiet=True)
        context = client_context(harness)
        for _ in range(50):
            with (
                socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                assert read_until_closed(tls) == GREETING
    finally:
        harness.loop.call(server.close)


def test_a_greeting_larger_than_the_early_buffer_arrives_whole(harness: Harness) -> None:
    """Past MAX_TUNNEL_EARLY the upstream is not read until the client side is there."""
    big = pattern_bytes(1024 * 1024)

    async def start() -> asyncio.Server:
        return await harness.loop.loop.create_server(
            lambda: Greeter(then_close=True, greeting=big), "127.0.0.1", 0
        )

    server = harness.loop.run(start())
    try:
        port = server.sockets[0].getsockname()[1]
        proxy = harness.start_proxy(str(port), tcp=True, quiet=True)
        for _ in range(5):
            with (
                socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw,
                client_context(harness).wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                assert read_until_closed(tls) == big
    finally:
        harness.loop.call(server.close)


def test_an_upstream_that_is_down_closes_the_client(harness: Harness) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    proxy = harness.start_proxy(str(port), tcp=True, quiet=True)
    started = time.monotonic()
    with (
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw,
        client_context(harness).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert read_until_closed(tls) == b""
    assert time.monotonic() - started < 5
