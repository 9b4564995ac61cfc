"""`devtls routes`, `route add/rm` and `stop` against a real `devtls serve` process."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devtls.cli import app
from devtls.runtime import CONTROL_SOCKET, PID_FILE
from tests.conftest import wait_for
from tests.routerprocess import devtls, free_port, http_upstream, router


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream_port() -> Iterator[int]:
    with http_upstream(Hello) as port:
        yield port


def get(caroot: Path, port: int, host: str, path: str = "/", *, sni: str | None = None) -> int:
    """The status of a GET on a new connection (Host ``host``, SNI ``sni`` or ``host``)."""
    context = ssl.create_default_context(cafile=str(caroot / "rootCA.pem"))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=sni or host) as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return int(tls.recv(65536).split(b" ")[1])


def test_without_a_router_each_command_says_so_in_one_line(runtime_dir: Path) -> None:
    runner = CliRunner()
    for args in (["routes"], ["routes", "--json"], ["route", "rm", "a.localhost"], ["stop"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, args
        lines = result.output.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("devtls: error: no devtls router is running")
        assert "start one with 'devtls serve'" in lines[0]
    # A socket file nobody listens on (a router that was killed) reads the same.
    stale = socket.socket(socket.AF_UNIX)
    devtls_dir = runtime_dir / "devtls"
    devtls_dir.mkdir()
    stale.bind(str(devtls_dir / CONTROL_SOCKET))
    stale.close()
    result = runner.invoke(app, ["routes"])
    assert result.exit_code == 1
    assert "no devtls router is running" in result.output


def test_a_bad_route_is_a_usage_error_router_or_not() -> None:
    result = CliRunner().invoke(app, ["route", "add", "bad host", "3000"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "devtls: error: route 'bad host' '3000': 'bad host' is not a host name or IP;"
        " e.g. devtls route add api.localhost/v1 3001"
    )


def test_routes_add_rm_sighup_and_stop(
    session_ca_dir: Path, upstream_port: int, tmp_path: Path, runtime_dir: Path
) -> None:
    toml = tmp_path / "devtls.toml"
    toml.write_text(f'routes = ["localhost={upstream_port}"]\n')
    with router(caroot=session_ca_dir, cwd=tmp_path) as running:
        listing = devtls("routes", "--json")
        assert listing.returncode == 0, listing.stderr
        data = json.loads(listing.stdout)
        assert data["pid"] == running.process.pid
        assert data["routes"] == [
            {
                "host": "localhost",
                "path": "/",
                "route": "localhost",
                "upstream": f"http://localhost:{upstream_port}",
                "source": "config",
                "held_by": None,
                "answers": True,
            }
        ]
        added = devtls("route", "add", "api.localhost/v1", str(free_port()))
        assert added.returncode == 0, added.stderr
        assert added.stdout.startswith("added api.localhost/v1 -> http://localhost:")
        text = devtls("routes").stdout.splitlines()
        assert text[0].split() == ["ROUTE", "UPSTREAM", "SOURCE", "HELD", "BY", "ANSWERS"]
        assert text[1].split()[0::2] == ["api.localhost/v1", "control", "no"]
        assert get(session_ca_dir, running.port, "api.localhost", "/v1/x") == 502
        # SIGHUP applies the file again at once (the watch may see the edit first, too).
        toml.write_text(f'routes = ["localhost={upstream_port}", "b.localhost={upstream_port}"]\n')
        running.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: running.has_line("(SIGHUP): 3 routes"))
        assert get(session_ca_dir, running.port, "b.localhost") == 200
        removed = devtls("route", "rm", "api.localhost/v1")
        assert removed.returncode == 0, removed.stderr
        refused = devtls("route", "rm", "api.localhost/v1")
        assert refused.returncode == 1
        assert refused.stderr.startswith("devtls: error: there is no route api.localhost/v1")
        # A router started in the background leaves its pid file; stop removes it.
        devtls_dir = runtime_dir / "devtls"
        (devtls_dir / PID_FILE).write_text(f"{running.process.pid}\n")
        stopped = devtls("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout == f"stopped the router (pid {running.process.pid})\n"
        assert running.process.wait(10) == 0
        assert not (devtls_dir / PID_FILE).exists()
        assert not (devtls_dir / CONTROL_SOCKET).exists()


def test_every_worker_follows_live_changes(
    session_ca_dir: Path, upstream_port: int, tmp_path: Path
) -> None:
    if sys.platform != "linux":
        pytest.skip("--workers is Linux only")
    with router(
        "--workers", "2", "--route", f"localhost={upstream_port}",
        caroot=session_ca_dir, cwd=tmp_path,
    ) as running:  # fmt: skip
        assert devtls("route", "add", "api.localhost", str(upstream_port)).returncode == 0
        # New connections are spread over both workers by the kernel (SO_REUSEPORT).
        assert [get(session_ca_dir, running.port, "api.localhost") for _ in range(30)] == [200] * 30
        assert devtls("route", "rm", "api.localhost").returncode == 0
        statuses = [
            get(session_ca_dir, running.port, "api.localhost", sni="localhost") for _ in range(30)
        ]
        assert statuses == [404] * 30
