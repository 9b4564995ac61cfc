"""Forwarding integrity over real sockets: what reaches an upstream (parsed by h11, not by
devtls) is framed, addressed and routed as devtls parsed it, and every failure on the
upstream side ends in an answer on a connection that stays usable."""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import subprocess
import time

import pytest

from devtls.proxy.http1 import END, Data, ResponseHead, ResponseReader
from tests.conftest import IN_CI, require_tool
from tests.proxy.conftest import Harness
from tests.proxy.rawupstream import RawUpstream, Seen, ok, raw_upstream
from tests.proxy.test_hostile import exchange

SMUGGLE = (
    b"POST / HTTP/1.1\r\nHost: localhost\r\nConnection: content-length\r\nContent-Length: 43\r\n"
    b"\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
)


def tls_connection(h: Harness, port: int, sni: str = "localhost") -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(h.ca_file))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=sni)


def read_response(tls: ssl.SSLSocket, *, head_request: bool = False) -> tuple[int, bytes]:
    """One whole response (status, body) read off a kept-alive connection."""
    reader = ResponseReader()
    reader.expect_response(head_request=head_request)
    status, body = 0, b""
    while True:
        event = reader.next_event()
        if event is None:
            data = tls.recv(65536)
            if not data:
                reader.feed_eof()
            reader.feed(data)
            continue
        if isinstance(event, ResponseHead):
            if event.status >= 200:
                status = event.status
        elif isinstance(event, Data):
            body += event.data
        elif event is END and status:
            return status, body


def sequential(h: Harness, port: int, requests: list[bytes]) -> list[tuple[int, bytes]]:
    """Each request sent only once the answer to the one before is read: one connection."""
    with tls_connection(h, port) as tls:
        answers = []
        for request in requests:
            tls.sendall(request)
            answers.append(read_response(tls, head_request=request.startswith(b"HEAD")))
        return answers


def get(path: str = "/", host: str = "localhost", extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path.encode(), host.encode(), extra)


def dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_content_length_smuggles_nothing(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        answers = sequential(harness, proxy.port, [SMUGGLE, get("/next")])
        assert [a[0] for a in answers] == [200, 200]
        assert answers[1][1] == b"ok /next"
        assert [s.target for s in upstream.seen] == [b"/", b"/next"]
        assert upstream.seen[0].body == b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
        assert upstream.seen[0].field(b"content-length") == [b"43"]
        assert upstream.errors == []


def test_an_sni_with_crlf_never_becomes_header_lines(harness: Harness) -> None:
    openssl = require_tool("openssl")
    with raw_upstream() as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        for sni in ["a\r\nX-Injected: yes", "a\nX-Injected: yes", "bad name", "é.test"]:
            subprocess.run(
                [openssl, "s_client", "-quiet", "-ign_eof", "-connect", f"127.0.0.1:{proxy.port}",
                 "-servername", sni],
                input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=30, check=False,
            )  # fmt: skip
        for seen in upstream.seen:
            assert not seen.field(b"x-injected")
            assert seen.field(b"host") == [f"localhost:{upstream.port}".encode()]
        assert upstream.errors == []


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"POST"])
def test_after_a_502_the_connection_reads_the_next_request(harness: Harness, method: bytes) -> None:
    proxy = harness.start_proxy(str(dead_port()))
    request = b"%s / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n" % method
    answers = sequential(harness, proxy.port, [request, request, request])
    assert [a[0] for a in answers] == [502, 502, 502]


def test_after_a_404_the_connection_reads_the_next_request(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = harness.start_proxy(routes=(f"a.test={upstream.port}",))
        answers = sequential(harness, proxy.port, [get(host="b.test"), get(host="a.test")])
        assert [a[0] for a in answers] == [404, 200]


def test_a_client_closing_after_a_502_frees_its_slot(harness: Harness) -> None:
    proxy = harness.start_proxy(str(dead_port()), limits=("max_connections=3",))
    for _ in range(10):
        with tls_connection(harness, proxy.port) as tls:
            tls.sendall(get())
            assert read_response(tls)[0] == 502
    deadline = time.monotonic() + 5
    while proxy.state.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proxy.state.connections
    assert sequential(harness, proxy.port, [get()])[0][0] == 502


def resetting_upstream() -> socket.socket:
    """Accepts connections and resets each at once, as a dev server's dying backlog does."""
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)

    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return sock


