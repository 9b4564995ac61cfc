"""Back-pressure keeps the forwarder's memory flat, whatever the size of a body."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.proxy.conftest import Harness
from tests.proxy.test_serve_cli import free_port

CHUNK = b"x" * (1024 * 1024)
# Far below the bodies sent (hundreds of MiB): the forwarder holds buffers, never bodies.
RSS_GROWTH_LIMIT_KIB = 64 * 1024


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def start_devtls(
    h: Harness, upstream: str | None = None, *extra: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devtls", "serve", upstream or str(h.upstream.port), "--quiet",
         "--listen", f"127.0.0.1:{port}", *extra],
        env={**os.environ, "CAROOT": str(h.caroot)},
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    process.stdout.readline()  # the banner: listening
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(15) == 0
    finally:
        if process.stdout is not None:
            process.stdout.close()


def test_large_upload_streams_with_flat_memory(harness: Harness) -> None:
    process, port = start_devtls(harness)
    try:
        baseline = rss_kib(process.pid)
        size = 400 * len(CHUNK)

        def body():
            for _ in range(400):
                yield CHUNK

        context = ssl.create_default_context(cafile=str(harness.ca_file))
        with httpx.Client(verify=context, timeout=60) as client:
            response = client.post(f"https://localhost:{port}/sha256", content=body())
        assert response.json()["size"] == size
        peak = rss_kib(process.pid, "VmHWM")
        assert peak - baseline < RSS_GROWTH_LIMIT_KIB, (baseline, peak)
    finally:
        stop(process)


def test_client_that_does_not_read_does_not_grow_memory(harness: Harness) -> None:
    process, port = start_devtls(harness)
    try:
        baseline = rss_kib(process.pid)
        context = ssl.create_default_context(cafile=str(harness.ca_file))
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % (300 * len(CHUNK)))
            tls.recv(1024)
            time.sleep(2)  # the upstream would send 300 MiB in this time if nothing held it
            stalled = rss_kib(process.pid, "VmHWM")
            received = 0
            while received < 300 * len(CHUNK):
                piece = tls.recv(1024 * 1024)
                if not piece:
                    break
                received += len(piece)
        assert stalled - baseline < RSS_GROWTH_LIMIT_KIB, (baseline, stalled)
        assert received >= 300 * len(CHUNK) - 1024
    finally:
        stop(process)
