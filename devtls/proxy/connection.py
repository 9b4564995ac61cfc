"""One client connection and the upstream connections it uses, on asyncio protocols.

Bytes are moved by callbacks, not coroutines: a request's body goes to the upstream as it
arrives, a response's body to the client as it arrives, and each side stops reading while
the other side's send buffer is full. Framing comes from the sans-IO ``http1`` module.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from devtls.config import ServeConfig, Upstream
from devtls.errors import ProtocolError
from devtls.proxy import forwarding, http1
from devtls.proxy.certs import SNI_ATTRIBUTE
from devtls.proxy.forwarding import ClientSide
from devtls.proxy.heap import HeapTrimmer
from devtls.proxy.http1 import END, BodyKind, Data, RequestHead, ResponseHead
from devtls.proxy.routes import Router, upstream_target

log = logging.getLogger("devtls")

# Requests a retry may repeat: RFC 9110 9.2.2 idempotent methods.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# Below Node's default keepAliveTimeout (5 s): an idle upstream connection is dropped by us
# before the upstream drops it, which keeps reuse races rare.
UPSTREAM_IDLE_SECONDS = 4.0
MAX_IDLE_PER_UPSTREAM = 64
# What "localhost" means for an upstream, in the order tried (as Node and curl resolve it).
LOOPBACK_HOSTS = ("127.0.0.1", "::1")
# Bytes of pipelined or early request data held while the current exchange runs (reading
# stops above it; one read more may arrive: see the README's "Memory per connection").
MAX_CLIENT_BACKLOG = 64 * 1024
# --tcp: bytes an upstream sends before the client side is attached (SMTP, MySQL and SSH
# greetings, an h2 server's SETTINGS) are kept up to this, then the upstream is not read.
MAX_TUNNEL_EARLY = 64 * 1024
# Write-buffer marks, per side: above HIGH the other side stops reading until below LOW.
# The kernel's socket buffer does the bulk of the buffering (megabytes on loopback); ours only
# needs to keep it fed, as nginx's proxy_buffers (8 x 4/8 KiB) and uvicorn's 64 KiB
# HIGH_WATER_LIMIT do. 256 KiB cost a quarter of a MiB per slow reader, for no throughput.
WRITE_HIGH_WATER = 64 * 1024
WRITE_LOW_WATER = 16 * 1024


class Transport(Protocol):
    """What both asyncio transports and our TLS layer offer."""

    def write(self, data: bytes) -> None: ...
    def writelines(self, pieces: list[bytes]) -> None: ...
    def write_eof(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def set_write_buffer_limits(self, high: int | None = ..., low: int | None = ...) -> None: ...
    def get_extra_info(self, name: str, default: Any = ...) -> Any: ...


@dataclass
class ServerState:
    """What every connection of one server shares."""

    config: ServeConfig
    router: Router
    upstream_tls: ssl.SSLContext | None = None
    listen_port: int = 0
    connections: set[ClientConnection] = field(default_factory=set)
    draining: bool = False
    pool: UpstreamPool = field(init=False)
    heap: HeapTrimmer = field(init=False)
    write_log: Callable[[str], None] = field(default=lambda line: None)
    # Kept here because asyncio.get_running_loop() costs a getpid() system call on Linux,
    # twice per request otherwise.
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)

    def __post_init__(self) -> None:
        self.pool = UpstreamPool(self)
        self.heap = HeapTrimmer(self.loop)


class _ReadGate:
    """Reading pauses while any reason holds, and resumes when the last is gone."""

    __slots__ = ("_reasons", "_transport")

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._reasons = 0

    def pause(self, reason: int) -> None:
        if not self._reasons:
            self._transport.pause_reading()
        self._reasons |= reason

    def resume(self, reason: int) -> None:
        if self._reasons & reason:
            self._reasons &= ~reason
            if not self._reasons:
                self._transport.resume_reading()


PEER_FULL = 1
BACKLOG = 2
CONNECTING = 4


class _FlowControlled(asyncio.Protocol):
    """When this side's send buffer fills up, the other side stops reading until it drains."""

    def _peer_gate(self) -> _ReadGate | None:
        raise NotImplementedError

    def pause_writing(self) -> None:
        gate = self._peer_gate()
        if gate is not None:
            gate.pause(PEER_FULL)

    def resume_writing(self) -> None:
        gate = self._peer_gate()
        if gate is not None:
            gate.resume(PEER_FULL)