@pytest.mark.parametrize("method", [b"GET", b"POST"])
def test_an_upstream_reset_at_accept_ends_in_an_answer(
    harness: Harness, method: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    sock = resetting_upstream()
    try:
        proxy = harness.start_proxy(str(sock.getsockname()[1]))
        body = b"" if method == b"GET" else b"hi"
        request = b"%s / HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s" % (
            method,
            len(body),
            body,
        )
        # A GET's connection stays open after the 502; a POST whose body was not taken
        # is answered with Connection: close.
        requests = [request, request] if method == b"GET" else [request]
        with caplog.at_level(logging.ERROR):
            for _ in range(20):
                answers = sequential(harness, proxy.port, requests)
                assert [a[0] for a in answers] == [502] * len(requests)
        assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    finally:
        sock.close()


def test_an_upstream_that_says_more_than_its_response_is_not_reused(harness: Harness) -> None:
    def chatty(seen: Seen) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n"

    with raw_upstream(chatty) as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        answers = sequential(harness, proxy.port, [get("/1"), get("/2"), get("/3")])
        assert answers == [(200, b"ok")] * 3
        assert upstream.connections == 3


def test_a_well_behaved_upstream_connection_is_reused(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        sequential(harness, proxy.port, [get("/1"), get("/2"), get("/3")])
        assert upstream.connections == 1


def test_an_unasked_101_is_a_502_not_an_aborted_client(harness: Harness) -> None:
    def switching(seen: Seen) -> bytes:
        if seen.target == b"/switch":
            return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"
        return ok(seen)

    with raw_upstream(switching) as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        assert sequential(harness, proxy.port, [get("/switch")])[0][0] == 502
        assert sequential(harness, proxy.port, [get("/fine")]) == [(200, b"ok /fine")]


def test_an_upstream_naming_content_length_in_connection_is_framed_for_the_client(
    harness: Harness,
) -> None:
    def sly(seen: Seen) -> bytes:
        return b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello"

    with raw_upstream(sly) as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        assert sequential(harness, proxy.port, [get(), get()]) == [(200, b"hello")] * 2


def test_transfer_encoding_ending_in_chunked_is_read_as_chunked(harness: Harness) -> None:
    def coded(seen: Seen) -> bytes:
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"

    with raw_upstream(coded) as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        with tls_connection(harness, proxy.port) as tls:
            tls.sendall(get(extra=b"Connection: close\r\n"))
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"\r\nTransfer-Encoding: gzip, chunked" in head
        assert body == b"3\r\nabc\r\n0\r\n\r\n"


def test_chunk_size_overflow_is_a_400(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        answer = exchange(
            harness,
            proxy.port,
            b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"10000000000000001\r\nx\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 400 ")


def test_paths_are_normalized_before_routing_and_prefix_replacement(harness: Harness) -> None:
    with raw_upstream() as api, raw_upstream() as other:
        proxy = harness.start_proxy(
            str(other.port), routes=(f"a.test/api=http://127.0.0.1:{api.port}/internal",)
        )
        answers = sequential(
            harness,
            proxy.port,
            [
                get("/api/x", "a.test"),
                get("/api/%2e%2e/secret", "a.test"),
                get("//api/./y", "a.test"),
            ],
        )
        assert [a[0] for a in answers] == [200, 200, 200]
        assert [s.target for s in api.seen] == [b"/internal/x", b"/internal/y"]
        assert [s.target for s in other.seen] == [b"/secret"]
        for bad in ["/api/../../secret", "/api/..%2f..%2fsecret", "/%zz"]:
            answer = exchange(harness, proxy.port, get(bad, "a.test"))
            assert answer.startswith(b"HTTP/1.1 400 "), bad
        assert len(api.seen) + len(other.seen) == 3


def test_absolute_form_is_sent_with_its_authority_as_host(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        request = b"GET HTTP://App.Test/x?y HTTP/1.1\r\nHost: other.test\r\n\r\n"
        assert sequential(harness, proxy.port, [request]) == [(200, b"ok /x?y")]
        assert upstream.seen[0].field(b"host") == [b"app.test"]
        assert upstream.seen[0].field(b"x-forwarded-host") == [b"app.test"]
        answer = exchange(harness, proxy.port, b"GET http://app.test/ HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ")


def test_fields_devtls_asserts_cannot_be_spoofed(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        extra = (
            b"X_Forwarded_Proto: http\r\nX-Devtls-Tls-Version: SSLv3\r\nX-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: evil.test\r\n"
        )
        sequential(harness, proxy.port, [get(extra=extra)])
        [seen] = upstream.seen
        names = [n for n, _ in seen.headers]
        assert not [n for n in names if b"_" in n or n.startswith(b"x-devtls-")]
        assert seen.field(b"x-forwarded-proto") == [b"https"]
        assert seen.field(b"x-forwarded-host") == [b"localhost"]


def test_h2c_and_http10_upgrades_are_not_tunnelled(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        h2c = get(
            extra=b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
        )
        old = b"GET / HTTP/1.0\r\nHost: localhost\r\nConnection: upgrade, keep-alive\r\nUpgrade: websocket\r\n\r\n"
        assert [a[0] for a in sequential(harness, proxy.port, [h2c, old])] == [200, 200]
        for seen in upstream.seen:
            assert not seen.field(b"upgrade")
            assert not seen.field(b"http2-settings")


def test_a_bare_port_reaches_a_dev_server_listening_on_ipv6_loopback_only(
    harness: Harness,
) -> None:
    if not socket.has_ipv6:
        message = "no IPv6 on this machine"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with raw_upstream(host="::1") as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        assert sequential(harness, proxy.port, [get("/v6"), get("/again")]) == [
            (200, b"ok /v6"),
            (200, b"ok /again"),
        ]
        port = upstream.port
    proxy = harness.start_proxy(str(port))  # a new one: the first still holds a connection
    status, body = sequential(harness, proxy.port, [get()])[0]
    assert status == 502
    assert f"127.0.0.1:{port} or [::1]:{port}".encode() in body


def test_a_raw_upstream_sees_one_request_per_request(harness: Harness) -> None:
    # Sanity of the fixture: pipelined requests reach it one by one, in order.
    with raw_upstream() as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        answer = exchange(
            harness, proxy.port, get("/1") + get("/2") + get("/3", extra=b"Connection: close\r\n")
        )
        assert answer.count(b"HTTP/1.1 200 OK") == 3
        assert [s.target for s in upstream.seen] == [b"/1", b"/2", b"/3"]
        assert isinstance(upstream, RawUpstream)


@pytest.mark.parametrize("answer", ["404", "502"])
def test_a_client_that_reads_no_local_answers_stops_being_read(
    harness: Harness, answer: str
) -> None:
    if answer == "404":
        proxy = harness.start_proxy(routes=("only.test=1",))
        request = get(host="other.test")
    else:
        proxy = harness.start_proxy(str(dead_port()))
        request = get()
    with tls_connection(harness, proxy.port) as tls:
        tls.settimeout(0.5)
        sent = 0
        deadline = time.monotonic() + 10
        # Pipelined requests, never an answer read: devtls stops reading, so sending stalls.
        while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
            try:
                tls.sendall(request * 64)
            except (TimeoutError, ssl.SSLError, OSError):
                break
            sent += len(request) * 64
        assert sent < 64 * 1024 * 1024

        async def buffered() -> int:
            [connection] = proxy.state.connections
            transport = connection.transport  # type: ignore[attr-defined]
            assert transport is not None
            return transport.get_write_buffer_size()

        assert harness.loop.run(buffered()) < 8 * 1024 * 1024


def test_thousands_of_pipelined_local_answers_all_come(harness: Harness) -> None:
    # Each answer used to start the next request one call deeper: about 230 pipelined
    # 404s reached the recursion limit and the connection died without a word.
    proxy = harness.start_proxy(routes=("only.test=1",))
    count = 3000
    answer = exchange(
        harness,
        proxy.port,
        get(host="other.test") * count + get(host="other.test", extra=b"Connection: close\r\n"),
    )
    assert answer.count(b"HTTP/1.1 404 ") == count + 1
