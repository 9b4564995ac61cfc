"""The TLS side under hostile clients: untrusted SNI, bounded minting, limits on every listener.

Over real loopback sockets against the real forwarder, on the event loop devtls runs on (uvloop,
or asyncio's with DEVTLS_EVENT_LOOP=asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from devtls.config import Limits, ServeOptions, build_config
from devtls.names import Name
from devtls.proxy.acme import AcmeManager
from devtls.proxy.certs import SNI_ATTRIBUTE
from devtls.proxy.clienthello import ALERT_UNRECOGNIZED_NAME
from devtls.proxy.responder import ListenerState, Responder, plain_http
from devtls.proxy.server import RunningServer, prepare_certificates, start
from devtls.proxy.tls import HandshakeSlots, TLSServerProtocol
from tests.conftest import require_tool, wait_for
from tests.proxy.conftest import Harness
from tests.proxy.test_clienthello import real_hello, with_server_name
from tests.proxy.test_forwarding import curl
from tests.proxy.test_serve_cli import serving

ALERT = bytes((0x15, 3, 3, 0, 2, 2, ALERT_UNRECOGNIZED_NAME))


def s_client(openssl: str, port: int) -> list[str]:
    return [openssl, "s_client", "-quiet", "-ign_eof", "-connect", f"127.0.0.1:{port}"]


def send_raw(port: int, data: bytes, *, timeout: float = 10) -> bytes:
    """Send bytes on a plain TCP connection; everything received until the server closes."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        raw.sendall(data)
        with contextlib.suppress(ConnectionError):
            while chunk := raw.recv(65536):
                received += chunk
    return received


def peer_certificate(port: int, server_name: str) -> x509.Certificate:
    """The certificate a client asking for ``server_name`` gets (no verification)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def dns_names(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.DNSName)


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What sys.unraisablehook receives (CPython's sni_callback reports decoding errors there)."""
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    return seen


def start_counting_mints(
    harness: Harness, *args: str, delay: float = 0.0, **options: Any
) -> tuple[RunningServer, list[str]]:
    """devtls serve whose minting is counted (and slowed by ``delay``), with its own source."""
    options.setdefault("listen", "127.0.0.1:0")
    if args:
        options["upstream"] = args[0]
    config = build_config(ServeOptions(**options), cwd=harness.caroot)
    certificates = prepare_certificates(config, harness.log.append)
    minted: list[str] = []
    lock = threading.Lock()
    original = certificates.source._mint

    def counting(name: Name) -> ssl.SSLContext:
        with lock:
            minted.append(name.value)
        time.sleep(delay)
        return original(name)

    certificates.source._mint = counting  # type: ignore[method-assign]
    running = harness.loop.run(
        start(config, write_log=harness.log.append, certificates=certificates)
    )
    harness.proxies.append(running)
    return running, minted


# -- 1. the SNI is untrusted ----------------------------------------------------------------


INJECTED = b"a\r\nX-Injected: yes"


@pytest.mark.parametrize(
    "raw",
    [INJECTED, b"caf\xc3\xa9.test", b"\xff\xfe\x80.test", b"a b", b"a\x00b", b"*.x.test", b""],
)
def test_a_bad_server_name_fails_the_handshake_with_an_alert_and_one_escaped_line(
    harness: Harness, unraisable: list[Any], raw: bytes
) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    answer = send_raw(proxy.port, with_server_name(raw))
    assert answer == ALERT
    lines = [line for line in harness.log if "server name" in line]
    assert len(lines) == 1, harness.log
    assert repr(raw) in lines[0]
    assert all(c.isprintable() for c in lines[0])
    assert len(lines[0]) < 250
    assert harness.upstream.seen == []
    assert unraisable == []
    # Every other client is served as before.
    assert curl(harness, f"https://localhost:{proxy.port}/") == "root"