class ClientConnection(_FlowControlled):
    """A client's (decrypted) connection: requests in, responses out, or a byte tunnel."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.transport: Transport | None = None
        limits = state.config.limits
        self.reader = http1.RequestReader(
            max_request_line=limits.max_request_line,
            max_head=limits.max_head_size,
            max_headers=limits.max_headers,
        )
        self.client_ip = ""
        self.sni: str | None = None
        self.tls_info: tuple[str, str] | None = None
        self.gate: _ReadGate | None = None
        self.upstream: UpstreamConnection | None = None
        self.tunnel = False
        self.closed = False
        # The exchange in progress.
        self.request: RequestHead | None = None
        self.route_upstream: Upstream | None = None
        self.request_done = False
        self.response_status = 0
        self.response_bytes = 0
        self.response_chunked = False
        self.response_keep_alive = False
        self.started = 0.0
        self.request_bytes_sent = 0
        self.head_bytes = b""
        self.retried = False
        self.eof_pending = False
        self._batch: list[bytes] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(Transport, transport)
        t.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        self.gate = _ReadGate(t)
        peer = t.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        sslobj = t.get_extra_info("ssl_object")
        if sslobj is not None:
            self.sni = getattr(sslobj, SNI_ATTRIBUTE, None)
        state = self.state
        if len(state.connections) >= state.config.limits.max_connections or state.draining:
            t.write(
                http1.simple_response(503, b"devtls: too many connections, try again\n", close=True)
            )
            t.close()
            self.closed = True
            return
        state.connections.add(self)
        if state.config.tcp:
            self._start_tcp_tunnel()
        else:
            self._arm_timer(state.config.limits.head_timeout)

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            upstream = self.upstream
            if upstream is None:
                # --tcp: bytes that came with the handshake, before the upstream is open.
                self.reader.feed(data)
            elif not upstream.closed and upstream.transport is not None:
                # (uvloop raises on a write to a transport that is closed.)
                upstream.transport.write(data)
            return
        request = self.request
        if request is None:
            if self.reader.at_message_start:
                # The first bytes of a new request: from now on the head must arrive in time.
                self._arm_timer(self.state.config.limits.head_timeout)
        elif not self.request_done:
            # A body is coming: the time allowed is counted from its last bytes, as nginx's
            # client_body_timeout. Moving the deadline costs no timer operation.
            self._deadline = self.state.loop.time() + self.state.config.limits.body_timeout
        self.reader.feed(data)
        self._advance()

    def eof_received(self) -> bool:
        if self.tunnel:
            upstream = self.upstream
            if upstream is None:
                self.eof_pending = True
            elif not upstream.closed and upstream.transport is not None:
                if upstream.transport.can_write_eof():
                    upstream.transport.write_eof()
                upstream.client_eof = True
                if upstream.upstream_eof:
                    self.close()
                    return False
            return True
        self.reader.feed_eof()
        if self.request is None and self.reader.at_message_start:
            self.close()
            return False
        self._advance()
        # Keep the connection open to deliver the response to a finished request.
        return not self.closed

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._drop_timer()
        connections = self.state.connections
        if self in connections:
            connections.discard(self)
            self.state.heap.closed(len(connections))
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.client = None
            upstream.close()

    def _peer_gate(self) -> _ReadGate | None:
        return self.upstream.gate if self.upstream is not None else None

    # -- requests ----------------------------------------------------------------------

    def _advance(self) -> None:
        """Take as many events from the reader as the current state allows."""
        reader = self.reader
        while not self.closed:
            request = self.request
            if request is None:
                if self.state.draining or (reader.eof and reader.at_message_start):
                    self.close()
                    return
                event = self._next_event()
                if event is None:
                    return
                assert isinstance(event, RequestHead)
                self._start_exchange(event)
                continue
            upstream = self.upstream
            if self.request_done or upstream is None or not upstream.ready:
                # Pipelined requests and early body bytes wait, up to a bound.
                if reader.buffered > MAX_CLIENT_BACKLOG and self.gate is not None:
                    self.gate.pause(BACKLOG)
                return
            event = self._next_event()
            if event is None:
                if self.gate is not None and not self.closed:
                    self.gate.resume(BACKLOG)
                return
            transport = upstream.transport
            if transport is None or transport.is_closing():
                return  # its connection_lost is on the way, and decides what happens
            if isinstance(event, Data):
                self.request_bytes_sent += len(event.data)
                if request.body is BodyKind.CHUNKED:
                    transport.writelines(http1.chunk(event.data))
                else:
                    transport.write(event.data)
            elif event is END:
                if request.body is BodyKind.CHUNKED:
                    transport.write(http1.LAST_CHUNK)
                self.request_done = True
                self._cancel_timer()

    def _next_event(self) -> RequestHead | Data | http1.EndOfMessage | None:
        """The reader's next event; a protocol error is answered and ends the connection."""
        try:
            return self.reader.next_event()
        except ProtocolError as exc:
            self._refuse(exc)
            return None

    def _start_exchange(self, head: RequestHead) -> None:
        # "Content-Length: 0" is no body either: its end is known with the head.
        bodiless = head.body is BodyKind.NONE or (
            head.body is BodyKind.LENGTH and head.content_length == 0
        )
        if bodiless:
            self._cancel_timer()
        else:
            self._arm_timer(self.state.config.limits.body_timeout)
        self.request = head
        self.request_done = bodiless
        self.response_status = 0
        self.response_bytes = 0
        self.request_bytes_sent = 0
        self.retried = False
        if not self.state.config.quiet:  # the start time only feeds the access log
            self.started = time.perf_counter()
        if bodiless:
            # A request without a body ends with its head: take the reader's END now.
            end = self.reader.next_event()
            assert end is END
        host = head.host.decode("ascii") or (self.sni or "")
        route, upstream = self.state.router.match(host, head.path.decode("latin-1"))
        if upstream is None:
            self._respond_locally(404, self._no_route_page(host), close=False)
            return
        self.route_upstream = upstream
        target = upstream_target(route, upstream, head.target.decode("latin-1"))
        self.head_bytes = forwarding.upstream_request_head(
            head, target.encode("latin-1"), self._client_side(upstream), upstream
        )
        self.state.pool.acquire(upstream, self)

    def _client_side(self, upstream: Upstream) -> ClientSide:
        tls = None
        if upstream.wants_tls_info and self.transport is not None:
            sslobj = self.transport.get_extra_info("ssl_object")
            if sslobj is not None:
                cipher = sslobj.cipher()
                tls = (sslobj.version() or "", cipher[0] if cipher else "")
        return ClientSide(self.client_ip, self.sni, self.state.listen_port, tls)

    # -- the upstream side (called by UpstreamConnection and the pool) --------------------

    def upstream_ready(self, upstream: UpstreamConnection) -> None:
        """The upstream connection is there: send the head and stream the body."""
        if self.closed or self.request is None:
            self.state.pool.release(upstream, reusable=True)
            return
        transport = upstream.transport
        if upstream.closed or transport is None or transport.is_closing():
            # Reset between accept and write (an upstream restarting): nothing was sent.
            self.upstream_lost(upstream, nothing_sent=True)
            return
        self.upstream = upstream
        upstream.attach(self)
        request = self.request
        transport.write(self.head_bytes)
        if request.expect_continue and not self.request_done and request.http11:
            # We asked the upstream for nothing; the client may send its body now.
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.gate is not None:
            self.gate.resume(CONNECTING)
        self._advance()

    def upstream_failed(
        self, upstream: Upstream, exc: BaseException, tried: tuple[str, ...] = ()
    ) -> None:
        if self.closed or self.request is None:
            return
        status, message = describe_upstream_failure(upstream, exc, tried)
        log.warning("upstream %s: %s", upstream.authority, message)
        self._respond_locally(status, message.encode() + b"\n", close=not self.request_done)

    def fail_locally(self) -> None:
        """An unexpected fault while forwarding: a 502 if nothing was answered yet, then close."""
        if self.closed:
            return
        if self.request is not None and not self.response_status:
            self.upstream = None
            message = b"devtls: forwarding failed (see devtls's log)\n"
            self._respond_locally(502, message, close=True)
        else:
            self._abort()

    def upstream_lost(self, upstream: UpstreamConnection, *, nothing_sent: bool = False) -> None:
        """The upstream closed or failed before the response was complete."""
        self.upstream = None
        if self.closed:
            return
        if self.tunnel:
            self.close()
            return
        if self.response_status:
            # Part of the response is out; the client can only learn by the connection closing.
            self._abort()
            return
        request = self.request
        if (
            request is not None
            and not self.retried
            and self.route_upstream is not None
            and (nothing_sent or (upstream.reused and request.method in IDEMPOTENT))
            and self.request_bytes_sent == 0
        ):
            # The request never reached the application: not a byte of it was written, or
            # the pooled connection was closed by the upstream as we reused it (then only
            # an idempotent request is sent again). Once is enough.
            self.retried = True
            self.state.pool.acquire(self.route_upstream, self, fresh=True)
            return
        if request is None or self.route_upstream is None:
            self.close()
            return
        self._respond_locally(
            502,
            f"devtls: the upstream {self.route_upstream.authority} closed the connection "
            "without answering\n".encode(),
            close=not self.request_done,
        )

    def on_response_head(self, head: ResponseHead) -> None:
        request = self.request
        assert request is not None
        if head.status < 200 and head.status != 101:
            informational = forwarding.informational_head(request, head)
            if informational is not None:
                self._write(informational)
            return
        if head.status == 101:
            switching = forwarding.switching_head(request, head)  # 502 when not asked for
            self.response_status = 101
            self._write(switching)
            self._start_tunnel()
            return
        start = forwarding.final_head(request, head, draining=self.state.draining)
        self.response_status = head.status
        self.response_chunked = start.chunked
        self.response_keep_alive = start.keep_alive
        self._write(start.data)

    def on_response_data(self, data: bytes) -> None:
        self.response_bytes += len(data)
        if self.response_chunked:
            self._write_pieces(http1.chunk(data))
        else:
            self._write(data)

    def on_response_end(self, upstream: UpstreamConnection, reusable: bool) -> None:
        if self.response_chunked:
            self._write(http1.LAST_CHUNK)
        self.upstream = None
        self.state.pool.release(upstream, reusable=reusable and self.request_done)
        # A response that ends before the request's body does (an early 413, say): the rest
        # of that body cannot be told apart from a next request, so the connection ends.
        self._finish_exchange(keep_alive=self.response_keep_alive and self.request_done)

    def _finish_exchange(self, *, keep_alive: bool) -> None:
        request = self.request
        assert request is not None
        self._log(request)
        self.request = None
        self.route_upstream = None
        if not keep_alive or self.closed:
            self.close()
            return
        self.reader.next_message()
        if self.gate is not None:
            # Whatever paused reading for this exchange (a pending connect, a backlog) is
            # over: the next request must be read, or the client hangs.
            self.gate.resume(BACKLOG | CONNECTING)
        self._arm_timer(self.state.config.limits.idle_timeout)
        self._advance()

    # -- tunnels ------------------------------------------------------------------------

    def _start_tunnel(self) -> None:
        self.tunnel = True
        self._cancel_timer()
        upstream = self.upstream
        assert upstream is not None
        assert upstream.transport is not None
        request = self.request
        if request is not None:
            self._log(request)
            self.request = None
        early = self.reader.take_buffered()
        if early:
            upstream.transport.write(early)
        upstream.start_tunnel()
        if self.gate is not None:
            self.gate.resume(BACKLOG | CONNECTING)

    def _start_tcp_tunnel(self) -> None:
        _, upstream = self.state.router.match(self.sni or "", "/")
        if upstream is None:
            self.close()
            return
        self.tunnel = True
        self.route_upstream = upstream
        self.request = None
        self.head_bytes = b""
        assert self.gate is not None
        self.gate.pause(CONNECTING)
        self.state.pool.acquire(upstream, self, fresh=True, tunnel=True)

    def tunnel_ready(self, upstream: UpstreamConnection) -> None:
        if self.closed:
            upstream.close()
            return
        self.upstream = upstream
        assert upstream.transport is not None
        if not upstream.closed:
            early = self.reader.take_buffered()
            if early:
                upstream.transport.write(early)
            if self.eof_pending:
                upstream.client_eof = True
                if upstream.transport.can_write_eof():
                    upstream.transport.write_eof()
        if self.gate is not None:
            self.gate.resume(CONNECTING)
        # Last: what the upstream said before now goes out, and an upstream already gone
        # closes this connection.
        upstream.attach_tunnel(self)

    def tunnel_failed(
        self, upstream: Upstream, exc: BaseException, tried: tuple[str, ...] = ()
    ) -> None:
        """--tcp: the upstream cannot be reached; the client learns by the connection closing."""
        _, message = describe_upstream_failure(upstream, exc, tried)
        log.warning("upstream %s: %s", upstream.authority, message)
        self.close()

    # -- local answers, timers, closing ---------------------------------------------------

    def _respond_locally(self, status: int, body: bytes, *, close: bool) -> None:
        request = self.request
        assert request is not None
        # A request whose body is still coming cannot be told apart from the next request:
        # the connection ends, and the answer says so.
        keep_alive = (
            request.keep_alive and not close and not self.state.draining and self.request_done
        )
        self.response_status = status
        self.response_bytes = len(body)
        self._write(
            http1.simple_response(
                status, body, close=not keep_alive, head_only=request.method == b"HEAD"
            )
        )
        self._finish_exchange(keep_alive=keep_alive)

    def _refuse(self, exc: ProtocolError) -> None:
        """Answer a request we cannot parse, then close: its framing cannot be trusted."""
        if self.response_status == 0 or self.request is None:
            self._write(
                http1.simple_response(exc.status_hint, f"{exc.message}\n".encode(), close=True)
            )
        if not self.state.config.quiet:
            self.state.write_log(
                f"{self.client_ip} bad request: {exc.message} -> {exc.status_hint}"
            )
        self.close()

    def _no_route_page(self, host: str) -> bytes:
        lines = [f"devtls: no route for host {host!r}.", "", "Configured routes:"]
        lines += [f"  {route}" for route in self.state.router.routes] or ["  (none)"]
        return ("\n".join(lines) + "\n").encode()

    def _log(self, request: RequestHead) -> None:
        if self.state.config.quiet:
            return
        ms = (time.perf_counter() - self.started) * 1000
        self.state.write_log(
            f'{self.client_ip} "{request.method.decode()} {request.host.decode()}'
            f'{request.target.decode("ascii", "backslashreplace")}" {self.response_status} '
            f"{self.response_bytes}B {ms:.1f}ms"
        )

    def _write(self, data: bytes) -> None:
        batch = self._batch
        if batch is not None:
            batch.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def _write_pieces(self, pieces: list[bytes]) -> None:
        batch = self._batch
        if batch is not None:
            batch += pieces
        elif self.transport is not None and not self.closed:
            self.transport.writelines(pieces)

    def begin_batch(self) -> None:
        """Hold writes until end_batch: one TLS record and one send for head and body."""
        self._batch = []

    def end_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch and self.transport is not None and not self.closed:
            self.transport.write(batch[0] if len(batch) == 1 else b"".join(batch))

    # One timer handle per connection, moved lazily: re-arming for every request would
    # cost a heap push and a cancel each time.
    def _arm_timer(self, seconds: float) -> None:
        loop = self.state.loop
        self._deadline = deadline = loop.time() + seconds
        timer = self._timer
        if timer is not None and timer.when() > deadline:
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        self._deadline = 0.0

    def _on_timer(self) -> None:
        self._timer = None
        if self._deadline == 0.0 or self.closed:
            return
        loop = self.state.loop
        if loop.time() < self._deadline:
            # Re-armed since: wait for the newer deadline (one timer per connection).
            self._timer = loop.call_at(self._deadline, self._on_timer)
            return
        if self.request is None and not self.reader.at_message_start:
            self._write(http1.simple_response(408, b"request head took too long\n", close=True))
        elif self.request is not None and not self.response_status:
            self._write(http1.simple_response(408, b"request body took too long\n", close=True))
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        if self._batch:
            self.end_batch()  # what was written before the close still goes out
        self.closed = True
        self._drop_timer()
        if self.transport is not None:
            self.transport.close()

    def _abort(self) -> None:
        self.closed = True
        self._drop_timer()
        if self.transport is not None:
            self.transport.abort()

    def _drop_timer(self) -> None:
        self._deadline = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close_if_idle(self) -> None:
        """When stopping: a connection between requests, or a tunnel, is closed now.

        Tunnels (WebSockets, --tcp) live as long as their apps; waiting for them would only
        delay every stop by the drain timeout.
        """
        if self.tunnel or (self.request is None and self.reader.at_message_start):
            if self.tunnel and self.upstream is not None:
                self.upstream.close()
            self.close()


