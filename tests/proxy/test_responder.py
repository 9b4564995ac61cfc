"""devtls's own small HTTP/1 servers share one responder with the TLS port's limits: the demo
app here (the plain-HTTP listeners are tested in test_tls_limits.py)."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from devtls.config import Limits
from devtls.proxy.demo import start_demo_server
from devtls.proxy.responder import ListenerState
from tests.proxy.conftest import LoopThread


@pytest.fixture
def demo(loop_thread: LoopThread) -> Iterator[tuple[int, ListenerState]]:
    state = ListenerState(Limits(head_timeout=0.5, max_connections=3))
    server, port = loop_thread.run(start_demo_server(state))
    yield port, state

    async def close() -> None:
        state.close_all()
        server.close()
        await server.wait_closed()

    loop_thread.run(close())


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_keep_alive_with_bodies_dropped(demo: tuple[int, ListenerState]) -> None:
    port, _ = demo
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /nothing HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
            b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        data = read_all(sock)
    assert data.count(b"HTTP/1.1 ") == 3
    assert data.startswith(b"HTTP/1.1 404 ")
    assert b"HTTP/1.1 200 OK" in data
    assert data.rstrip().endswith(b"Connection: close")  # the HEAD answer has no body


def test_a_slow_head_gets_408_and_an_idle_connection_is_closed(
    demo: tuple[int, ListenerState],
) -> None:
    port, _ = demo
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 408 ")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        assert read_all(sock) == b""
        assert time.monotonic() - started < 4
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # Kept alive after a reply, then idle: closed without a word.
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 200 ")


def test_a_head_too_large_is_431(demo: tuple[int, ListenerState]) -> None:
    port, _ = demo
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: " + b"y" * 40000 + b"\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")


def test_the_connection_limit_holds(demo: tuple[int, ListenerState]) -> None:
    port, state = demo
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        deadline = time.monotonic() + 5
        while len(state.connections) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            assert read_all(extra).startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in held:
            sock.close()


def test_the_websocket_switch_takes_early_bytes(demo: tuple[int, ListenerState]) -> None:
    port, _ = demo
    key = base64.b64encode(os.urandom(16))
    mask = os.urandom(4)
    payload = b"hi"
    frame = struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask
    frame += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n" + frame
        )
        data = b""
        while not data.endswith(b"\x81\x02hi"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 101 ")


def test_a_client_that_reads_no_answers_stops_being_read(
    loop_thread: LoopThread, demo: tuple[int, ListenerState]
) -> None:
    port, state = demo
    request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 10
        # Pipelined requests, never an answer read: the demo stops reading, so sending stalls.
        while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
            try:
                sent += sock.send(request * 256)
            except BlockingIOError:
                break
        assert sent < 64 * 1024 * 1024

        async def buffered() -> int:
            [connection] = state.connections
            assert connection.transport is not None
            return connection.transport.get_write_buffer_size()

        # What waits for the client is bounded (asyncio's default high-water mark is 64 KiB;
        # one batch of answers may land on top of it).
        assert loop_thread.run(buffered()) < 8 * 1024 * 1024
