"""The HTTP/1.1 front: one client connection, its requests one after another, on asyncio.

Bytes are moved by callbacks, not coroutines: a request's body goes to the upstream as it
arrives, a response's body to the client as it arrives, and each side stops reading while
the other side's send buffer is full. Framing comes from the sans-IO ``http1`` module, the
work of each request and its response from ``exchange``; after a 101 the connection is a
``tunnel``.
"""

from __future__ import annotations

import asyncio

from devtls.config import Upstream
from devtls.errors import ProtocolError
from devtls.proxy import forwarding, http1
from devtls.proxy.certs import peer_of, tls_of
from devtls.proxy.exchange import Exchange
from devtls.proxy.flow import (
    ANSWERS_WAIT,
    BACKLOG,
    CONNECTING,
    FlowControlled,
    ReadGate,
    Transport,
    open_gate,
)
from devtls.proxy.forwarding import ClientSide
from devtls.proxy.http1 import END, Data, RequestHead
from devtls.proxy.state import ServerState
from devtls.proxy.timer import LazyTimer
from devtls.proxy.tunnel import Tunnel
from devtls.proxy.upstream import UpstreamConnection

# Bytes of pipelined or early request data held while the current exchange runs (reading
# stops above it; one read more may arrive: see the README's "Memory per connection").
MAX_CLIENT_BACKLOG = 64 * 1024


