"""devtls serve --tcp: upstreams that speak first, ALPN as the user says, PostgreSQL's SSLRequest."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtls.config import ServeOptions, build_config
from devtls.errors import ConfigError
from tests.conftest import require_tool, run
from tests.proxy.conftest import Harness, pattern_bytes
from tests.proxy.test_forwarding import curl

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


@pytest.fixture(autouse=True)
def no_loop_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """An exception in a callback is only logged by the event loop: that fails the test."""
    yield
    errors = [r.getMessage() for r in caplog.records if r.name == "asyncio" or r.exc_info]
    assert not errors, errors


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


# -- bug 8: ALPN in --tcp mode is what the user says ------------------------------------------


def test_plain_curl_through_tcp_mode_to_an_http11_server(harness: Harness) -> None:
    """No h2 offered by default: curl speaks HTTP/1.1, which the upstream understands."""
    proxy = harness.start_proxy(str(harness.upstream.port), tcp=True, quiet=True)
    assert curl(harness, f"https://localhost:{proxy.port}/") == "root"


def negotiated_alpn(h: Harness, port: int, offer: str, server_name: str = "localhost") -> str:
    openssl = require_tool("openssl")
    # errors="replace": after an h2 handshake s_client may print the server's SETTINGS frame.
    out = run(openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", server_name,
              "-CAfile", h.ca_file, "-verify_return_error", "-alpn", offer, input="",
              errors="replace").stdout  # fmt: skip
    assert "Verify return code: 0 (ok)" in out
    line = next(x for x in out.splitlines() if "ALPN" in x)
    return line.strip()


@pytest.mark.parametrize(
    ("options", "offer", "expected"),
    [
        ({"tcp": True}, "h2,http/1.1", "No ALPN negotiated"),
        ({"tcp": True, "alpn": "h2"}, "h2,http/1.1", "ALPN protocol: h2"),
        ({"tcp": True, "alpn": "h2"}, "http/1.1", "No ALPN negotiated"),
        ({"tcp": True, "alpn": "h2,http/1.1"}, "http/1.1", "ALPN protocol: http/1.1"),
        ({"tcp": True, "alpn": "postgresql"}, "postgresql", "ALPN protocol: postgresql"),
        ({}, "h2,http/1.1", "ALPN protocol: h2"),
        ({}, "http/1.1", "ALPN protocol: http/1.1"),
        ({"http1_only": True}, "h2,http/1.1", "ALPN protocol: http/1.1"),
        ({"http1_only": True}, "h2", "No ALPN negotiated"),
    ],
)
def test_alpn_offered_as_configured(
    harness: Harness, options: dict[str, object], offer: str, expected: str
) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port), quiet=True, **options)
    assert negotiated_alpn(harness, proxy.port, offer) == expected


def test_alpn_of_a_certificate_minted_on_demand(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port), tcp=True, alpn="h2", quiet=True)
    assert negotiated_alpn(harness, proxy.port, "h2", "db.test") == "ALPN protocol: h2"


def test_alpn_from_the_toml_file(tmp_path: Path) -> None:
    (tmp_path / "devtls.toml").write_text('upstream = 50051\ntcp = true\nalpn = ["h2"]\n')
    assert build_config(ServeOptions(), cwd=tmp_path).alpn == ("h2",)
    (tmp_path / "devtls.toml").write_text('upstream = 50051\ntcp = true\nalpn = "h2, http/1.1"\n')
    assert build_config(ServeOptions(), cwd=tmp_path).alpn == ("h2", "http/1.1")
    assert build_config(ServeOptions(alpn="postgresql"), cwd=tmp_path).alpn == ("postgresql",)
    assert build_config(ServeOptions(upstream="3000"), cwd=tmp_path / "none").alpn == ()


@pytest.mark.parametrize(
    "bad",
    ["", "h2,", ",h2", "h2,,http/1.1", "h2 x", "caf\u00e9", "a\x7f", "x" * 256, ",".join("p" * 17)],
)
def test_bad_alpn_lists_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(ServeOptions(upstream="3000", tcp=True, alpn=bad), cwd=tmp_path)
    assert caught.value.exit_code == 2
    assert "--alpn" in str(caught.value)


def test_a_protocol_name_of_255_bytes_is_allowed(tmp_path: Path) -> None:
    name = "x" * 255
    config = build_config(ServeOptions(upstream="3000", tcp=True, alpn=name), cwd=tmp_path)
    assert config.alpn == (name,)


def test_alpn_without_tcp_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtls", "serve", "--alpn", "h2", "3000"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("devtls: error: --alpn applies only with --tcp")


# -- bug 9: PostgreSQL's SSLRequest and direct SSL ----------------------------------------------

SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSSENC_REQUEST = struct.pack("!II", 8, 80877104)


def raw_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_all(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionError:
        pass
    return received


def tls_after_answer(h: Harness, sock: socket.socket) -> bytes:
    """TLS on a socket that has had its 'S', then one line through the greeter."""
    with client_context(h).wrap_socket(sock, server_hostname="localhost") as tls:
        received = b""
        while len(received) < len(GREETING):
            received += tls.recv(65536)
        tls.sendall(b"HELO x\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += tls.recv(65536)
        return received + reply


@pytest.mark.parametrize("split", [False, True])
def test_an_sslrequest_is_answered_s_then_tls(harness: Harness, greeter: int, split: bool) -> None:
    proxy = harness.start_proxy(str(greeter), tcp=True, quiet=True)
    with raw_connection(proxy.port) as sock:
        if split:  # one byte a packet: the request may come in pieces
            for byte in SSL_REQUEST:
                sock.sendall(bytes([byte]))
                time.sleep(0.01)
        else:
            sock.sendall(SSL_REQUEST)
        assert sock.recv(1) == b"S"
        assert tls_after_answer(harness, sock) == GREETING + b"250 HELO x\r\n"


def test_a_gssencrequest_is_refused_then_ssl_goes_on(harness: Harness, greeter: int) -> None:
    proxy = harness.start_proxy(str(greeter), tcp=True, quiet=True)
    with raw_connection(proxy.port) as sock:
        sock.sendall(GSSENC_REQUEST)
        assert sock.recv(1) == b"N"
        sock.sendall(SSL_REQUEST)
        assert sock.recv(1) == b"S"
        assert tls_after_answer(harness, sock) == GREETING + b"250 HELO x\r\n"


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        # Bytes sent after the request, before the answer, could be a man in the middle's.
        (SSL_REQUEST + b"\x00\x00\x00\x08", "after its SSLRequest"),
        (GSSENC_REQUEST + GSSENC_REQUEST, "after its SSLRequest"),
        # A plaintext StartupMessage: not TLS, refused as before.
        (struct.pack("!II", 40, 196608) + b"user\x00postgres\x00", "not TLS"),
    ],
)
def test_other_first_bytes_are_refused(
    harness: Harness, greeter: int, first: bytes, reason: str
) -> None:
    proxy = harness.start_proxy(str(greeter), tcp=True)
    with raw_connection(proxy.port) as sock:
        sock.sendall(first)
        assert recv_all(sock) == b""
    assert any(reason in line for line in harness.log), harness.log


@pytest.mark.parametrize("first", [SSL_REQUEST[:7], SSL_REQUEST[:1], b""])
def test_a_stalled_request_hits_the_handshake_timeout(
    harness: Harness, greeter: int, first: bytes
) -> None:
    proxy = harness.start_proxy(str(greeter), tcp=True, limits=("handshake_timeout=0.5",))
    started = time.monotonic()
    with raw_connection(proxy.port) as sock:
        sock.sendall(first)
        assert recv_all(sock) == b""
    assert time.monotonic() - started < 3
    assert "TLS handshake failed: handshake timed out" in harness.log


def test_after_the_s_the_tls_handshake_is_bounded_too(harness: Harness, greeter: int) -> None:
    proxy = harness.start_proxy(str(greeter), tcp=True, limits=("handshake_timeout=0.5",))
    started = time.monotonic()
    with raw_connection(proxy.port) as sock:
        sock.sendall(SSL_REQUEST)
        assert sock.recv(1) == b"S"
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        assert recv_all(sock) == b""
    assert time.monotonic() - started < 3


# A real PostgreSQL server, started by the test as its own user on a Unix socket.


def pg_tool(name: str) -> str:
    """A PostgreSQL program; Debian keeps the server's in /usr/lib/postgresql/N/bin."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    with pytest.MonkeyPatch.context() as patch:
        if dirs:
            patch.setenv("PATH", os.pathsep.join([dirs[-1], os.environ.get("PATH", "")]))
        return require_tool(name)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Path]:
    """The Unix socket of a PostgreSQL server with trust authentication for user postgres."""
    initdb, server = pg_tool("initdb"), pg_tool("postgres")
    base = Path(tempfile.mkdtemp(prefix="devtls-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        as_postgres = [require_tool("runuser"), "-u", "postgres", "--"]
        shutil.chown(base, "postgres", "postgres")
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}
    data = base / "data"
    run(*as_postgres, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync",
        cwd=base, env=env)  # fmt: skip
    log = (base / "server.log").open("wb")
    process = subprocess.Popen(
        [*as_postgres, server, "-D", str(data), "-k", str(base), "-p", "5432",
         "-c", "listen_addresses=", "-c", "fsync=off"],
        stdout=log, stderr=subprocess.STDOUT, cwd=base, env=env,
    )  # fmt: skip
    sock_path = base / ".s.PGSQL.5432"
    try:
        deadline = time.monotonic() + 30
        while not sock_path.exists() or not (data / "postmaster.pid").exists():
            assert process.poll() is None, (base / "server.log").read_text()
            assert time.monotonic() < deadline, "PostgreSQL did not start within 30 s"
            time.sleep(0.05)
        yield sock_path
    finally:
        pid_file = data / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)  # fast shutdown
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def psql(
    h: Harness, port: int, *options: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    conninfo = " ".join(
        [f"host=localhost port={port} sslmode=verify-full sslrootcert={h.ca_file}",
         "dbname=postgres user=postgres connect_timeout=10", *options]
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return run(pg_tool("psql"), "-X", "-tA", conninfo, "-c", "select 1", env=env, check=check)


@pytest.mark.parametrize("alpn", [None, "postgresql"])
def test_psql_through_tcp_mode(harness: Harness, postgres: Path, alpn: str | None) -> None:
    proxy = harness.start_proxy(f"unix:{postgres}", tcp=True, alpn=alpn)
    assert psql(harness, proxy.port).stdout == "1\n"
    # The TLS is devtls's: plaintext PostgreSQL is not let through.
    refused = psql(harness, proxy.port, "sslmode=disable", check=False)
    assert refused.returncode != 0
    assert "1\n" not in refused.stdout


def test_direct_ssl_with_alpn_postgresql(harness: Harness, postgres: Path) -> None:
    """PostgreSQL 17's sslnegotiation=direct: TLS at once, ALPN postgresql, then startup."""
    proxy = harness.start_proxy(f"unix:{postgres}", tcp=True, alpn="postgresql")
    context = client_context(harness)
    context.set_alpn_protocols(["postgresql"])
    params = b"user\x00postgres\x00database\x00postgres\x00\x00"
    startup = struct.pack("!II", 8 + len(params), 196608) + params  # protocol 3.0
    with (
        raw_connection(proxy.port) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "postgresql"
        tls.sendall(startup)
        head = b""
        while len(head) < 9:
            head += tls.recv(9 - len(head))
    # AuthenticationOk: 'R', length 8, code 0 (trust), from the real server.
    assert head == b"R" + struct.pack("!II", 8, 0)