def test_openssl_s_client_cannot_inject_headers_through_the_server_name(
    harness: Harness,
) -> None:
    openssl = require_tool("openssl")
    proxy = harness.start_proxy(str(harness.upstream.port))
    result = subprocess.run(
        [*s_client(openssl, proxy.port), "-servername", INJECTED.decode()],
        input=b"GET /headers/x HTTP/1.0\r\n\r\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert b"unrecognized name" in result.stderr
    assert b"HTTP/1" not in result.stdout
    assert harness.upstream.seen == []


@pytest.mark.parametrize("quiet", [False, True])
def test_a_non_ascii_server_name_never_prints_a_traceback(
    session_ca_dir: Path, quiet: bool
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["--listen", f"127.0.0.1:{port}", *(["--quiet"] if quiet else []), "1"]
    with serving(*args, caroot=session_ca_dir) as (process, _banner):
        for raw in (b"caf\xc3\xa9.test", b"\xff\xfe.test", b"\x80" * 40):
            assert send_raw(port, with_server_name(raw)) == ALERT
        process.send_signal(signal.SIGTERM)
        assert process.stdout is not None
        output = process.stdout.read()
        assert process.wait(20) == 0
    assert "Traceback" not in output
    assert "Exception ignored" not in output
    refused = [line for line in output.splitlines() if "server name" in line]
    assert len(refused) == (0 if quiet else 3), output


class FakeTransport:
    def __init__(self) -> None:
        self.out = b""
        self.closing = False

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def _feed(pieces: list[bytes]) -> tuple[TLSServerProtocol, FakeTransport]:
    loop = asyncio.new_event_loop()
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        protocol = TLSServerProtocol(
            loop, context, lambda _alpn: asyncio.Protocol(), handshake_timeout=10
        )
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        for piece in pieces:
            protocol.data_received(piece)
        protocol.connection_lost(None)
        return protocol, transport
    finally:
        loop.close()


def _sni_attribute(hello: bytes) -> Any:
    """What TLSServerProtocol leaves under SNI_ATTRIBUTE for a client sending ``hello``."""
    protocol, _ = _feed([hello])
    return getattr(protocol.get_extra_info("ssl_object"), SNI_ATTRIBUTE, "missing")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=8))
def test_the_tls_protocol_takes_any_bytes_after_a_record_start(pieces: list[bytes]) -> None:
    # No exception escapes: a bad hello is an alert and a close, a good one goes to OpenSSL.
    _, transport = _feed([b"\x16\x03\x01", *pieces])
    if transport.out[:1] == b"\x15":
        assert transport.closing


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=100), st.integers(1, 50))
def test_any_server_name_in_any_pieces_is_refused_or_validated(raw: bytes, size: int) -> None:
    hello = with_server_name(raw)
    protocol, transport = _feed([hello[i : i + size] for i in range(0, len(hello), size)])
    sslobj = protocol.get_extra_info("ssl_object")
    if sslobj is None:
        assert transport.out == ALERT or transport.out[:1] == b"\x15"
    else:
        name = getattr(sslobj, SNI_ATTRIBUTE)
        assert name is None or re.fullmatch(r"[a-z0-9_.-]+", name)


@pytest.mark.parametrize(
    ("hello", "expected"),
    [
        (real_hello("App.TEST", None), "app.test"),
        (real_hello(None, None), None),
        (with_server_name(b"127.0.0.1"), None),
        (with_server_name(b"::1"), None),
        (with_server_name(b"Trailing.Dot."), "trailing.dot"),
    ],
)
def test_only_a_validated_lower_case_name_is_left_for_routing(
    hello: bytes, expected: str | None
) -> None:
    assert _sni_attribute(hello) == expected