class H1Connection(FlowControlled):
    """A client's (decrypted) HTTP/1 connection: requests in, responses out, or a tunnel."""

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
        self.gate: ReadGate | None = None
        self.write_paused = False
        self.exchange = Exchange(self, state)
        self.advancing = False
        self.tunnel: Tunnel | None = None
        self.closed = False
        self._batch: list[bytes] | None = None
        self.timer = LazyTimer(state.wheel, self._on_timer)

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t, self.gate = open_gate(transport)
        self.transport = t
        self.client_ip, self.sni = peer_of(t)
        if not self.state.admit(self, t):
            self.closed = True
            return
        self.timer.arm(self.state.config.limits.head_timeout)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.client_data(data)
            return
        exchange = self.exchange
        if exchange.request is None:
            if self.reader.at_message_start:
                # The first bytes of a new request: from now on the head must arrive in time.
                self.timer.arm(self.state.config.limits.head_timeout)
        elif not exchange.request_done:
            # A body is coming: the time allowed is counted from its last bytes, as nginx's
            # client_body_timeout. Moving the deadline costs no timer operation.
            self.timer.push_back(self.state.config.limits.body_timeout)
        self.reader.feed(data)
        self._advance()

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            return self.tunnel.client_eof_received()
        self.reader.feed_eof()
        if self.exchange.request is None and self.reader.at_message_start:
            self.close()
            return False
        self._advance()
        # Keep the connection open to deliver the response to a finished request.
        return not self.closed

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.timer.drop()
        self.state.connection_closed(self)
        if self.tunnel is not None:
            self.tunnel.client_lost()
        self.exchange.client_lost()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_paused = True
        if self.tunnel is None and self.gate is not None:
            # A client that reads no answers gets no more requests read: pipelined requests
            # answered by devtls itself (404, 502) would otherwise fill memory without end. A
            # tunnel keeps its two directions apart (a client may write before it reads).
            self.gate.pause(ANSWERS_WAIT)

    def resume_writing(self) -> None:
        self.write_paused = False
        super().resume_writing()
        if self.gate is not None:
            self.gate.resume(ANSWERS_WAIT)

    def peer_gate(self) -> ReadGate | None:
        if self.tunnel is not None:
            return self.tunnel.upstream_gate()
        return self.exchange.upstream_gate()

    # -- requests ----------------------------------------------------------------------

    def _advance(self) -> None:
        """Take as many events from the reader as the current state allows."""
        if self.advancing:
            # Called back from inside the loop below (a request answered at once, by devtls
            # or a pooled upstream): the loop goes on with the next request itself. Recursing
            # instead let a pipelined flood of 404s reach the recursion limit.
            return
        self.advancing = True
        try:
            self._advance_loop()
        finally:
            self.advancing = False

    def _advance_loop(self) -> None:
        reader = self.reader
        exchange = self.exchange
        while not self.closed:
            if exchange.request is None:
                if self.state.draining or (reader.eof and reader.at_message_start):
                    self.close()
                    return
                event = self._next_event()
                if event is None:
                    return
                assert isinstance(event, RequestHead)
                self._start_exchange(event)
                continue
            if exchange.request_done or not exchange.can_send():
                # Pipelined requests and early body bytes wait, up to a bound.
                if reader.buffered > MAX_CLIENT_BACKLOG and self.gate is not None:
                    self.gate.pause(BACKLOG)
                return
            event = self._next_event()
            if event is None:
                if self.gate is not None and not self.closed:
                    self.gate.resume(BACKLOG)
                return
            if isinstance(event, Data):
                if not exchange.request_data(event.data):
                    return
            elif event is END:
                if not exchange.request_end(reader.trailers):
                    return
                self.timer.disarm()

    def _next_event(self) -> RequestHead | Data | http1.EndOfMessage | None:
        """The reader's next event; a protocol error is answered and ends the connection."""
        try:
            return self.reader.next_event()
        except ProtocolError as exc:
            self._refuse(exc)
            return None

    def _start_exchange(self, head: RequestHead) -> None:
        bodiless = forwarding.request_is_bodiless(head)
        if bodiless:
            self.timer.disarm()
        else:
            self.timer.arm(self.state.config.limits.body_timeout)
        if bodiless:
            # A request without a body ends with its head: take the reader's END now.
            end = self.reader.next_event()
            assert end is END
        self.exchange.start(head, bodiless)

    # -- what the exchange asks of this connection (exchange.Front) ------------------------

    def client_side(self, upstream: Upstream) -> ClientSide:
        tls = tls_of(self.transport) if upstream.wants_tls_info else None
        return ClientSide(self.client_ip, self.sni, self.state.listen_port, tls)

    # The upstream is there: the body that has come, and what comes next, go to it.
    send_body = _advance

    def exchange_done(self, keep_alive: bool) -> None:
        if not keep_alive or self.closed:
            self.close()
            return
        self.reader.next_message()
        if self.gate is not None:
            # Whatever paused reading for this exchange (a pending connect, a backlog) is
            # over: the next request must be read, or the client hangs.
            self.gate.resume(BACKLOG | CONNECTING)
        self.timer.arm(self.state.config.limits.idle_timeout)
        self._advance()

    def switch_protocols(self, connection: UpstreamConnection) -> None:
        self.tunnel = tunnel = Tunnel(self)
        self.timer.disarm()
        tunnel.upgrade(connection, self.reader.take_buffered())
        if self.gate is not None:
            self.gate.resume(BACKLOG | CONNECTING)

    def write(self, data: bytes) -> None:
        batch = self._batch
        if batch is not None:
            batch.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def write_pieces(self, pieces: list[bytes]) -> None:
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

    # -- refusals, timers, closing --------------------------------------------------------

    def _refuse(self, exc: ProtocolError) -> None:
        """Answer a request we cannot parse, then close: its framing cannot be trusted."""
        exchange = self.exchange
        if exchange.response_status == 0 or exchange.request is None:
            self.write(
                http1.simple_response(exc.status_hint, f"{exc.message}\n".encode(), close=True)
            )
        if not self.state.config.quiet:
            self.state.write_log(
                f"{self.client_ip} bad request: {exc.message} -> {exc.status_hint}"
            )
        self.close()

    def _on_timer(self) -> None:
        if self.closed:
            return
        exchange = self.exchange
        if exchange.request is None and not self.reader.at_message_start:
            self.write(http1.simple_response(408, b"request head took too long\n", close=True))
        elif exchange.request is not None and not exchange.response_status:
            self.write(http1.simple_response(408, b"request body took too long\n", close=True))
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        if self._batch:
            self.end_batch()  # what was written before the close still goes out
        self.closed = True
        self.timer.drop()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.timer.drop()
        if self.transport is not None:
            self.transport.abort()

    def close_if_idle(self) -> None:
        """When stopping: a connection between requests, or a tunnel, is closed now.

        Tunnels (WebSockets, --tcp) live as long as their apps; waiting for them would only
        delay every stop by the drain timeout.
        """
        if self.tunnel is not None:
            self.tunnel.close_upstream()
            self.close()
        elif self.exchange.request is None and self.reader.at_message_start:
            self.close()
