"""A real ``devtls serve`` process for the tests of the commands that talk to it."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.conftest import wait_for


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: the probes stay open until all are chosen, so none repeats."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


class Router:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.lines: list[str] = []

    def has_line(self, words: str) -> bool:
        return any(words in line for line in self.lines)


@contextmanager
def router(*args: str, caroot: Path, cwd: Path, route_lines: int = 1) -> Iterator[Router]:
    """``devtls serve ARGS`` on a free port, its control socket in this test's runtime folder,
    once its banner has printed ``route_lines`` route lines."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devtls", "serve", "--listen", f"127.0.0.1:{port}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
        env={**os.environ, "CAROOT": str(caroot)},
    )
    running = Router(process, port)
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            running.lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def started() -> bool:
        return sum("->" in line for line in running.lines) >= route_lines

    try:
        assert wait_for(started, 30), running.lines
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        reader.join(10)
        stdout.close()


def devtls(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtls", *args], capture_output=True, text=True, timeout=60
    )


@contextmanager
def http_upstream(
    handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> Iterator[int]:
    """A threaded HTTP server on a free loopback port (HTTPS with ``tls``); yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
