"""Helpers for trust-store tests: a TLS server with a devtls leaf, and running the CLI."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtls.ca import LocalCA
from devtls.truststores.firefox_policy_linux import DISTRIBUTION_DIRS


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


def policy_paths() -> list[Path]:
    return [Path("/etc/firefox"), *(d / "policies.json" for d in DISTRIBUTION_DIRS)]


def policy_snapshot() -> dict[str, tuple[int, bytes | None]]:
    """Every file and folder under the policy locations, with its mode and content."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for top in policy_paths():
        if not top.exists():
            continue
        for path in [top, *(top.rglob("*") if top.is_dir() else [])]:
            info = path.lstat()
            content = None if path.is_dir() else path.read_bytes()
            found[str(path)] = (info.st_mode, content)
    return found


@pytest.fixture(autouse=True)
def system_policy_files() -> Iterator[dict[str, tuple[int, bytes | None]]]:
    """Firefox's system policy files as they were; put back exactly, whatever the test did.

    Every test here: as root, an `install --store nss` writes the system policy too."""
    before = policy_snapshot()
    yield before
    after = policy_snapshot()
    for name in sorted(set(after) - set(before), key=len, reverse=True):
        path = Path(name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for name, (mode, content) in before.items():
        path = Path(name)
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        elif after.get(name) != (mode, content):
            path.write_bytes(content)
        os.chmod(path, stat.S_IMODE(mode))
    assert policy_snapshot() == before
