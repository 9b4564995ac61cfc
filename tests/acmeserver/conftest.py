"""A real ``devtls acme-server`` process on loopback, for the tests with real ACME clients."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import wait_for

# serve --acme's tests run devtls serve in this process, as the forwarder's tests do.
from tests.proxy.conftest import harness, loop_thread  # noqa: F401
from tests.routerprocess import free_ports


@dataclass
class AcmeServerProcess:
    process: subprocess.Popen[str]
    directory: str
    caroot: Path
    http_port: int
    tls_port: int
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def root(self) -> Path:
        return self.caroot / "rootCA.pem"

    def log(self) -> str:
        return "\n".join(self.lines)


def start_acme_server(
    caroot: Path, *args: str, env: dict[str, str] | None = None
) -> AcmeServerProcess:
    http_port, tls_port = free_ports(2)
    environ = {
        **os.environ,
        "CAROOT": str(caroot),
        "DEVTLS_ACME_HTTP_PORT": str(http_port),
        "DEVTLS_ACME_TLS_PORT": str(tls_port),
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "devtls", "acme-server", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def started() -> bool:
        return any("directory https://" in line for line in lines) or process.poll() is not None

    wait_for(started, 30)
    line = next((item for item in lines if "directory https://" in item), None)
    if line is None:
        process.kill()
        process.wait(10)
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()
        raise AssertionError("acme-server did not start: " + "\n".join(lines))
    server = AcmeServerProcess(process, line.split("directory ", 1)[1], caroot, http_port, tls_port)
    server.lines = lines
    server.reader = reader
    return server


def stop_acme_server(server: AcmeServerProcess) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
    if server.reader is not None:
        server.reader.join(10)
    if server.process.stdout is not None:
        server.process.stdout.close()


@pytest.fixture
def acme_server_factory(tmp_path: Path) -> Iterator[Callable[..., AcmeServerProcess]]:
    started: list[AcmeServerProcess] = []

    def factory(*args: str, caroot: Path | None = None, **env: str) -> AcmeServerProcess:
        server = start_acme_server(caroot or tmp_path / "caroot", *args, env=env)
        started.append(server)
        return server

    yield factory
    for server in started:
        stop_acme_server(server)


@pytest.fixture
def acme_server(
    acme_server_factory: Callable[..., AcmeServerProcess], session_ca_dir: Path
) -> AcmeServerProcess:
    return acme_server_factory(caroot=session_ca_dir)
