"""Helpers for trust-store tests: a TLS server with a devtls leaf, and running the CLI."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtls.ca import LocalCA


def devtls(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtls", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


class TLSServer:
    """Answers every connection with a tiny HTTP response, over a devtls leaf."""

    def __init__(self, ca: LocalCA) -> None:
        self.context = ca.issue("localhost", "127.0.0.1", key_type="ecdsa").server_context()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                continue
            raw.settimeout(5)
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    tls.recv(65536)
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\ntrusted"
                    )
            except (OSError, ssl.SSLError):
                pass

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def fresh_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalCA:
    """A new CA of its own for each test, so a left-over from one test cannot help another."""
    root = tmp_path / "caroot"
    ca, _ = LocalCA.load_or_create(root)
    monkeypatch.setenv("CAROOT", str(root))
    return ca


@pytest.fixture
def tls_server(fresh_ca: LocalCA) -> Iterator[TLSServer]:
    server = TLSServer(fresh_ca)
    yield server
    server.close()