def test_an_ip_literal_in_sni_is_ignored_as_if_none_was_sent(harness: Harness) -> None:
    openssl = require_tool("openssl")
    proxy = harness.start_proxy(str(harness.upstream.port))
    result = subprocess.run(
        [*s_client(openssl, proxy.port), "-servername", "127.0.0.1"],
        input=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.stdout.startswith(b"HTTP/1.1 200 "), result.stderr[-500:]


def test_malformed_hellos_are_refused_and_cost_nothing_else(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    hello = real_hello("localhost", None)
    decode_error = bytes((0x15, 3, 3, 0, 2, 2, 50))
    # A hello announced larger than MAX_HELLO is refused at once, before it is buffered...
    oversized = hello[:5] + b"\x01\xff\xff\xff" + hello[9:]
    assert send_raw(proxy.port, oversized) == decode_error
    # ...and so is a truncated body inside a complete record.
    broken = b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00"
    assert send_raw(proxy.port, broken) == decode_error
    assert sum("malformed ClientHello" in line for line in harness.log) == 2
    assert curl(harness, f"https://localhost:{proxy.port}/") == "root"


def test_a_hello_sent_one_byte_per_segment_is_served(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    context = ssl.create_default_context(cafile=str(harness.ca_file))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(hello)):
            raw.sendall(hello[i : i + 1])
            if i % 64 == 0:
                time.sleep(0.001)  # separate segments, not one coalesced write
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            incoming.write(raw.recv(65536))
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    raw.sendall(outgoing.read())
        raw.sendall(outgoing.read())
        tls.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        raw.sendall(outgoing.read())
        answer = b""
        while b"root" not in answer and time.monotonic() < deadline:
            data = raw.recv(65536)
            if not data:
                break
            incoming.write(data)
            with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                answer += tls.read(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")


# -- 2. names without regard to case ---------------------------------------------------------


def test_upper_and_lower_case_names_share_one_minted_certificate(harness: Harness) -> None:
    proxy, minted = start_counting_mints(harness, str(harness.upstream.port))
    first = peer_certificate(proxy.port, "MIXED.Test")
    second = peer_certificate(proxy.port, "mixed.TEST")
    third = peer_certificate(proxy.port, "mixed.test")
    assert dns_names(first) == ["mixed.test"]
    assert first == second == third
    assert minted == ["mixed.test"]
    # A covered name in upper case is covered: the default leaf, nothing minted.
    assert "localhost" in dns_names(peer_certificate(proxy.port, "LOCALHOST"))
    assert minted == ["mixed.test"]


def test_routes_match_hosts_without_regard_to_case(harness: Harness) -> None:
    proxy = harness.start_proxy(routes=(f"App.Test={harness.upstream.port}",))
    assert (
        curl(
            harness,
            f"https://APP.test:{proxy.port}/",
            "--resolve",
            f"APP.test:{proxy.port}:127.0.0.1",
        )
        == "root"
    )


def test_acme_certificates_are_looked_up_without_regard_to_case() -> None:
    from devtls.config import AcmeSettings

    manager = AcmeManager(AcmeSettings(hosts=("demo.example.com",)), write_log=lambda _: None)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    manager.contexts["demo.example.com"] = context
    assert manager.context_for("DEMO.Example.COM") is context
    assert manager.context_for(None) is context
    manager.alpn_contexts["demo.example.com"] = context
    assert manager.alpn_challenge("Demo.Example.Com", (b"acme-tls/1",)) is context


# -- 3. minting is bounded ---------------------------------------------------------------------


def test_a_burst_of_new_names_mints_at_most_the_limit(harness: Harness) -> None:
    proxy, minted = start_counting_mints(
        harness, str(harness.upstream.port), limits=("mint_per_minute=5",)
    )
    names = [f"burst{i}.test" for i in range(30)]
    with ThreadPoolExecutor(10) as pool:
        certificates = list(pool.map(lambda name: peer_certificate(proxy.port, name), names))
        # Other clients are served meanwhile.
        assert curl(harness, f"https://localhost:{proxy.port}/") == "root"
    own = [
        name for name, cert in zip(names, certificates, strict=True) if dns_names(cert) == [name]
    ]
    assert len(own) == 5
    assert sorted(minted) == sorted(own)
    default = [cert for cert in certificates if "localhost" in dns_names(cert)]
    assert len(default) == 25
    refusals = [line for line in harness.log if "minting limit" in line]
    assert len(refusals) == 1, refusals
    assert "mint_per_minute" in refusals[0]


def test_bare_hellos_with_random_names_cost_at_most_the_limit(harness: Harness) -> None:
    proxy, minted = start_counting_mints(
        harness, str(harness.upstream.port), limits=("mint_per_minute=10",)
    )
    # The attack: a ClientHello with a new name, then gone, 300 times.
    for i in range(300):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
            raw.sendall(with_server_name(f"r{i:04}.test".encode()))
    deadline = time.monotonic() + 10
    while len(minted) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert len(minted) == 10
    assert curl(harness, f"https://localhost:{proxy.port}/") == "root"


def test_minting_runs_off_the_loop_once_per_name(harness: Harness) -> None:
    proxy, minted = start_counting_mints(harness, str(harness.upstream.port), delay=1.5)
    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(peer_certificate, proxy.port, "slow.test") for _ in range(4)]
        time.sleep(0.3)  # every handshake is waiting for the one mint now
        started = time.monotonic()
        assert curl(harness, f"https://localhost:{proxy.port}/") == "root"
        assert time.monotonic() - started < 1.0  # not held up by the mint
        assert not any(future.done() for future in waiting)
        certificates = [future.result(20) for future in waiting]
    assert minted == ["slow.test"]
    assert all(dns_names(cert) == ["slow.test"] for cert in certificates)
    assert len({cert.serial_number for cert in certificates}) == 1


def test_the_mint_budget_is_a_sliding_minute() -> None:
    from devtls.proxy.certs import MintBudget

    now = [0.0]
    budget = MintBudget(3, clock=lambda: now[0])
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    assert budget.should_log_refusal()
    now[0] = 30.0
    assert not budget.take()
    assert not budget.should_log_refusal()  # once a minute, not once per handshake
    now[0] = 60.0
    assert budget.take()
    assert budget.should_log_refusal()


def test_a_mint_that_fails_serves_the_default_certificate(harness: Harness) -> None:
    config = build_config(
        ServeOptions(listen="127.0.0.1:0", upstream=str(harness.upstream.port)),
        cwd=harness.caroot,
    )
    certificates = prepare_certificates(config, harness.log.append)

    def broken(name: Name) -> ssl.SSLContext:
        raise OSError("disk on fire")

    certificates.source._mint = broken  # type: ignore[method-assign]
    running = harness.loop.run(
        start(config, write_log=harness.log.append, certificates=certificates)
    )
    harness.proxies.append(running)
    assert "localhost" in dns_names(peer_certificate(running.port, "broken.test"))
    assert any("minting a certificate for broken.test failed" in line for line in harness.log)


# -- 4. connections in the handshake count toward max_connections ----------------------------


def handshake_works(port: int, ca_file: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return tls.recv(65536).startswith(b"HTTP/1.1 200 ")
    except (ssl.SSLError, OSError):
        return False


def test_idle_connections_that_never_send_a_hello_count_toward_max_connections(
    harness: Harness,
) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port), limits=("max_connections=5",))
    idle = [socket.create_connection(("127.0.0.1", proxy.port), timeout=10) for _ in range(5)]
    try:
        time.sleep(0.3)  # all five are accepted now
        for _ in range(3):
            assert not handshake_works(proxy.port, harness.ca_file)
        limit_lines = [line for line in harness.log if "max_connections (5) reached" in line]
        assert len(limit_lines) == 1  # once, not once per refused connection
        # The idle ones are still open: the limit did not close them.
        for sock in idle:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in idle:
            sock.close()
    assert wait_for(lambda: handshake_works(proxy.port, harness.ca_file))


def test_idle_connections_are_closed_by_the_handshake_timeout(harness: Harness) -> None:
    proxy = harness.start_proxy(
        str(harness.upstream.port), limits=("max_connections=3", "handshake_timeout=0.5")
    )
    idle = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(3)]
    started = time.monotonic()
    try:
        for sock in idle:
            assert sock.recv(1) == b""
        assert time.monotonic() - started < 3
    finally:
        for sock in idle:
            sock.close()
    assert handshake_works(proxy.port, harness.ca_file)