class UpstreamConnection(_FlowControlled):
    """A connection to an upstream, reused across requests through the pool."""

    def __init__(self, pool: UpstreamPool, key: str, *, tunnel: bool = False) -> None:
        self.pool = pool
        self.key = key
        self.transport: Transport | None = None
        self.reader = http1.ResponseReader()
        self.client: ClientConnection | None = None
        self.gate: _ReadGate | None = None
        self.ready = False
        self.reused = False
        # A --tcp connection is a tunnel from its first byte.
        self.tunnel = tunnel
        self.early = b""
        self.client_eof = False
        self.upstream_eof = False
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self.last_active = 0.0
        self.timeout_timer: asyncio.TimerHandle | None = None
        self.watching = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(Transport, transport)
        t.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        self.gate = _ReadGate(t)
        self.ready = True

    def attach(self, client: ClientConnection) -> None:
        self.client = client
        request = client.request
        self.reader.expect_response(head_request=request is not None and request.method == b"HEAD")
        self._watch_silence()

    def start_tunnel(self) -> None:
        self.tunnel = True
        self._stop_watch()
        rest = self.reader.take_buffered()
        if rest and self.client is not None:
            self.client._write(rest)

    def attach_tunnel(self, client: ClientConnection) -> None:
        """--tcp: the client side is there; the bytes and the end that came before it follow."""
        self.client = client
        early, self.early = self.early, b""
        if early:
            client._write(early)
        if self.closed:
            client.close()
            return
        if self.gate is not None:
            self.gate.resume(BACKLOG)
        if self.upstream_eof and client.transport is not None:
            client.transport.write_eof()
            if self.client_eof:
                client.close()

    def data_received(self, data: bytes) -> None:
        client = self.client
        if self.tunnel:
            if client is not None and client.transport is not None:
                client.transport.write(data)
            elif client is None and not self.closed:
                # --tcp, before the client side is attached: a greeting, kept for it.
                self.early += data
                if len(self.early) >= MAX_TUNNEL_EARLY and self.gate is not None:
                    self.gate.pause(BACKLOG)
            return
        if client is None:
            # An idle connection must not speak; whatever this is, the connection is done.
            self.close()
            return
        self.last_active = time.monotonic()
        self.reader.feed(data)
        self._pump(client)

    def _pump(self, client: ClientConnection) -> None:
        client.begin_batch()
        try:
            self._pump_events(client)
        finally:
            client.end_batch()

    def _pump_events(self, client: ClientConnection) -> None:
        reader = self.reader
        try:
            while self.client is client and not self.tunnel:
                event = reader.next_event()
                if event is None:
                    return
                if isinstance(event, Data):
                    client.on_response_data(event.data)
                elif event is END:
                    self._stop_watch()
                    head_keep_alive = self.keep_alive
                    self.client = None
                    client.on_response_end(self, head_keep_alive)
                    return
                else:
                    assert isinstance(event, ResponseHead)
                    if event.status >= 200 or event.status == 101:
                        self.keep_alive = event.keep_alive
                    client.on_response_head(event)
        except ProtocolError as exc:
            self.client = None
            if client.response_status:
                client._abort()
            else:
                client.upstream = None
                client._respond_locally(502, f"devtls: {exc.message}\n".encode(), close=True)
            self.close()

    def eof_received(self) -> bool:
        self.upstream_eof = True
        client = self.client
        if self.tunnel:
            if client is not None and client.transport is not None:
                client.transport.write_eof()
                if self.client_eof:
                    client.close()
                    return False
            return True
        if client is not None:
            if client.response_status == 0 and not self.reader.buffered:
                # Not a byte of a response: connection_lost decides between a retry and a 502.
                return False
            self.reader.feed_eof()
            self._pump(client)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ready = False
        self._drop_watch()
        self.pool.forget(self)
        client, self.client = self.client, None
        if client is not None:
            client.upstream_lost(self)

    def _peer_gate(self) -> _ReadGate | None:
        return self.client.gate if self.client is not None else None

    def close(self) -> None:
        self._drop_watch()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    # Upstream silence: one timer handle kept across exchanges; it fires, looks at the time
    # of the last data, and sleeps again if there was some.
    def _watch_silence(self) -> None:
        self.watching = True
        self.last_active = time.monotonic()
        if self.timeout_timer is None:
            timeout = self.pool.state.config.limits.upstream_timeout
            self.timeout_timer = self.pool.state.loop.call_later(timeout, self._on_silence)

    def _stop_watch(self) -> None:
        self.watching = False

    def _drop_watch(self) -> None:
        self.watching = False
        if self.timeout_timer is not None:
            self.timeout_timer.cancel()
            self.timeout_timer = None

    def _on_silence(self) -> None:
        self.timeout_timer = None
        timeout = self.pool.state.config.limits.upstream_timeout
        quiet_for = time.monotonic() - self.last_active
        client = self.client
        if not self.watching or client is None or self.tunnel:
            return
        if quiet_for < timeout:
            self.timeout_timer = self.pool.state.loop.call_later(
                timeout - quiet_for, self._on_silence
            )
            return
        self.client = None
        if client.response_status:
            client._abort()
        else:
            upstream = client.route_upstream
            where = upstream.authority if upstream else "the upstream"
            client.upstream = None
            client._respond_locally(
                504,
                f"devtls: {where} did not answer within {timeout:g} s\n".encode(),
                close=True,
            )
        self.close()


