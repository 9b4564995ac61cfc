"""One exchange, and an HTTP/1 connection running them, on fake transports: no sockets.

Each test drives ``H1Connection`` and ``UpstreamConnection`` through their asyncio callbacks
with the bytes a client and an upstream would send, and reads what devtls wrote to each.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable, Callable

from devtls.config import Limits, parse_route
from devtls.proxy.http1 import END, Data, RequestHead, RequestReader
from devtls.proxy.tunnel import TcpConnection
from devtls.proxy.upstream import UpstreamConnection

from .fakes import FakeTransport, client_connection, make_state, pooled_upstream, transport_of

GET = b"GET /page HTTP/1.1\r\nHost: app.test\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


async def turns(count: int = 5) -> None:
    """Let the pool's connect tasks run."""
    for _ in range(count):
        await asyncio.sleep(0)


def requests_seen(transport: FakeTransport) -> list[tuple[RequestHead, bytes]]:
    """The requests an upstream received, parsed back as the app would read them."""
    reader = RequestReader()
    reader.feed(transport.take())
    seen: list[tuple[RequestHead, bytes]] = []
    while (head := reader.next_event()) is not None:
        assert isinstance(head, RequestHead)
        body = b""
        while (event := reader.next_event()) is not END:
            assert isinstance(event, Data)
            body += event.data
        seen.append((head, body))
        reader.next_message()
    return seen


def test_keep_alive_requests_reuse_the_pooled_upstream_connection() -> None:
    async def scenario() -> None:
        state, pool = make_state()
        upstream = pooled_upstream(state)
        client, out = client_connection(state)
        for _ in range(2):
            client.data_received(GET)
            [(head, body)] = requests_seen(transport_of(upstream))
            assert (head.method, head.target, body) == (b"GET", b"/page", b"")
            assert dict(head.headers)[b"X-Forwarded-Proto"] == b"https"
            upstream.data_received(OK)
            answer = out.take()
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert answer.endswith(b"\r\n\r\nok")
            assert b"Connection: close" not in answer
        assert not out.closing
        assert pool.opened == []
        assert pool.idle[str(upstream.key)] == [upstream]

    run(scenario)


def test_a_request_body_is_streamed_and_chunked_responses_rechunked() -> None:
    async def scenario() -> None:
        state, _ = make_state()
        upstream = pooled_upstream(state)
        client, out = client_connection(state)
        client.data_received(b"POST /f HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nab")
        client.data_received(b"cde")
        [(head, body)] = requests_seen(transport_of(upstream))
        assert (head.method, body) == (b"POST", b"abcde")
        upstream.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        upstream.data_received(b"3\r\nabc\r\n0\r\n\r\n")
        answer = out.take()
        assert b"Transfer-Encoding: chunked\r\n" in answer
        assert answer.endswith(b"3\r\nabc\r\n0\r\n\r\n")
        assert not out.closing

    run(scenario)


def test_no_route_is_a_local_404_and_the_connection_goes_on() -> None:
    async def scenario() -> None:
        state, _ = make_state(None, routes=(parse_route("api.test=3001"),))
        client, out = client_connection(state)
        client.data_received(GET)
        answer = out.take()
        assert answer.startswith(b"HTTP/1.1 404 ")
        assert b"devtls: no route for host 'app.test'." in answer
        assert b"api.test" in answer
        assert not out.closing
        client.data_received(b"HEAD / HTTP/1.1\r\nHost: other.test\r\n\r\n")
        head_only = out.take()
        assert head_only.startswith(b"HTTP/1.1 404 ")
        assert head_only.endswith(b"\r\n\r\n")  # a HEAD answer has no body

    run(scenario)


def test_an_upstream_that_cannot_be_reached_is_a_502_then_the_next_request_works() -> None:
    async def scenario() -> None:
        state, pool = make_state()
        pool.outcomes = [ConnectionRefusedError(111, "Connection refused"), None]
        client, out = client_connection(state)
        client.data_received(GET)
        assert out.take() == b""
        await turns()
        answer = out.take()
        assert answer.startswith(b"HTTP/1.1 502 ")
        assert b"devtls: nothing is listening on 127.0.0.1:3000" in answer
        assert not out.closing
        client.data_received(GET)
        await turns()
        [upstream] = pool.opened
        [(head, _)] = requests_seen(transport_of(upstream))
        assert head.target == b"/page"
        upstream.data_received(OK)
        assert out.take().endswith(b"\r\n\r\nok")

    run(scenario)