def test_handshake_slots_count_both_kinds() -> None:
    established = [0]
    slots = HandshakeSlots(2, lambda: established[0])
    assert slots.acquire()
    established[0] = 1
    assert not slots.acquire()
    slots.release()
    assert slots.acquire()


# -- 5. limits on the plain-HTTP listeners ------------------------------------------------------


def redirect_port(proxy: RunningServer) -> int:
    port: int = proxy.servers[-1].sockets[0].getsockname()[1]
    assert port != proxy.port
    return port


def test_redirect_listener_closes_idle_and_slow_connections(harness: Harness) -> None:
    proxy = harness.start_proxy(
        str(harness.upstream.port), redirect_http="127.0.0.1:0", limits=("head_timeout=0.5",)
    )
    port = redirect_port(proxy)
    started = time.monotonic()
    # Nothing sent: closed without a word.
    assert send_raw(port, b"") == b""
    # A head begun and never finished: 408.
    assert send_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n").startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 5
    # Its behaviour otherwise is unchanged: a permanent redirect to https.
    answer = send_raw(port, b"GET /a?b HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 301 ")
    assert f"Location: https://app.test:{proxy.port}/a?b\r\n".encode() in answer


def test_redirect_listener_has_the_head_size_limits(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port), redirect_http="127.0.0.1:0")
    port = redirect_port(proxy)
    long_line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert send_raw(port, long_line).startswith(b"HTTP/1.1 414 ")
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 150 + b"\r\n"
    assert send_raw(port, many).startswith(b"HTTP/1.1 431 ")
    big = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 8000 + b"\r\n"
    assert send_raw(port, big * 1 + b"X-More: " + b"m" * 30000 + b"\r\n\r\n").startswith(
        b"HTTP/1.1 431 "
    )