class UpstreamPool:
    """Idle upstream connections by upstream, and opening new ones."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.idle: dict[str, list[UpstreamConnection]] = {}
        self.pending: set[asyncio.Task[None]] = set()
        self.sweeper: asyncio.TimerHandle | None = None
        # For upstreams named "localhost": the loopback address that answered last.
        self.answered: dict[str, str] = {}

    def acquire(
        self,
        upstream: Upstream,
        client: ClientConnection,
        *,
        fresh: bool = False,
        tunnel: bool = False,
    ) -> None:
        """Give ``client`` a connection now (from the pool) or when it is open."""
        key = str(upstream)
        if not fresh and not tunnel:
            idle = self.idle.get(key)
            while idle:
                connection = idle.pop()
                transport = connection.transport
                if connection.closed or transport is None or transport.is_closing():
                    continue
                if time.monotonic() - connection.idle_since > UPSTREAM_IDLE_SECONDS:
                    connection.close()
                    continue
                connection.reused = True
                client.upstream_ready(connection)
                return
        if client.gate is not None:
            client.gate.pause(CONNECTING)
        task = asyncio.ensure_future(self._open(upstream, key, client, tunnel))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _open(
        self, upstream: Upstream, key: str, client: ClientConnection, tunnel: bool
    ) -> None:
        hosts = self._hosts_to_try(upstream, key)
        # Kept without their tracebacks: those hold this frame (and the client) in a cycle with
        # wait_for's task, which kept each refused connection's memory until a full gc.
        failures: list[BaseException] = []
        protocol: UpstreamConnection | None = None
        for host in hosts:
            try:
                protocol = await self._connect(upstream, key, host, tunnel=tunnel)
            except ssl.SSLError as exc:
                # something answered there: its TLS is the problem
                failures.append(exc.with_traceback(None))
                hosts = (host,)
                break
            except (OSError, asyncio.TimeoutError) as exc:
                failures.append(exc.with_traceback(None))
                continue
            if len(hosts) > 1:
                self.answered[key] = host
            break
        try:
            if protocol is None:
                tried = tuple(_authority(host, upstream.port) for host in hosts)
                tried = tried if len(tried) > 1 else ()
                if tunnel:
                    client.tunnel_failed(upstream, failures[-1], tried)
                else:
                    client.upstream_failed(upstream, failures[-1], tried)
            elif tunnel:
                client.tunnel_ready(protocol)
            else:
                client.upstream_ready(protocol)
        except Exception:
            # A fault of ours must still end in an answer, never in a task nobody awaits.
            log.exception("forwarding to %s failed", upstream.authority)
            client.fail_locally()
            if protocol is not None:
                protocol.close()

    def _hosts_to_try(self, upstream: Upstream, key: str) -> tuple[str, ...]:
        """``localhost`` means both loopback addresses: dev servers listen on either.

        (Vite listens on ::1 only where ``localhost`` resolves to it first.) The one that
        answered last is tried first; the system resolver is not asked, as it would be per
        connection.
        """
        if upstream.scheme == "unix" or upstream.host != "localhost":
            return (upstream.host,)
        first = self.answered.get(key, LOOPBACK_HOSTS[0])
        return (first, *(h for h in LOOPBACK_HOSTS if h != first))

    async def _connect(
        self, upstream: Upstream, key: str, host: str, *, tunnel: bool
    ) -> UpstreamConnection:
        loop = self.state.loop
        timeout = self.state.config.limits.upstream_connect_timeout
        if upstream.scheme == "unix":
            opening = loop.create_unix_connection(
                lambda: UpstreamConnection(self, key, tunnel=tunnel), upstream.socket_path
            )
        else:
            opening = loop.create_connection(
                lambda: UpstreamConnection(self, key, tunnel=tunnel),
                host,
                upstream.port,
                ssl=self.state.upstream_tls if upstream.scheme == "https" else None,
                server_hostname=upstream.host if upstream.scheme == "https" else None,
            )
        _, protocol = await asyncio.wait_for(opening, timeout)
        return protocol

    def release(self, connection: UpstreamConnection, *, reusable: bool) -> None:
        if (
            not reusable
            or connection.closed
            or self.state.draining
            or connection.transport is None
            or connection.transport.is_closing()
            or connection.reader.buffered
        ):
            connection.close()
            return
        idle = self.idle.setdefault(connection.key, [])
        if len(idle) >= MAX_IDLE_PER_UPSTREAM:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)
        if self.sweeper is None:
            self.sweeper = self.state.loop.call_later(UPSTREAM_IDLE_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle too long; runs only while some are idle."""
        self.sweeper = None
        cutoff = time.monotonic() - UPSTREAM_IDLE_SECONDS
        remaining = False
        for idle in self.idle.values():
            for connection in [c for c in idle if c.idle_since <= cutoff]:
                idle.remove(connection)
                connection.close()
            remaining = remaining or bool(idle)
        if remaining:
            self.sweeper = self.state.loop.call_later(UPSTREAM_IDLE_SECONDS / 2, self._sweep)

    def forget(self, connection: UpstreamConnection) -> None:
        idle = self.idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def close_all(self) -> None:
        for idle in self.idle.values():
            for connection in list(idle):
                connection.close()
        self.idle.clear()
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for task in list(self.pending):
            task.cancel()


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_upstream_failure(
    upstream: Upstream, exc: BaseException, tried: tuple[str, ...] = ()
) -> tuple[int, str]:
    """The status and the one-line reason a developer needs to fix it.

    ``tried`` names every address tried when there were several (``exc`` is the last one's).
    """
    where = " or ".join(tried) if tried else upstream.authority
    if isinstance(exc, asyncio.TimeoutError):
        return 504, f"devtls: connecting to {where} timed out — is your dev server stuck?"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return 502, f"devtls: the certificate of {where} is not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return 502, f"devtls: TLS to {where} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return 502, f"devtls: nothing is listening on {where} — is your dev server running?"
    if isinstance(exc, FileNotFoundError):
        return 502, f"devtls: no socket at {upstream.socket_path} — is your dev server running?"
    if isinstance(exc, socket.gaierror):
        return 502, f"devtls: cannot resolve {upstream.host}: {exc.strerror}"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return 502, f"devtls: cannot connect to {where}: {text}"


def print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
