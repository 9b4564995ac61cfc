"""Hostile HTTP/2 clients through the real forwarder (RFC 9113 10.5): each is bounded and
answered as nginx and Caddy answer it, nothing it sends reaches the app unless well-formed, and
a fresh client is still served by the same proxy afterwards.

Attacks meant to be read whole are written in one piece and the client then only reads: a
server that closes with bytes still unread sends a TCP reset, and the client's kernel drops
the GOAWAY it had received. Attacks written until the server gives up assert the close.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from devtls.proxy import h2 as h2_front
from devtls.proxy.flow import ANSWERS_WAIT
from devtls.proxy.h2 import (
    CONTROL_BACKLOG,
    FLOOD_BURST,
    MAX_CONCURRENT_STREAMS,
    RESET_ALLOWANCE,
    STREAM_HARD_LIMIT,
)
from devtls.proxy.server import RunningServer
from tests.conftest import wait_for
from tests.proxy.conftest import Harness
from tests.proxy.h2client import Fields, H2Client, Received, frame_bytes, get, request_fields
from tests.proxy.rawupstream import RawUpstream, Seen, ok, raw_upstream
from tests.routerprocess import free_port

SETTINGS_MAX_CONCURRENT_STREAMS = 3
SETTINGS_INITIAL_WINDOW_SIZE = 4
SETTINGS_MAX_HEADER_LIST_SIZE = 6
FRAME_DATA = 0x0
# Paths the raw upstream answers only after a while: the streams stay in flight meanwhile.
SLOW = b"/slow"
BIG_BODY = 10_000_000


def answers(seen: Seen) -> bytes:
    if seen.target.startswith(SLOW):
        time.sleep(1)
    elif seen.target.startswith(b"/bytes/"):
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG_BODY
        return head + b"x" * BIG_BODY
    return ok(seen)


def start(h: Harness, upstream: RawUpstream, *limits: str) -> RunningServer:
    return h.start_proxy(str(upstream.port), limits=limits)


def connect(proxy: RunningServer, h: Harness, **options: object) -> H2Client:
    client = H2Client(proxy.port, h.ca_file, **options)  # type: ignore[arg-type]
    client.handshake()
    return client


def still_serves(h: Harness, proxy: RunningServer) -> None:
    """A fresh, well-behaved client (frames by the h2 library) gets its 200."""
    assert get(proxy.port, h.ca_file) == (200, b"ok /")


def still_serves_http1(h: Harness, proxy: RunningServer) -> None:
    context = ssl.create_default_context(cafile=str(h.ca_file))
    with (
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    assert answer.endswith(b"\r\n\r\nok /")


def logged(h: Harness, text: str) -> bool:
    return any(text in line for line in h.log)


def assert_goaway(received: Received, code: ErrorCodes, data: bytes | None = None) -> None:
    goaway = received.goaway
    assert goaway is not None, received.frames[-5:]
    assert goaway.error_code == code, goaway
    if data is not None:
        assert goaway.additional_data == data
    assert received.closed


# -- 1. rapid reset (CVE-2023-44487) ---------------------------------------------------------


def test_rapid_reset_in_one_burst_gets_enhance_your_calm(harness: Harness) -> None:
    with raw_upstream(answers) as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            pairs = (
                client.headers_frame(i, request_fields(SLOW)) + client.rst_frame(i)
                for i in range(1, 6000, 2)
            )
            client.send(b"".join(pairs))  # 3,000 streams opened and cancelled
            received = client.read_until_closed()
        assert_goaway(received, ErrorCodes.ENHANCE_YOUR_CALM, b"too many streams reset")
        assert not received.of(HeadersFrame)
        assert logged(harness, "too many streams reset -> GOAWAY ENHANCE_YOUR_CALM")
        # Each stream started costs at most one upstream connection; none had its request
        # answered, so at most the allowance was started.
        assert upstream.connections <= RESET_ALLOWANCE + 1
        assert len(upstream.seen) <= RESET_ALLOWANCE + 1
        still_serves(harness, proxy)


def test_rapid_reset_written_until_closed_is_bounded(harness: Harness) -> None:
    """50 streams opened, then cancelled once their requests are on their way upstream (the
    attack's real shape: the upstream works for nothing), again and again."""
    with raw_upstream(answers) as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            stream_id = 1
            while stream_id < 20_000 and not client.received.closed:
                ids = range(stream_id, stream_id + 100, 2)
                stream_id += 100
                opened = b"".join(client.headers_frame(i, request_fields(SLOW)) for i in ids)
                if not client.send(opened):
                    break
                client.read(timeout=0.02)
                if not client.send(b"".join(client.rst_frame(i) for i in ids)):
                    break
                client.read(timeout=0.005)
            client.read_until_closed(timeout=2)
        assert client.received.closed
        assert stream_id < 20_000
        assert logged(harness, "too many streams reset -> GOAWAY ENHANCE_YOUR_CALM")
        # The slow upstream answered none of them before its reset: the allowance bounds them,
        # plus the streams still open when it ran out (whose connects had started: how many of
        # the earlier ones idle connections could take depends on the loop's timing).
        bound = RESET_ALLOWANCE + MAX_CONCURRENT_STREAMS + 1
        assert upstream.connections <= bound
        assert len(upstream.seen) <= bound
        still_serves(harness, proxy)


# -- 2. CONTINUATION flood (CVE-2024-27316) ------------------------------------------------------


def test_continuation_flood_gets_protocol_error(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            head = client.headers_frame(1, request_fields(b"/x"), end_headers=False)
            client.send(head + ContinuationFrame(1).serialize() * 1000)
            received = client.read_until_closed()
        # h2 holds at most 64 CONTINUATION frames of a header block.
        assert_goaway(received, ErrorCodes.PROTOCOL_ERROR)
        assert received.goaway is not None
        assert received.goaway.last_stream_id == 0
        assert logged(harness, "Too many continuation frames received. -> GOAWAY PROTOCOL_ERROR")
        assert upstream.seen == []
        still_serves(harness, proxy)


def test_endless_full_continuation_frames_are_cut_off(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            client.send(client.headers_frame(1, request_fields(b"/x"), end_headers=False))
            frame = ContinuationFrame(1, b"\x00" * 16384).serialize()
            limit = 64 << 20
            started = time.monotonic()
            while client.sent < limit and client.send(frame):
                pass
            elapsed = time.monotonic() - started
        # 64 frames of 16 KiB (1 MiB) are all h2 holds; the rest is what the sockets buffer.
        assert client.write_failed
        assert client.sent < 8 << 20
        assert elapsed < 5
        assert logged(harness, "Too many continuation frames received. -> GOAWAY PROTOCOL_ERROR")
        assert upstream.seen == []
        still_serves(harness, proxy)


# -- 3. HPACK bomb ------------------------------------------------------------------------------


@pytest.mark.parametrize("acknowledged", [True, False], ids=["settings-acked", "never-acked"])
def test_hpack_bomb_over_max_header_list_size(harness: Harness, acknowledged: bool) -> None:
    """One 4 KB dynamic-table entry referenced 9 times: 36 KiB decoded from 4 KB sent.

    The limit is the advertised 32 KiB (max_head_size) whether or not the client has
    acknowledged the SETTINGS that said so.
    """
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness, ack_settings=acknowledged) as client:
            [settings, *_] = client.received.of(SettingsFrame)
            assert settings.settings[SETTINGS_MAX_HEADER_LIST_SIZE] == 32 * 1024
            fields: Fields = [*request_fields(b"/x"), (b"x-big", b"a" * 4000)]
            block = client.encoder.encode(fields)  # x-big is now dynamic entry 62
            block += bytes([0x80 | 62]) * 8
            frame = HeadersFrame(1, block)
            frame.flags.add("END_HEADERS")
            frame.flags.add("END_STREAM")
            client.send(frame.serialize())
            received = client.read_until_closed()
        assert client.sent < 5000
        assert_goaway(received, ErrorCodes.ENHANCE_YOUR_CALM)
        assert logged(harness, "larger than 32768 has been received -> GOAWAY ENHANCE_YOUR_CALM")
        assert upstream.seen == []
        still_serves(harness, proxy)


# -- 4. floods of frames that ask for nothing ----------------------------------------------


def _settings(client: H2Client) -> bytes:
    return SettingsFrame(0).serialize()


def _ping(client: H2Client) -> bytes:
    return PingFrame(0, b"12345678").serialize()


def _priority(client: H2Client) -> bytes:
    return PriorityFrame(3, depends_on=0, stream_weight=15).serialize()


def _empty_data(client: H2Client) -> bytes:
    return DataFrame(1).serialize()


@pytest.mark.parametrize("flood", [_settings, _ping, _priority, _empty_data])
def test_flood_gets_enhance_your_calm(harness: Harness, flood) -> None:
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            before = len(client.received.frames)
            if flood is _empty_data:
                post = request_fields(b"/x", method=b"POST")
                client.send(client.headers_frame(1, post, end_stream=False))
            client.send(flood(client) * (FLOOD_BURST + 500))
            received = client.read_until_closed()
        assert_goaway(
            received, ErrorCodes.ENHANCE_YOUR_CALM, b"too many frames that ask for nothing"
        )
        # h2 acknowledges the SETTINGS and PINGs of a read before devtls counts them: what the
        # flood got answered is at most what it sent, and it stops with that read.
        answered = received.frames[before:-1]
        assert len(answered) <= FLOOD_BURST + 500
        assert all(isinstance(f, (SettingsFrame, PingFrame)) for f in answered)
        assert logged(harness, "too many frames that ask for nothing -> GOAWAY ENHANCE_YOUR_CALM")
        assert upstream.seen == []
        still_serves(harness, proxy)


def test_ping_flood_from_a_client_that_never_reads_is_ended(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        client = connect(proxy, harness, receive_buffer=4096)
        with client:
            pings = _ping(client) * 1000
            started = time.monotonic()
            while client.sent < 64 << 20 and time.monotonic() - started < 5:
                if not client.send(pings):
                    break
            elapsed = time.monotonic() - started
        assert client.write_failed  # the server closed the connection
        assert elapsed < 5
        assert client.sent < 64 << 20
        assert logged(harness, "too many frames that ask for nothing -> GOAWAY ENHANCE_YOUR_CALM")
        still_serves(harness, proxy)


def test_pings_unanswered_stop_being_read(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no flood limit, a client that sends PINGs and reads no ACKs is no longer read
    once its ACKs fill the send buffer: devtls's memory stays bounded."""
    monkeypatch.setattr(h2_front, "FLOOD_BURST", 10**9)
    limit = 64 << 20
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness, receive_buffer=4096) as client:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            client.sock.settimeout(30)
            pings = _ping(client) * 1000

            async def small_send_buffers() -> None:
                # Else the kernel takes megabytes of ACKs before devtls's buffer sees any.
                for c in proxy.state.connections:
                    if isinstance(c, h2_front.H2Connection) and c.transport is not None:
                        sock = c.transport.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)

            harness.loop.run(small_send_buffers())

            def write() -> None:  # until the server stops reading (the write blocks)
                while client.sent < limit and client.send(pings):
                    pass

            writer = threading.Thread(target=write, daemon=True)
            writer.start()

            async def backlogs() -> list[tuple[int, int]]:
                return [
                    (
                        c.transport.get_write_buffer_size(),
                        c.gate._reasons & ANSWERS_WAIT if c.gate is not None else 0,
                    )
                    for c in proxy.state.connections
                    if isinstance(c, h2_front.H2Connection) and c.transport is not None
                ]

            def settled() -> bool:
                sent = client.sent
                time.sleep(0.3)
                return client.sent == sent

            try:
                assert wait_for(settled, 10)
                [(backlog, paused)] = harness.loop.run(backlogs())
            finally:
                # Wakes the blocked write with an error.
                socket.socket.shutdown(client.sock, socket.SHUT_RDWR)
                writer.join(5)
        assert client.sent < limit
        assert paused
        # One read's worth of ACKs may go out past the mark.
        assert CONTROL_BACKLOG < backlog < 2 * CONTROL_BACKLOG
        assert not logged(harness, "GOAWAY")
        still_serves(harness, proxy)


# -- 5. a client whose window stays shut -------------------------------------------------------


@pytest.mark.parametrize("window", [0, None], ids=["initial-window-0", "no-window-update"])
def test_zero_window_stall_resets_the_stream(harness: Harness, window: int | None) -> None:
    with raw_upstream(answers) as upstream:
        proxy = start(harness, upstream, "send_timeout=1")
        settings = {} if window is None else {SETTINGS_INITIAL_WINDOW_SIZE: window}
        with connect(proxy, harness, settings=settings) as client:
            started = time.monotonic()
            client.send(client.headers_frame(1, request_fields(b"/bytes/%d" % BIG_BODY)))
            received = client.read(lambda r: r.status(1) is not None)
            assert received.status(1) == 200
            # Meanwhile other clients are served.
            still_serves(harness, proxy)
            received = client.read(lambda r: r.ended(1), timeout=5)
            elapsed = time.monotonic() - started
            assert received.resets() == {1: ErrorCodes.CANCEL}
            assert len(received.body(1)) == (65535 if window is None else 0)
            assert elapsed < 4
            assert not received.closed  # the connection stays
        # The upstream connection was closed, not left to send the rest.
        assert wait_for(lambda: not upstream.threads[0].is_alive(), 3)
        assert upstream.seen[0].target == b"/bytes/%d" % BIG_BODY
        assert logged(
            harness, "HTTP/2 stream 1: the client took no response bytes for 1 s -> reset"
        )
        still_serves(harness, proxy)


# -- 6. more streams than SETTINGS_MAX_CONCURRENT_STREAMS ------------------------------------


def test_streams_over_the_limit_are_refused_one_by_one(harness: Harness) -> None:
    count = MAX_CONCURRENT_STREAMS + 50
    ids = range(1, 2 * count, 2)
    with raw_upstream(answers) as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            [settings, *_] = client.received.of(SettingsFrame)
            assert settings.settings[SETTINGS_MAX_CONCURRENT_STREAMS] == MAX_CONCURRENT_STREAMS
            client.send(b"".join(client.headers_frame(i, request_fields(SLOW)) for i in ids))
            received = client.read(lambda r: all(r.ended(i) for i in ids), timeout=5)
        refused = {i: ErrorCodes.REFUSED_STREAM for i in ids[MAX_CONCURRENT_STREAMS:]}
        # RFC 9113 5.1.2: a stream error; those within the limit are answered (as nginx does).
        assert received.resets() == refused
        assert [received.status(i) for i in ids[:MAX_CONCURRENT_STREAMS]] == [200] * 100
        assert received.goaway is None
        assert len(upstream.seen) == MAX_CONCURRENT_STREAMS
        still_serves(harness, proxy)


def test_streams_far_over_the_limit_end_the_connection(harness: Harness) -> None:
    with raw_upstream(answers) as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            ids = range(1, 2 * (STREAM_HARD_LIMIT + 50), 2)
            client.send(b"".join(client.headers_frame(i, request_fields(SLOW)) for i in ids))
            received = client.read_until_closed()
        # h2's own limit: a connection error, before devtls starts any of them.
        assert_goaway(received, ErrorCodes.PROTOCOL_ERROR)
        assert logged(harness, f"Max inbound streams is {STREAM_HARD_LIMIT}")
        assert len(upstream.seen) <= MAX_CONCURRENT_STREAMS
        still_serves(harness, proxy)


# -- 7. stream-ID misuse -----------------------------------------------------------------------

MISUSE = {
    "even-stream-id": (lambda c: c.headers_frame(2, request_fields()), ErrorCodes.PROTOCOL_ERROR),
    "stream-id-going-down": (
        lambda c: c.headers_frame(5, request_fields()) + c.headers_frame(3, request_fields()),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "data-on-stream-0": (lambda c: frame_bytes(FRAME_DATA, 0, 0, b"x"), ErrorCodes.PROTOCOL_ERROR),
    "data-on-idle-stream": (lambda c: c.data_frame(7, b"x"), ErrorCodes.PROTOCOL_ERROR),
    "rst-on-idle-stream": (lambda c: c.rst_frame(7), ErrorCodes.PROTOCOL_ERROR),
    "window-update-on-idle-stream": (
        lambda c: WindowUpdateFrame(7, window_increment=1).serialize(),
        ErrorCodes.PROTOCOL_ERROR,
    ),
}


@pytest.mark.parametrize("case", list(MISUSE))
def test_stream_id_misuse_gets_goaway(harness: Harness, case: str) -> None:
    frames, code = MISUSE[case]
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            client.send(frames(client))
            received = client.read_until_closed()
        assert_goaway(received, code)
        assert logged(harness, f"-> GOAWAY {code.name}")
        assert upstream.seen == []
        still_serves(harness, proxy)


def test_headers_on_a_closed_stream_gets_goaway_stream_closed(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            client.send(client.headers_frame(1, request_fields(b"/first")))
            assert client.read(lambda r: r.ended(1)).status(1) == 200
            client.send(client.headers_frame(1, request_fields(b"/again")))
            received = client.read_until_closed()
        # Closed by END_STREAM both ways: a connection error of type STREAM_CLOSED (RFC 9113
        # 5.1), as nginx and Go send it.
        assert_goaway(received, ErrorCodes.STREAM_CLOSED)
        assert logged(
            harness, "HTTP/2 error: StreamClosedError on stream 1 -> GOAWAY STREAM_CLOSED"
        )
        assert [s.target for s in upstream.seen] == [b"/first"]
        still_serves(harness, proxy)


# -- 8. the HTTP/2 preface on HTTP/1.1 -----------------------------------------------------------


@pytest.mark.parametrize("how", ["alpn-http/1.1", "no-alpn", "http1-only"])
def test_h2_preface_over_http1_gets_505(harness: Harness, how: str) -> None:
    with raw_upstream() as upstream:
        proxy = harness.start_proxy(str(upstream.port), http1_only=how == "http1-only")
        context = ssl.create_default_context(cafile=str(harness.ca_file))
        if how != "no-alpn":
            context.set_alpn_protocols(["h2", "http/1.1"] if how == "http1-only" else ["http/1.1"])
        started = time.monotonic()
        with (
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.selected_alpn_protocol() in (None, "http/1.1")
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
            answer = b""
            while chunk := tls.recv(65536):  # until the server closes
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
        assert b"\r\nConnection: close\r\n" in answer
        assert time.monotonic() - started < 2
        assert upstream.seen == []
        still_serves_http1(harness, proxy)


# -- 9. malformed requests -----------------------------------------------------------------------

# Refused by h2's validation of the field block (RFC 9113 8.2, 8.3): a connection error.
BY_H2 = {
    "cr-in-value": [*request_fields(b"/x"), (b"x-a", b"a\rb")],
    "lf-in-value": [*request_fields(b"/x"), (b"x-a", b"a\nb")],
    "nul-in-value": [*request_fields(b"/x"), (b"x-a", b"a\x00b")],
    "uppercase-name": [*request_fields(b"/x"), (b"X-A", b"b")],
    "connection": [*request_fields(b"/x"), (b"connection", b"keep-alive")],
    "te-gzip": [*request_fields(b"/x"), (b"te", b"gzip")],
    "authority-differs-from-host": [*request_fields(b"/x"), (b"host", b"other.test")],
    "no-path": request_fields(b"/x")[:3],
    "two-content-lengths": [
        *request_fields(b"/x", method=b"POST"),
        (b"content-length", b"1"),
        (b"content-length", b"2"),
    ],
    "pseudo-field-after-regular": [
        *request_fields(b"/x")[:2],
        (b"x-a", b"1"),
        *request_fields()[2:],
    ],
}


@pytest.mark.parametrize("case", list(BY_H2))
def test_malformed_field_block_gets_goaway(harness: Harness, case: str) -> None:
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            client.send(client.headers_frame(1, BY_H2[case]))
            received = client.read_until_closed()
        assert_goaway(received, ErrorCodes.PROTOCOL_ERROR)
        assert not received.of(HeadersFrame)
        assert upstream.seen == []
        still_serves(harness, proxy)


# Refused by devtls (h2fields): answered on the stream, the connection goes on.
BY_DEVTLS = {
    "absolute-form-path": (
        [*request_fields(b"/x")[:3], (b":path", b"https://localhost/x")],
        400,
        b"malformed :path\n",
    ),
    "connect": (
        [(b":method", b"CONNECT"), (b":authority", b"localhost:443")],
        405,
        b"CONNECT is not supported: this is not a forward proxy\n",
    ),
    "protocol-not-websocket": (
        [*request_fields(b"/x", method=b"CONNECT"), (b":protocol", b"h2c")],
        400,
        b"only WebSockets may use an extended CONNECT\n",
    ),
}


@pytest.mark.parametrize("case", list(BY_DEVTLS))
def test_malformed_request_is_answered_on_its_stream(harness: Harness, case: str) -> None:
    fields, status, body = BY_DEVTLS[case]
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            client.send(client.headers_frame(1, fields))
            received = client.read(lambda r: r.ended(1))
            assert (received.status(1), received.body(1)) == (status, body)
            # The same connection serves the next request.
            client.send(client.headers_frame(3, request_fields(b"/next")))
            received = client.read(lambda r: r.ended(3))
            assert (received.status(3), received.body(3)) == (200, b"ok /next")
        assert received.goaway is None
        assert [s.target for s in upstream.seen] == [b"/next"]
        # The access log line has the time it took, not the time since the clock's start.
        [line] = [line for line in harness.log if f'"- -" {status} ' in line]
        assert float(line.rsplit(" ", 1)[1].removesuffix("ms")) < 1000


@pytest.mark.parametrize(
    "pieces",
    [[b"abcdef"], [b"ab", b"cd"], [b"ab"]],
    ids=["longer-in-one-frame", "longer-in-two-frames", "shorter"],
)
def test_body_not_its_content_length_gets_goaway(harness: Harness, pieces: list[bytes]) -> None:
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            post = [*request_fields(b"/x", method=b"POST"), (b"content-length", b"3")]
            client.send(client.headers_frame(1, post, end_stream=False))
            # The head reaches the upstream first (its connection is then in use, not idle):
            # the body is cut, never completed.
            assert wait_for(lambda: upstream.heads == 1, 3)
            for i, piece in enumerate(pieces):
                client.send(client.data_frame(1, piece, end_stream=i == len(pieces) - 1))
                time.sleep(0.05)
            received = client.read_until_closed()
        assert_goaway(received, ErrorCodes.PROTOCOL_ERROR)
        assert logged(harness, "InvalidBodyLengthError")
        assert wait_for(lambda: not upstream.threads[0].is_alive(), 3)
        assert upstream.seen == []
        still_serves(harness, proxy)


def test_body_cut_short_once_answered_ends_only_its_stream(harness: Harness) -> None:
    # curl, answered before its upload is done (here a 502: nothing listens upstream), ends
    # its request with an empty DATA frame, short of its content-length. The answer is
    # complete: RFC 9113 8.1.1 makes that this stream's error, and the stream is done.
    proxy = harness.start_proxy(str(free_port()))
    with connect(proxy, harness) as client:
        post = [*request_fields(b"/upload", method=b"POST"), (b"content-length", b"100000")]
        client.send(client.headers_frame(1, post, end_stream=False))
        client.send(client.data_frame(1, b"x" * 16384))
        received = client.read(lambda r: r.ended(1))
        assert received.status(1) == 502
        client.send(client.data_frame(1, b"", end_stream=True))
        client.send(client.headers_frame(3, request_fields(b"/next")))
        received = client.read(lambda r: r.ended(3))
        assert received.status(3) == 502
    assert received.goaway is None, received.frames[-5:]
    assert not logged(harness, "HTTP/2 error"), harness.log


def test_cookie_crumbs_arrive_as_one_field(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = start(harness, upstream)
        with connect(proxy, harness) as client:
            crumbs = [(b"cookie", b"a=1"), (b"x-b", b"2"), (b"cookie", b"b=2"), (b"cookie", b"c=3")]
            client.send(client.headers_frame(1, [*request_fields(b"/x"), *crumbs]))
            assert client.read(lambda r: r.ended(1)).status(1) == 200
        [seen] = upstream.seen
        assert seen.field(b"cookie") == [b"a=1; b=2; c=3"]
        assert seen.field(b"x-b") == [b"2"]


# -- 10. a request body that stops coming ------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"ab"], ids=["nothing", "two-bytes"])
def test_stalled_request_body_gets_408(harness: Harness, sent: bytes) -> None:
    with raw_upstream() as upstream:
        proxy = start(harness, upstream, "body_timeout=1")
        with connect(proxy, harness) as client:
            started = time.monotonic()
            post = [*request_fields(b"/upload", method=b"POST"), (b"content-length", b"100")]
            client.send(client.headers_frame(1, post, end_stream=False))
            if sent:
                client.send(client.data_frame(1, sent))
            received = client.read(lambda r: r.ended(1))
            assert received.status(1) == 408
            assert received.body(1) == b"request body took too long\n"
            assert time.monotonic() - started < 3
            # The upstream connection, which had the head, is closed.
            assert wait_for(lambda: not upstream.threads[0].is_alive(), 3)
        assert upstream.seen == []
        assert logged(harness, '"POST localhost/upload" 408 ')
        still_serves(harness, proxy)


def test_a_connection_closed_on_a_client_that_reads_nothing_is_aborted(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing waits for the send buffer to drain; a client that never reads would keep the
    connection (and its max_connections slot) for good. After CLOSE_DRAIN_SECONDS it goes."""
    from devtls.proxy import tls

    monkeypatch.setattr(tls, "CLOSE_DRAIN_SECONDS", 0.5)
    proxy = harness.start_proxy(
        str(harness.upstream.port), limits=("send_timeout=1", "idle_timeout=1")
    )
    settings = {SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1}
    with connect(proxy, harness, settings=settings, receive_buffer=4096) as client:
        client.h2.increment_flow_control_window(2**31 - 1 - 65535)
        client.h2.send_headers(1, request_fields(b"/bytes/50000000"), end_stream=True)
        client.flush()

        async def open_connections() -> int:
            return len(proxy.state.connections)

        assert harness.loop.run(open_connections()) == 1
        # The stream stalls, is reset after send_timeout, the idle connection is closed
        # after idle_timeout with its send buffer still full, and aborted 0.5 s later.
        assert wait_for(lambda: harness.loop.run(open_connections()) == 0, 8)
    assert logged(harness, "the client took no response bytes")
    assert get(proxy.port, harness.ca_file) == (200, b"root")