def test_redirect_listener_has_a_connection_limit(harness: Harness) -> None:
    proxy = harness.start_proxy(
        str(harness.upstream.port), redirect_http="127.0.0.1:0", limits=("max_connections=3",)
    )
    port = redirect_port(proxy)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        time.sleep(0.3)
        answer = send_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 ")
        # The TLS port has its own count and is not affected.
        assert curl(harness, f"https://localhost:{proxy.port}/") == "root"
    finally:
        for sock in idle:
            sock.close()

    def redirected() -> bool:
        return send_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 301 ")

    assert wait_for(redirected)


class FakeAcme:
    def http01_answer(self, path: str) -> bytes | None:
        return b"token.thumbprint" if path == "/.well-known/acme-challenge/token" else None


@pytest.fixture
def acme_listener(harness: Harness) -> Iterator[tuple[int, ListenerState]]:
    limits = Limits(head_timeout=0.5, max_connections=2)
    state = ListenerState(limits)
    respond = plain_http(8443, FakeAcme())  # type: ignore[arg-type]

    async def open_server() -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(
            lambda: Responder(state, respond), "127.0.0.1", 0
        )

    server = harness.loop.run(open_server())
    yield server.sockets[0].getsockname()[1], state

    async def close_server() -> None:
        server.close()
        state.close_all()

    harness.loop.run(close_server())


def test_the_acme_http01_listener_answers_and_has_the_limits(
    acme_listener: tuple[int, ListenerState],
) -> None:
    port, state = acme_listener
    answer = send_raw(port, b"GET /.well-known/acme-challenge/token HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"token.thumbprint")
    assert send_raw(port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 301 ")
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        time.sleep(0.2)
        assert send_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 503 ")
        started = time.monotonic()
        for sock in idle:
            assert sock.recv(1) == b""  # closed by head_timeout
        assert time.monotonic() - started < 3
    finally:
        for sock in idle:
            sock.close()
    assert wait_for(lambda: not state.connections)