def test_an_idempotent_request_is_retried_when_a_reused_connection_was_closed() -> None:
    async def scenario() -> None:
        state, pool = make_state()
        stale = pooled_upstream(state)
        client, out = client_connection(state)
        client.data_received(GET)
        assert len(requests_seen(transport_of(stale))) == 1
        stale.connection_lost(None)  # the upstream had closed it as it was reused
        assert out.take() == b""
        await turns()
        [fresh] = pool.opened
        assert len(requests_seen(transport_of(fresh))) == 1
        fresh.data_received(OK)
        answer = out.take()
        assert answer.count(b"HTTP/1.1") == 1
        assert answer.endswith(b"\r\n\r\nok")

    run(scenario)


def test_a_post_is_not_retried_on_a_reused_connection_but_answered_502() -> None:
    async def scenario() -> None:
        state, pool = make_state()
        stale = pooled_upstream(state)
        client, out = client_connection(state)
        client.data_received(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n")
        stale.connection_lost(None)
        await turns()
        assert pool.opened == []
        answer = out.take()
        assert answer.startswith(b"HTTP/1.1 502 ")
        assert b"closed the connection without answering" in answer

    run(scenario)


def test_an_upstream_breaking_http_mid_response_cuts_the_client_connection() -> None:
    async def scenario() -> None:
        state, _ = make_state()
        upstream = pooled_upstream(state)
        client, out = client_connection(state)
        client.data_received(GET)
        upstream.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
        upstream.data_received(b"zz\r\n")  # not a chunk size
        assert out.aborted
        assert transport_of(upstream).closing

    run(scenario)


def test_a_101_joins_client_and_upstream_into_a_tunnel() -> None:
    async def scenario() -> None:
        state, _ = make_state()
        upstream = pooled_upstream(state)
        client, out = client_connection(state)
        up = transport_of(upstream)
        client.data_received(
            b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\nearly"
        )
        [(head, _)] = requests_seen(up)
        assert head.upgrade == b"websocket"
        upstream.data_received(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\nhello"
        )
        answer = out.take()
        assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert answer.endswith(b"\r\n\r\nhello")
        assert up.take() == b"early"
        client.data_received(b"\x81\x02hi")
        assert up.take() == b"\x81\x02hi"
        upstream.data_received(b"\x81\x02yo")
        assert out.take() == b"\x81\x02yo"
        # Half-closes pass through; the client connection ends when both sides have.
        assert client.eof_received() is True
        assert up.eof_written
        assert upstream.eof_received() is False
        assert out.eof_written
        assert out.closing

    run(scenario)


def test_a_tcp_tunnel_keeps_what_either_side_sent_before_the_upstream_was_open() -> None:
    async def scenario() -> None:
        state, pool = make_state(tcp=True)
        out = FakeTransport()
        client = TcpConnection(state)
        client.connection_made(out)  # type: ignore[arg-type]
        assert not out.reading  # paused while the upstream connection opens
        client.data_received(b"from client")
        pool.outcomes = [b"greeting"]
        await turns()
        [upstream] = pool.opened
        assert isinstance(upstream, UpstreamConnection)
        assert transport_of(upstream).take() == b"from client"
        assert out.reading
        assert out.take() == b"greeting"
        upstream.data_received(b"more")
        assert out.take() == b"more"
        client.connection_lost(None)
        assert transport_of(upstream).closing

    run(scenario)


def test_an_upstream_that_stays_silent_is_a_504() -> None:
    async def scenario() -> None:
        state, _ = make_state(limits=Limits(upstream_timeout=0.01))
        upstream = pooled_upstream(state)
        client, out = client_connection(state)
        client.data_received(GET)
        await asyncio.sleep(0.05)
        answer = out.take()
        assert answer.startswith(b"HTTP/1.1 504 ")
        assert b"devtls: 127.0.0.1:3000 did not answer within 0.01 s" in answer
        assert out.closing
        assert transport_of(upstream).closing

    run(scenario)


def test_each_exchange_writes_one_access_log_line() -> None:
    async def scenario() -> None:
        log: list[str] = []
        state, _ = make_state(log=log)
        upstream = pooled_upstream(state)
        client, _ = client_connection(state)
        client.data_received(GET)
        upstream.data_received(OK)
        client.data_received(b"GET /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1\r\n\r\n")
        upstream.data_received(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        assert [line.rsplit(" ", 1)[0] for line in log] == [
            '127.0.0.1 "GET app.test/page" 200 2B',
            '127.0.0.1 "GET app.test/x" 413 0B',
        ]
        # The 413 came before the request's body: that body cannot be told from a next
        # request, so the connection ends, and the upstream connection is not pooled.
        assert client.closed
        assert transport_of(upstream).closing

    run(scenario)


def test_a_closed_connection_is_freed_without_the_cycle_collector() -> None:
    """No reference cycle outlives a connection: memory comes back as soon as it closes."""

    async def scenario() -> None:
        state, _ = make_state()
        upstream = pooled_upstream(state)
        gone: list[weakref.ref[object]] = []
        # One that finished a request, one closed mid-response, one that became a tunnel.
        for request, response in [
            (GET, OK),
            (GET, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart"),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n",
                b"HTTP/1.1 101 Switching\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n",
            ),
        ]:
            client, _ = client_connection(state)
            if upstream.closed:
                upstream = pooled_upstream(state)
            client.data_received(request)
            upstream.data_received(response)
            client.connection_lost(None)
            gone.append(weakref.ref(client))
            del client
        tcp_state, _ = make_state(tcp=True)
        tcp = TcpConnection(tcp_state)
        tcp.connection_made(FakeTransport())  # type: ignore[arg-type]
        await turns()
        tcp.connection_lost(None)
        gone.append(weakref.ref(tcp))
        del tcp
        assert [ref() for ref in gone] == [None] * len(gone)

    gc.disable()
    try:
        run(scenario)
    finally:
        gc.enable()


def test_requests_beyond_max_upstream_connections_wait_for_a_free_one() -> None:
    async def scenario() -> None:
        state, pool = make_state(limits=Limits(max_upstream_connections=2))
        clients = [client_connection(state) for _ in range(3)]
        for client, _ in clients:
            client.data_received(GET)
        await turns()
        assert len(pool.opened) == 2  # the third request waits
        first, second = pool.opened
        transport_of(first).take()  # the first request
        first.data_received(OK)
        assert clients[0][1].take().endswith(b"ok")
        # The freed connection goes to the request that waited, not to the idle list.
        [(head, _)] = requests_seen(transport_of(first))
        assert head.target == b"/page"
        assert pool.idle.get(first.key, []) == []
        first.data_received(OK)
        assert clients[2][1].take().endswith(b"ok")
        # A connection that closes passes its slot on as well: a new one opens for the waiter.
        clients[0][0].data_received(GET)  # takes the idle one
        clients[2][0].data_received(GET)  # waits
        await turns()
        assert len(pool.opened) == 2
        second.connection_lost(None)  # the second client is answered 502 for it
        assert clients[1][1].take().startswith(b"HTTP/1.1 502 ")
        await turns()
        assert len(pool.opened) == 3
        assert pool.busy[first.key] == 2

    run(scenario)


def test_a_connection_paused_for_a_full_client_is_read_again_once_pooled() -> None:
    """The response ended while the client's send buffer was full: the pooled connection must
    not stay paused for whoever takes it next (it would wait for upstream_timeout)."""

    async def scenario() -> None:
        state, pool = make_state()
        upstream = pooled_upstream(state)
        client, _ = client_connection(state)
        client.data_received(GET)
        client.pause_writing()
        assert not transport_of(upstream).reading
        upstream.data_received(OK)
        assert pool.idle[upstream.key] == [upstream]
        assert transport_of(upstream).reading
        other, out = client_connection(state)
        other.data_received(GET)
        upstream.data_received(OK)
        assert out.take().endswith(b"ok")

    run(scenario)


def test_an_exchange_started_while_the_client_is_full_starts_its_upstream_paused() -> None:
    async def scenario() -> None:
        state, _ = make_state()
        upstream = pooled_upstream(state)
        client, out = client_connection(state)
        client.pause_writing()  # the answers so far sit unread
        client.data_received(GET)  # a pipelined request, read before reading paused
        assert not transport_of(upstream).reading
        client.resume_writing()
        assert transport_of(upstream).reading
        upstream.data_received(OK)
        assert out.take().endswith(b"ok")

    run(scenario)
