"""A bounded soak: 1,000 keep-alive clients and 200 websockets at once, with resets injected.

Afterwards every response that was read whole is right, the forwarder's file descriptors are
back where they started, and its peak memory stayed under a stated bound. Loopback only;
every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time

import websockets

from tests.proxy.conftest import Harness
from tests.proxy.test_memory import rss_kib, start_devtls, stop

KEEP_ALIVE_CLIENTS = 1000
WEBSOCKETS = 200
RESETTING_CLIENTS = 100
REQUESTS_PER_CLIENT = 5
WS_MESSAGES = 5
SOAK_SECONDS = 60  # a hard stop; the run normally ends well before
# The README's figure per busy connection ("Memory per connection"), for the 1,100 client
# connections of this forwarder (the websockets have their own): measured 62 KiB here.
PEAK_KIB_PER_CONNECTION = 128


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fds_after_settling(pid: int, baseline: int) -> int:
    """Open files once idle upstream connections have been closed (a few seconds; bounded)."""
    deadline = time.monotonic() + 20
    while fd_count(pid) > baseline and time.monotonic() < deadline:
        time.sleep(0.2)
    return fd_count(pid)


async def keep_alive_client(port: int, context: ssl.SSLContext, index: int, stats: dict) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        for i in range(REQUESTS_PER_CLIENT):
            path = f"/headers/{index}/{i}"
            writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            body = json.loads(await reader.readexactly(length))
            if head.startswith(b"HTTP/1.1 200 ") and body["path"] == path:
                stats["ok"] += 1
            else:
                stats["wrong"] += 1
    finally:
        writer.close()
        await _closed(writer)


async def resetting_client(port: int, context: ssl.SSLContext, index: int, stats: dict) -> None:
    """Half a request, or a response cut off by the client: transport.abort() sends a reset."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    if index % 2:
        writer.write(
            b"POST /sha256 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\nabc"
        )
        await writer.drain()
    else:
        writer.write(b"GET /bytes/5000000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await reader.readexactly(1000)
    writer.transport.abort()
    stats["reset"] += 1


async def websocket_client(port: int, context: ssl.SSLContext, index: int, stats: dict) -> None:
    # The whole soak is bounded (SOAK_SECONDS); 1,300 handshakes at once on a loaded machine can
    # take longer than websockets' 10 s default to open one, which is no fault of the proxy.
    async with websockets.connect(
        f"wss://localhost:{port}/", ssl=context, open_timeout=SOAK_SECONDS
    ) as ws:
        for i in range(WS_MESSAGES):
            message = f"ws {index} {i}"
            await ws.send(message)
            if await ws.recv() == message:
                stats["ws_ok"] += 1
            else:
                stats["wrong"] += 1
            await asyncio.sleep(0.05)


async def _closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ssl.SSLError, ConnectionError):
        await writer.wait_closed()


async def soak(http_port: int, ws_port: int, context: ssl.SSLContext) -> dict:
    stats = {"ok": 0, "ws_ok": 0, "reset": 0, "wrong": 0, "errors": 0}

    async def guarded(coro_fn, *args) -> None:
        try:
            await coro_fn(*args)
        except (OSError, asyncio.IncompleteReadError, websockets.WebSocketException) as exc:
            stats["errors"] += 1
            stats.setdefault("first_error", repr(exc))

    tasks = [
        guarded(keep_alive_client, http_port, context, i, stats) for i in range(KEEP_ALIVE_CLIENTS)
    ]
    tasks += [
        guarded(resetting_client, http_port, context, i, stats) for i in range(RESETTING_CLIENTS)
    ]
    tasks += [guarded(websocket_client, ws_port, context, i, stats) for i in range(WEBSOCKETS)]
    await asyncio.wait_for(asyncio.gather(*tasks), SOAK_SECONDS)
    return stats


def test_soak_with_resets(harness: Harness) -> None:
    # 1,100 client connections at once: above the default cap of 1,024 (tested elsewhere).
    # The client's 1,300 handshakes at once can take longer than the 10 s handshake_timeout on
    # a loaded machine: the soak is about resets and memory, so it waits as long as it runs.
    patient = ("--limit", f"handshake_timeout={SOAK_SECONDS}")
    http_proxy, http_port = start_devtls(harness, None, "--limit", "max_connections=2000", *patient)
    ws_proxy, ws_port = start_devtls(harness, str(harness.upstream.ws_port), *patient)
    try:
        baseline_fds = fd_count(http_proxy.pid)
        baseline_rss = rss_kib(http_proxy.pid)
        context = ssl.create_default_context(cafile=str(harness.ca_file))
        started = time.monotonic()
        stats = asyncio.run(soak(http_port, ws_port, context))
        elapsed = time.monotonic() - started
        peak = rss_kib(http_proxy.pid, "VmHWM")
        after_fds = fds_after_settling(http_proxy.pid, baseline_fds)
        print(
            f"\nsoak: {KEEP_ALIVE_CLIENTS} keep-alive clients x {REQUESTS_PER_CLIENT} requests, "
            f"{WEBSOCKETS} websockets x {WS_MESSAGES} messages, {RESETTING_CLIENTS} resets "
            f"in {elapsed:.1f} s: {stats}; fds {baseline_fds} -> {after_fds}; "
            f"RSS {baseline_rss} KiB -> peak {peak} KiB"
        )
        assert stats["wrong"] == 0
        assert stats["errors"] == 0, stats
        assert stats["ok"] == KEEP_ALIVE_CLIENTS * REQUESTS_PER_CLIENT
        assert stats["ws_ok"] == WEBSOCKETS * WS_MESSAGES
        assert stats["reset"] == RESETTING_CLIENTS
        assert after_fds == baseline_fds
        assert (
            peak - baseline_rss < (KEEP_ALIVE_CLIENTS + RESETTING_CLIENTS) * PEAK_KIB_PER_CONNECTION
        )
        # And it still serves.
        assert ws_proxy.poll() is None
        assert http_proxy.poll() is None
    finally:
        stop(http_proxy)
        stop(ws_proxy)
