"""The sans-IO forwarding rules: what reaches an upstream is framed, addressed and routed
exactly as devtls parsed it, whatever the client put in Connection, Host, the SNI or the path.

Each property re-parses devtls's output with devtls's own reader, as the app would read it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtls.config import Route, Upstream, parse_route
from devtls.errors import ProtocolError
from devtls.proxy import forwarding
from devtls.proxy.forwarding import ClientSide
from devtls.proxy.http1 import (
    END,
    BodyKind,
    Data,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
)
from devtls.proxy.routes import Router, upstream_target

UPSTREAM = Upstream("http", "localhost", 3000)
CLIENT = ClientSide("127.0.0.1", "app.test", 8443)


def parse_request(data: bytes) -> tuple[RequestHead, bytes, bytes]:
    """The head, the body, and whatever follows the first request."""
    reader = RequestReader()
    reader.feed(data)
    reader.feed_eof()
    head = reader.next_event()
    assert isinstance(head, RequestHead)
    body = b""
    while (event := reader.next_event()) is not END:
        assert isinstance(event, Data)
        body += event.data
    return head, body, reader.take_buffered()


def parse_response(data: bytes, *, head_request: bool = False) -> ResponseHead:
    reader = ResponseReader()
    reader.expect_response(head_request=head_request)
    reader.feed(data)
    head = reader.next_event()
    assert isinstance(head, ResponseHead)
    return head


def forward(request: bytes, client: ClientSide = CLIENT, upstream: Upstream = UPSTREAM) -> bytes:
    """What the upstream receives for ``request`` (head, then the body as devtls frames it)."""
    head, body, rest = parse_request(request)
    target = upstream_target(None, upstream, head.target.decode("latin-1")).encode("latin-1")
    out = forwarding.upstream_request_head(head, target, client, upstream)
    if head.body is BodyKind.CHUNKED:
        out += (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        out += body
    return out + rest


def fields(head: RequestHead | ResponseHead, name: bytes) -> list[bytes]:
    return [v for n, v in head.headers if n.lower() == name]


SMUGGLE = (
    b"POST / HTTP/1.1\r\nHost: localhost\r\nConnection: content-length\r\nContent-Length: 43\r\n"
    b"\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
)


def test_connection_cannot_remove_the_framing() -> None:
    upstream_sees = forward(SMUGGLE)
    head, body, rest = parse_request(upstream_sees)
    assert fields(head, b"content-length") == [b"43"]
    assert body == b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
    assert rest == b""


FIELD_NAMES = [
    b"content-length",
    b"transfer-encoding",
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"forwarded",
    b"upgrade",
    b"keep-alive",
    b"close",
    b"te",
    b"x-app",
]


@given(
    tokens=st.lists(st.sampled_from(FIELD_NAMES), max_size=5),
    chunked=st.booleans(),
    body=st.binary(max_size=64),
    absolute=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_whatever_connection_names_the_upstream_reads_one_request(
    tokens: list[bytes], chunked: bool, body: bytes, absolute: bool
) -> None:
    target = b"http://app.test/p?q" if absolute else b"/p?q"
    framing = (
        b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % len(body)
    )
    encoded = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    request = (
        b"POST %s HTTP/1.1\r\nHost: other.test\r\nConnection: %s\r\n%sX-App: 1\r\n"
        b"X-Forwarded-Proto: http\r\n\r\n%s"
        % (target, b", ".join(tokens) or b"x", framing, encoded if chunked else body)
    )
    head, got_body, rest = parse_request(forward(request))
    assert got_body == body
    assert rest == b""
    assert fields(head, b"host") == [b"app.test" if absolute else b"other.test"]
    assert fields(head, b"x-forwarded-proto") == [b"https"]
    assert head.target == b"/p?q"
    assert len(fields(head, b"content-length") + fields(head, b"transfer-encoding")) == 1


def test_absolute_form_replaces_host_after_checking_both() -> None:
    head, _, _ = parse_request(forward(b"GET HTTP://App.Test:8443/x HTTP/1.1\r\nHost: a\r\n\r\n"))
    assert fields(head, b"host") == [b"app.test:8443"]
    for bad, words in [
        (b"GET http://app.test/x HTTP/1.1\r\n\r\n", "without Host"),
        (b"GET http://app.test/x HTTP/1.1\r\nHost: a b\r\n\r\n", "Host"),
        (b"GET http://a@app.test/x HTTP/1.1\r\nHost: a\r\n\r\n", "user"),
        (b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", "host"),
        (b"GET http://app.test:99999/ HTTP/1.1\r\nHost: a\r\n\r\n", "host"),
    ]:
        with pytest.raises(ProtocolError, match=words) as info:
            parse_request(bad)
        assert info.value.status_hint == 400
    head, _, _ = parse_request(b"GET http://app.test?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (head.host, head.target, head.path) == (b"app.test", b"/?x=1", b"/")
    # HTTP/1.0 may leave Host out of an absolute-form request.
    head, _, _ = parse_request(b"GET http://app.test/ HTTP/1.0\r\n\r\n")
    assert head.host == b"app.test"


@pytest.mark.parametrize(
    "sni",
    ["a\r\nX-Injected: yes", "bad name", "é.test", "a" * 300, "", "x\x00y", "-a.test", "a..b"],
)
def test_an_sni_that_is_not_a_host_name_never_becomes_a_header(sni: str) -> None:
    client = ClientSide("127.0.0.1", sni, 8443)
    upstream_sees = forward(b"GET / HTTP/1.0\r\n\r\n", client)
    head, _, rest = parse_request(upstream_sees)
    assert fields(head, b"host") == [b"localhost:3000"]
    assert fields(head, b"x-forwarded-host") == [b"localhost:3000"]
    assert b"X-Injected" not in upstream_sees
    assert rest == b""


def test_a_valid_sni_is_the_host_of_an_http10_request_without_one() -> None:
    head, _, _ = parse_request(forward(b"GET / HTTP/1.0\r\nHost:\r\n\r\n"))
    assert fields(head, b"host") == [b"app.test"]
    assert b'host="app.test"' in fields(head, b"forwarded")[0]


def test_fields_devtls_asserts_cannot_be_sent_by_a_client() -> None:
    head, _, _ = parse_request(
        forward(
            b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_Proto: http\r\nx_real_ip: 1.2.3.4\r\n"
            b"X-Devtls-Tls-Version: SSLv3\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Port: 1\r\n"
            b"X-Ok: 1\r\n\r\n"
        )
    )
    names = [n.lower() for n, _ in head.headers]
    assert not [n for n in names if b"_" in n or n.startswith(b"x-devtls-")]
    assert fields(head, b"x-forwarded-host") == [b"a"]
    assert fields(head, b"x-forwarded-port") == [b"8443"]
    assert fields(head, b"x-ok") == [b"1"]


def test_x_forwarded_for_and_forwarded_are_appended_to() -> None:
    head, _, _ = parse_request(
        forward(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=x\r\n\r\n"
        )
    )
    assert fields(head, b"x-forwarded-for") == [b"10.0.0.1, 127.0.0.1"]
    assert fields(head, b"forwarded") == [b'for=x, for=127.0.0.1;host="a";proto=https']


@pytest.mark.parametrize(
    ("request_bytes", "upgrade"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"websocket",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", None),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket, H2C\r\n\r\n",
            None,
        ),
        (b"GET / HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", None),
    ],
)
def test_which_upgrades_are_tunnelled(request_bytes: bytes, upgrade: bytes | None) -> None:
    head, _, _ = parse_request(request_bytes)
    assert head.upgrade == upgrade
    forwarded, _, _ = parse_request(forward(request_bytes))
    assert fields(forwarded, b"upgrade") == ([upgrade] if upgrade else [])


def test_a_malformed_upgrade_is_refused() -> None:
    with pytest.raises(ProtocolError, match="Upgrade"):
        parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: a b\r\n\r\n")


def test_routes_see_the_normalized_path_and_prefixes_are_replaced_after_it() -> None:
    route = parse_route("a.test/api=http://127.0.0.1:3000/internal")
    router = Router((route,), fallback=Upstream("http", "127.0.0.1", 4000))
    for raw, upstream_port, target in [
        (b"/api/x", 3000, "/internal/x"),
        (b"/api/../secret", 4000, "/secret"),
        (b"/api/%2e%2e/secret", 4000, "/secret"),
        (b"//api//x", 3000, "/internal/x"),
        (b"/api/./x?a=/../b", 3000, "/internal/x?a=/../b"),
    ]:
        head, _, _ = parse_request(b"GET %s HTTP/1.1\r\nHost: a.test\r\n\r\n" % raw)
        matched, upstream = router.match("a.test", head.path.decode())
        assert upstream is not None
        assert upstream.port == upstream_port, raw
        assert upstream_target(matched, upstream, head.target.decode()) == target
    with pytest.raises(ProtocolError, match="above the root"):
        parse_request(b"GET /api/../../secret HTTP/1.1\r\nHost: a.test\r\n\r\n")


def test_options_star_is_never_made_a_path() -> None:
    route = Route("a.test", "/", Upstream("http", "127.0.0.1", 3000, base_path="/internal"))
    head, _, _ = parse_request(b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert (head.target, head.path) == (b"*", b"*")
    assert upstream_target(route, route.upstream, "*") == "*"
    forwarded, _, _ = parse_request(forward(b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n"))
    assert forwarded.target == b"*"


def test_chunk_sizes_above_the_signed_64_bit_range_are_refused() -> None:
    def chunked(size: bytes) -> bytes:
        return b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\n" % size

    reader = RequestReader()
    reader.feed(chunked(b"7fffffffffffffff"))
    assert isinstance(reader.next_event(), RequestHead)
    assert reader.next_event() is None  # waiting for 2^63-1 bytes
    for size in (b"8000000000000000", b"ffffffffffffffff", b"1" + b"0" * 16):
        reader = RequestReader()
        reader.feed(chunked(size))
        reader.next_event()
        with pytest.raises(ProtocolError, match="chunk size") as info:
            reader.next_event()
        assert info.value.status_hint == 400
    reader = RequestReader()
    reader.feed(chunked(b"0000000000000000003") + b"abc\r\n0\r\n\r\n")
    reader.next_event()
    assert reader.next_event() == Data(b"abc")


# -- responses -------------------------------------------------------------------------------

GET = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")[0]
GET10 = parse_request(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")[0]
HEAD = parse_request(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")[0]
WS = parse_request(
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
)[0]


def test_an_upstream_naming_content_length_in_connection_still_frames_its_response() -> None:
    head = parse_response(
        b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n"
    )
    start = forwarding.final_head(GET, head, draining=False)
    client_sees = parse_response(start.data)
    assert client_sees.body is BodyKind.LENGTH
    assert client_sees.content_length == 5
    assert start.keep_alive
    assert not start.chunked


@pytest.mark.parametrize(
    ("encoding", "kind", "sent"),
    [
        (b"chunked", BodyKind.CHUNKED, b"chunked"),
        (b"gzip, chunked", BodyKind.CHUNKED, b"gzip, chunked"),
        (b"gzip\r\nTransfer-Encoding: chunked", BodyKind.CHUNKED, b"gzip, chunked"),
        (b"gzip", BodyKind.UNTIL_CLOSE, b"gzip, chunked"),
    ],
)
def test_a_transfer_encoding_ending_in_chunked_is_chunked(
    encoding: bytes, kind: BodyKind, sent: bytes
) -> None:
    head = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n" % encoding)
    assert head.body is kind
    start = forwarding.final_head(GET, head, draining=False)
    assert start.chunked
    assert fields(parse_response(start.data), b"transfer-encoding") == [sent]


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    ],
)
def test_ambiguous_response_framing_is_a_502(response: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_response(response)
    assert info.value.status_hint == 502


def test_http10_clients_get_close_delimited_bodies_or_a_502() -> None:
    head = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    start = forwarding.final_head(GET10, head, draining=False)
    assert (start.chunked, start.keep_alive) == (False, False)
    assert fields(parse_response(start.data), b"connection") == [b"close"]
    coded = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    with pytest.raises(ProtocolError):
        forwarding.final_head(GET10, coded, draining=False)


def test_head_and_304_keep_the_length_they_describe() -> None:
    head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", head_request=True)
    client_sees = forwarding.final_head(HEAD, head, draining=False).data
    assert b"Content-Length: 1234\r\n" in client_sees
    no_content = parse_response(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    assert b"Content-Length" not in forwarding.final_head(GET, no_content, draining=False).data


def test_an_unasked_101_is_a_502_and_an_asked_one_switches() -> None:
    head = parse_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    with pytest.raises(ProtocolError) as info:
        forwarding.switching_head(GET, head)
    assert info.value.status_hint == 502
    data = forwarding.switching_head(WS, head)
    assert data.startswith(b"HTTP/1.1 101 ")
    assert b"Connection: Upgrade\r\nUpgrade: websocket\r\n" in data


def test_informational_responses() -> None:
    early = parse_response(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nConnection: x\r\n\r\n")
    assert forwarding.informational_head(GET, early) == (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    )
    assert forwarding.informational_head(GET10, early) is None
    proceed = parse_response(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert forwarding.informational_head(GET, proceed) is None


def test_draining_closes_after_the_response() -> None:
    head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    start = forwarding.final_head(GET, head, draining=True)
    assert not start.keep_alive
    assert b"Connection: close\r\n" in start.data


# -- the decisions around an exchange ---------------------------------------------------------


def request_head(data: bytes) -> RequestHead:
    return parse_request(data)[0]


@given(
    method=st.sampled_from([b"GET", b"HEAD", b"PUT", b"DELETE", b"POST", b"PATCH", b"CONNECT"]),
    nothing_sent=st.booleans(),
    reused=st.booleans(),
    body_bytes_sent=st.integers(min_value=0, max_value=3),
)
def test_a_retry_is_safe_only_when_the_request_cannot_have_reached_the_app(
    method: bytes, nothing_sent: bool, reused: bool, body_bytes_sent: int
) -> None:
    safe = forwarding.retry_is_safe(
        method, nothing_sent=nothing_sent, reused=reused, body_bytes_sent=body_bytes_sent
    )
    if body_bytes_sent:
        assert not safe
    elif nothing_sent:
        assert safe
    else:
        assert safe == (reused and method in {b"GET", b"HEAD", b"PUT", b"DELETE"})


def test_a_request_is_bodiless_without_a_body_or_with_length_zero() -> None:
    assert forwarding.request_is_bodiless(request_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
    assert forwarding.request_is_bodiless(
        request_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    )
    assert not forwarding.request_is_bodiless(
        request_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
    )
    assert not forwarding.request_is_bodiless(
        request_head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    )


def test_devtls_sends_100_continue_to_http11_clients_whose_body_is_still_to_come() -> None:
    expecting = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    assert forwarding.sends_continue(request_head(expecting + b"x"), request_done=False)
    assert not forwarding.sends_continue(request_head(expecting + b"x"), request_done=True)
    old = expecting.replace(b"HTTP/1.1", b"HTTP/1.0")
    assert not forwarding.sends_continue(request_head(old + b"x"), request_done=False)


@given(close=st.booleans(), draining=st.booleans(), request_done=st.booleans())
def test_a_local_answer_keeps_the_connection_only_when_nothing_speaks_against_it(
    close: bool, draining: bool, request_done: bool
) -> None:
    keep = request_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    ending = request_head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    flags = {"close": close, "draining": draining, "request_done": request_done}
    assert forwarding.local_keep_alive(keep, **flags) == (
        not close and not draining and request_done
    )
    assert not forwarding.local_keep_alive(ending, **flags)
