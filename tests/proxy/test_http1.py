"""The sans-IO HTTP/1.1 layer: framing, the RFC 9112 input rules, and a fuzz property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtls.errors import ProtocolError
from devtls.proxy import http1
from devtls.proxy.http1 import END, BodyKind, Data, RequestHead, RequestReader, ResponseReader


def events(reader: RequestReader | ResponseReader, data: bytes, *, eof: bool = False) -> list:
    reader.feed(data)
    if eof:
        reader.feed_eof()
    out = []
    while (event := reader.next_event()) is not None:
        out.append(event)
        if event is END:
            break
    return out


def body_of(evts: list) -> bytes:
    return b"".join(e.data for e in evts if isinstance(e, Data))


def test_simple_get() -> None:
    [head, end] = events(RequestReader(), b"GET /a?b HTTP/1.1\r\nHost: x.test\r\nX: y \r\n\r\n")
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.host, head.http11) == (b"GET", b"/a?b", b"x.test", True)
    assert head.headers == [(b"Host", b"x.test"), (b"X", b"y")]
    assert head.keep_alive
    assert end is END


def test_bytes_one_at_a_time() -> None:
    message = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    reader = RequestReader()
    collected = []
    for i in range(len(message)):
        reader.feed(message[i : i + 1])
        while (event := reader.next_event()) is not None:
            collected.append(event)
    assert isinstance(collected[0], RequestHead)
    assert body_of(collected) == b"hello"
    assert collected[-1] is END


def test_content_length_body_and_pipelining() -> None:
    reader = RequestReader()
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    first = events(reader, data)
    assert body_of(first) == b"abc"
    reader.next_message()
    [second, _] = events(reader, b"")
    assert second.target == b"/2"


def test_chunked_with_extensions_and_trailers() -> None:
    data = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3;name=value;q="x y"\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n'
    )
    evts = events(RequestReader(), data)
    assert body_of(evts) == b"abc"
    assert evts[-1] is END


def test_http10_keep_alive_rules() -> None:
    [head, _] = events(RequestReader(), b"GET / HTTP/1.0\r\n\r\n")
    assert not head.keep_alive
    assert head.host == b""
    [head, _] = events(RequestReader(), b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert head.keep_alive


def test_upgrade_and_expect() -> None:
    [head, _] = events(
        RequestReader(),
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
        b"Expect: 100-continue\r\n\r\n",
    )
    assert head.upgrade == b"websocket"
    assert head.expect_continue


def test_absolute_form_target() -> None:
    [head, _] = events(RequestReader(), b"GET http://other.test:8/p?q HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head.host == b"other.test:8"
    assert head.target == b"/p?q"


BAD_REQUESTS = [
    (
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "both",
    ),
    (
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        400,
        "duplicate",
    ),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", 400, "malformed"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, "malformed"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400, "malformed"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400, "malformed"),
    (
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
        "Transfer-Encoding",
    ),
    (
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        501,
        "Transfer-Encoding",
    ),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501, "Transfer-Encoding"),
    (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, "folding"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, "invalid character"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, "invalid character"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n", 400, "malformed header"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX\x01Y: b\r\n\r\n", 400, "malformed header"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400, "malformed header"),
    (b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request line"),
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "request line"),
    (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "version"),
    (b"GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/1.1\r\n\r\n", 400, "without Host"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "duplicate"),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "Host"),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "Host"),
    (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405, "CONNECT"),
    (b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400, "target"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "request line"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431, "too large"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431, "too many"),
    (
        b"GET / HTTP/1.1\r\nHost: a\r\n" + (b"X: " + b"a" * 7000 + b"\r\n") * 5 + b"\r\n",
        431,
        "too large",
    ),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "chunk size"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400, "chunk size"),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 17 + b"\r\n",
        400,
        "chunk size",
    ),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400, "CRLF"),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;\x00\r\n",
        400,
        "extension",
    ),
]


@pytest.mark.parametrize(("data", "status", "words"), BAD_REQUESTS)
def test_bad_requests_get_the_right_status(data: bytes, status: int, words: str) -> None:
    reader = RequestReader()
    with pytest.raises(ProtocolError) as excinfo:
        events(reader, data)
        # Bodies are only checked as they are read.
        while reader.next_event() is not None:
            pass
    assert excinfo.value.status_hint == status
    assert words.lower() in excinfo.value.message.lower()


def test_slow_oversized_head_is_refused_before_it_ends() -> None:
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\n")
    with pytest.raises(ProtocolError) as excinfo:
        for _ in range(100):
            reader.feed(b"X-Long: " + b"a" * 1000 + b"\r\n")
            reader.next_event()
    assert excinfo.value.status_hint == 431
    assert reader.buffered <= http1.MAX_HEAD_SIZE + 2000


def test_truncated_bodies_are_errors_at_eof() -> None:
    reader = RequestReader()
    with pytest.raises(ProtocolError):
        events(reader, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc", eof=True)


# -- responses ------------------------------------------------------------------------


def test_response_framings() -> None:
    reader = ResponseReader()
    reader.expect_response(head_request=False)
    evts = events(reader, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert evts[0].status == 200
    assert body_of(evts) == b"ok"
    reader.expect_response(head_request=True)
    evts = events(reader, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
    assert evts[0].body is BodyKind.NONE
    assert evts[-1] is END
    reader.expect_response(head_request=False)
    evts = events(reader, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")
    assert evts[-1] is END


def test_response_until_close_and_informational() -> None:
    reader = ResponseReader()
    reader.expect_response(head_request=False)
    evts = events(
        reader, b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.0 200 OK\r\n\r\nall"
    )
    heads = [e for e in evts if isinstance(e, http1.ResponseHead)]
    assert [h.status for h in heads] == [103, 200]
    assert heads[-1].body is BodyKind.UNTIL_CLOSE
    assert not heads[-1].keep_alive
    assert body_of(evts) == b"all"
    evts = events(reader, b" of it", eof=True)
    assert body_of(evts) == b" of it"
    assert evts[-1] is END


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ],
)
def test_bad_responses_become_502(data: bytes) -> None:
    reader = ResponseReader()
    reader.expect_response(head_request=False)
    with pytest.raises(ProtocolError) as excinfo:
        events(reader, data)
    assert excinfo.value.status_hint == 502


def test_upstream_closing_without_response_is_502() -> None:
    reader = ResponseReader()
    reader.expect_response(head_request=False)
    with pytest.raises(ProtocolError, match="without a response"):
        events(reader, b"", eof=True)


# -- properties -----------------------------------------------------------------------

VALID = [
    b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
]


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, value in edits:
        if not buffer:
            break
        index = position % len(buffer)
        if kind == 0:
            buffer[index] = value
        elif kind == 1:
            del buffer[index]
        else:
            buffer.insert(index, value)
    return bytes(buffer)


def drive(data: bytes, split: int) -> list:
    """Feed in two pieces, then EOF; every outcome is events or our ProtocolError."""
    reader = RequestReader()
    out: list = []
    for piece in (data[:split], data[split:]):
        reader.feed(piece)
        while (event := reader.next_event()) is not None:
            out.append(event)
            if event is END:
                reader.next_message()
    reader.feed_eof()
    while (event := reader.next_event()) is not None:
        out.append(event)
        if event is END:
            reader.next_message()
    return out


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.integers(0, 200),
)
def test_mutated_requests_parse_or_raise_protocol_error(
    base: bytes, edits: list[tuple[int, int, int]], split: int
) -> None:
    data = mutate(base, edits)
    try:
        drive(data, split)
    except ProtocolError as exc:
        assert 400 <= exc.status_hint < 600


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 300))
def test_random_bytes_parse_or_raise_protocol_error(data: bytes, split: int) -> None:
    try:
        drive(data, split)
    except ProtocolError as exc:
        assert 400 <= exc.status_hint < 600


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=50), max_size=5),
    st.lists(
        st.tuples(
            st.from_regex(rb"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True),
            st.from_regex(rb"[!-~]([ !-~]{0,20}[!-~])?", fullmatch=True),
        ),
        max_size=5,
    ),
    st.booleans(),
    st.integers(1, 40),
)
def test_framing_round_trips(
    chunks: list[bytes], headers: list[tuple[bytes, bytes]], chunked: bool, step: int
) -> None:
    """What the reader yields, re-encoded as the forwarder does, reads back the same."""
    headers = [(n, v) for n, v in headers if n.lower() not in {
        b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect"}]  # fmt: skip
    body = b"".join(chunks)
    framing = (
        [(b"Transfer-Encoding", b"chunked")]
        if chunked
        else [(b"Content-Length", b"%d" % len(body))]
    )
    wire = http1.encode_head(b"PUT /r HTTP/1.1", [(b"Host", b"h"), *headers, *framing])
    wire += (
        b"".join(b"".join(http1.chunk(c)) for c in chunks) + http1.LAST_CHUNK if chunked else body
    )

    def parse(data: bytes) -> tuple[RequestHead, bytes]:
        reader = RequestReader()
        evts = []
        for i in range(0, len(data), step):
            reader.feed(data[i : i + step])
            while (event := reader.next_event()) is not None:
                evts.append(event)
        assert evts[-1] is END
        return evts[0], body_of(evts)

    head, parsed_body = parse(wire)
    assert parsed_body == body
    assert head.headers[1 : 1 + len(headers)] == headers
    # Re-encode as the forwarder does (our own chunk framing) and parse again.
    again = http1.encode_head(b"PUT /r HTTP/1.1", head.headers)
    again += (
        b"".join(b"".join(http1.chunk(c)) for c in [parsed_body] if c) + http1.LAST_CHUNK
        if chunked
        else parsed_body
    )
    head2, body2 = parse(again)
    assert body2 == body
    assert head2.headers == head.headers


_FIELD_BYTES = st.sampled_from([bytes([c]) for c in b'aZ-: \t\r\n\x00\x7f\xff"='] + [b"\r\n"])


@settings(max_examples=400)
@given(st.lists(_FIELD_BYTES, max_size=40).map(b"".join))
def test_whole_block_and_line_by_line_field_parsing_agree(body: bytes) -> None:
    # The fast path (one regular expression over the block) must accept exactly what the
    # line-by-line path accepts, with the same fields.
    block = body if body.endswith(b"\n") else body + b"\n"

    def outcome(parse: object) -> object:
        try:
            return parse(block, 100, 431)  # type: ignore[operator]
        except ProtocolError:
            return "refused"

    assert outcome(http1._parse_fields) == outcome(http1._parse_field_lines)
