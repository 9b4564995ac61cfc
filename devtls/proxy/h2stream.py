"""One HTTP/2 stream: the front of one exchange, its request body in and its response out.

A stream moves its bytes as the windows allow: its response is read from the upstream
only while the client's window (and the connection's send buffer) takes it, and the
client's window for its request body is opened again only as the upstream takes the bytes.
The connection it lives on (``h2.H2Connection``) is a ``StreamHost``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol

import h2.connection
from h2.errors import ErrorCodes

from devtls.config import Limits, Upstream
from devtls.errors import ProtocolError
from devtls.proxy import forwarding, h2fields, pages
from devtls.proxy.exchange import Exchange
from devtls.proxy.flow import PEER_FULL, WRITE_HIGH_WATER, WRITE_LOW_WATER, ReadGate
from devtls.proxy.forwarding import ClientSide
from devtls.proxy.http1 import BodyKind, Headers, RequestHead, ResponseHead
from devtls.proxy.state import ServerState
from devtls.proxy.upstream import UpstreamConnection

# Response bytes queued on a stream beyond what the client's window takes: above the high
# mark its upstream is not read, below the low one it is again.
STREAM_HIGH_WATER = WRITE_HIGH_WATER
STREAM_LOW_WATER = WRITE_LOW_WATER
# Request body bytes still read (and dropped) after a complete answer, before the stream is
# reset: RFC 9113 8.1 allows the reset at once, but curl, among others, then reports an error.
DISCARD_LIMIT = 256 * 1024


class StreamHost(Protocol):
    """What a stream needs of its connection."""

    state: ServerState
    h2: h2.connection.H2Connection
    client_ip: str
    sni: str | None
    closed: bool
    write_paused: bool
    # Nesting depth of writes being gathered into one (flushed when it returns to 0).
    batch: int
    # Streams with DATA waiting for a window, or for the send buffer to drain.
    blocked: dict[int, H2Stream]

    def flush_soon(self) -> None: ...

    def client_side(self, upstream: Upstream) -> ClientSide: ...

    def stream_finished(self, stream: H2Stream, *, answered: bool = True) -> None: ...

    def log(self, line: str) -> None: ...


class StreamExchange(Exchange):
    """An exchange whose answer goes out as HTTP/2 frames on one stream."""

    __slots__ = ("stream",)

    def __init__(self, stream: H2Stream, state: ServerState) -> None:
        super().__init__(stream, state)
        self.stream = stream

    def _send_continue(self) -> None:
        self.stream.send_headers([(b":status", b"100")], end=False)

    def _pass_informational(self, request: RequestHead, head: ResponseHead) -> None:
        fields = h2fields.informational_fields(head)
        if fields is not None:
            self.stream.send_headers(fields, end=False)

    def _pass_switch(self, request: RequestHead, head: ResponseHead) -> None:
        key = h2fields.websocket_key(request)
        self.stream.send_headers(h2fields.switching_fields(request, head, key), end=False)

    def _pass_final(self, request: RequestHead, head: ResponseHead) -> None:
        fields = h2fields.response_fields(request, head)
        self.stream.send_headers(fields, end=head.body is BodyKind.NONE)

    def response_data(self, data: bytes) -> None:
        self.response_bytes += len(data)
        self.stream.send_data(data)

    def response_end(self, connection: UpstreamConnection) -> None:
        trailers = connection.reader.trailers
        self.upstream = None
        self.state.pool.release(connection, reusable=self.upstream_keep_alive and self.request_done)
        passed = forwarding.trailer_fields(trailers, to_upstream=False) if trailers else None
        self.stream.end_response([(n.lower(), v) for n, v in passed] if passed else None)
        self._finish(True)

    def _respond_locally(
        self,
        status: int,
        body: bytes,
        *,
        close: bool,
        content_type: bytes = pages.TEXT,
        extra: Headers | None = None,
    ) -> None:
        request = self.request
        assert request is not None
        self.response_status = status
        self.response_bytes = len(body)
        bodiless = request.method == b"HEAD" or not body
        fields = h2fields.local_fields(status, len(body), content_type, extra)
        self.stream.send_headers(fields, end=bodiless)
        if not bodiless:
            self.stream.send_data(body)
            self.stream.end_response(None)
        self._finish(True)

    def refuse(self, exc: ProtocolError) -> None:
        """A request that cannot be forwarded (a malformed head): answered, never sent on."""
        self.started = time.perf_counter()  # for the access log line
        self.request = RequestHead(
            b"-", b"-", True, [], b"", BodyKind.NONE, 0, True, None, False, path=b"-"
        )
        self._respond_locally(exc.status_hint, f"{exc.message}\n".encode(), close=False)

    def give_up_waiting(self, status: int, message: bytes) -> None:
        """The client took too long with the request body: the upstream goes, the client is
        answered if nothing was yet, else its stream is reset."""
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.detach()
        if self.request is not None and not self.response_status:
            self._respond_locally(status, message, close=True)
        else:
            self.front.abort()


class H2Stream:
    """One stream: the front of its exchange, and the source its request body is read from.

    Pausing this source (its gate) holds back the WINDOW_UPDATEs for what the client sent:
    the client's window closes, and it stops sending.
    """

    __slots__ = (
        "batching",
        "client_done",
        "client_ip",
        "closed",
        "connection",
        "discarded",
        "ended",
        "exchange",
        "gate",
        "held",
        "last_in",
        "last_out",
        "out",
        "out_end",
        "out_size",
        "out_trailers",
        "paused",
        "refused",
        "sni",
        "stream_id",
        "trailers",
        "tunnel",
        "unacked",
        "upgrade",
        "upstream_paused",
        "write_paused",
    )

    def __init__(self, connection: StreamHost, stream_id: int, now: float) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.client_ip = connection.client_ip
        self.sni = connection.sni
        self.closed = False
        self.gate: ReadGate | None = ReadGate(self)
        # A stream's response waits in its own queue, bounded by STREAM_HIGH_WATER.
        self.write_paused = False
        self.paused = False
        # Request body bytes that came before the upstream could take them (at most a
        # window's worth: none of them is acknowledged yet).
        self.held: list[bytes] = []
        self.unacked = 0
        self.client_done = False
        self.trailers: Headers | None = None
        # The response's DATA waiting for the client's window.
        self.out: deque[bytes | memoryview] = deque()
        self.out_size = 0
        self.out_end = False
        self.out_trailers: Headers | None = None
        # END_STREAM or RST_STREAM sent: nothing more goes out.
        self.ended = False
        self.discarded = 0
        self.batching = False
        self.upstream_paused = False
        # An extended CONNECT (RFC 8441): the client's DATA is for a tunnel, if one opens;
        # refused, when it was answered without one.
        self.upgrade = False
        self.refused = False
        # After a WebSocket's 200: the upstream connection the stream's DATA goes to.
        self.tunnel: UpstreamConnection | None = None
        self.last_in = now
        self.last_out = now
        self.exchange = StreamExchange(self, connection.state)

    # -- the request, as the client sends it ----------------------------------------------

    def start(self, head: RequestHead, bodiless: bool) -> None:
        self.upgrade = head.upgrade is not None
        self.exchange.start(head, bodiless)

    def body_data(self, data: bytes, flow_length: int, now: float) -> None:
        self.last_in = now
        self.unacked += flow_length
        if self.ended:
            # Answered already: the rest of the body is not wanted.
            self.acknowledge()
            self.discarded += flow_length
            if self.discarded > DISCARD_LIMIT:
                self.stop_request()
            return
        tunnel = self.tunnel
        exchange = self.exchange
        if tunnel is not None:
            transport = tunnel.transport
            if data and transport is not None and not transport.is_closing():
                transport.write(data)
        elif not self.held and exchange.request is not None and exchange.can_send():
            if data and not exchange.request_data(data):
                return
        elif data:
            self.held.append(data)
            return
        if not self.paused:
            self.acknowledge()

    def client_ended(self) -> None:
        self.client_done = True
        tunnel = self.tunnel
        exchange = self.exchange
        if tunnel is not None:
            transport = tunnel.transport
            if tunnel.upstream_eof:
                # The upstream ended its half first: both are done now, and so is its
                # connection (else it stays open, and its socket with it, until devtls stops).
                self.tunnel = None
                tunnel.detach()
            elif transport is not None and not transport.is_closing() and transport.can_write_eof():
                transport.write_eof()
        elif (
            not self.held
            and exchange.request is not None
            and not exchange.request_done
            and exchange.can_send()
        ):
            exchange.request_end(self.trailers)
        if self.ended:
            self.connection.stream_finished(self)

    def acknowledge(self) -> None:
        """Give the client back the window its DATA took: it may send as much again."""
        if self.unacked and not self.connection.closed:
            self.connection.h2.acknowledge_received_data(self.unacked, self.stream_id)
            self.unacked = 0
            self.connection.flush_soon()

    # The gate's source (flow.Readable).
    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        self.acknowledge()

    # -- what the exchange asks of its front (exchange.Front) ------------------------------

    def client_side(self, upstream: Upstream) -> ClientSide:
        return self.connection.client_side(upstream)

    def write(self, data: bytes) -> None:
        raise RuntimeError("HTTP/1 bytes written to an HTTP/2 stream")

    def write_pieces(self, pieces: list[bytes]) -> None:
        raise RuntimeError("HTTP/1 bytes written to an HTTP/2 stream")

    # Around each read from the upstream: its pieces go out as few frames as the windows
    # allow (the last DATA carries END_STREAM), in one write.
    def begin_batch(self) -> None:
        self.batching = True
        self.connection.batch += 1

    def end_batch(self) -> None:
        self.batching = False
        connection = self.connection
        connection.batch -= 1
        if self.out or self.out_end:
            self.drain()
        connection.flush_soon()

    def send_body(self) -> None:
        """The upstream is there: what the client sent meanwhile goes to it."""
        exchange = self.exchange
        held, self.held = self.held, []
        for data in held:
            if not exchange.request_data(data):
                return
        if self.client_done and not exchange.request_done:
            exchange.request_end(self.trailers)
        if not self.paused:
            self.acknowledge()

    def exchange_done(self, keep_alive: bool) -> None:
        # The stream ends when its last DATA is out. A WebSocket's CONNECT answered without
        # one (a 404, a 502; a 101 comes to switch_protocols instead) has no request body to
        # wait for: the client's half could only carry bytes for a tunnel that is not there.
        # It is reset with NO_ERROR once the answer is out (RFC 9113 8.1), not held open, a
        # stream slot taken, until the client ends it or body_timeout does.
        if self.upgrade:
            self.refused = True
            if self.ended and not self.client_done:
                self.stop_request()

    def switch_protocols(self, connection: UpstreamConnection) -> None:
        """The WebSocket is open: DATA both ways is its bytes."""
        self.tunnel = connection
        early = connection.start_tunnel(self)
        held, self.held = self.held, []
        transport = connection.transport
        if transport is not None and not transport.is_closing():
            for data in held:
                transport.write(data)
            if self.client_done and transport.can_write_eof():
                transport.write_eof()
        if early:
            self.send_data(early)
        if not self.paused:
            self.acknowledge()

    def close(self) -> None:
        self.reset(ErrorCodes.CANCEL)

    def abort(self) -> None:
        """A response cut short: the client learns by the stream's reset."""
        self.reset(ErrorCodes.INTERNAL_ERROR)

    # -- the tunnel's upstream side (upstream.Pump) ----------------------------------------

    def client_gate(self) -> ReadGate | None:
        return self.gate

    def upstream_data(self, data: bytes) -> None:
        self.send_data(data)
        self.connection.flush_soon()

    def upstream_eof(self) -> bool:
        self.end_response(None)
        self.connection.flush_soon()
        return not self.client_done  # the client's half may still have bytes to send

    def upstream_lost(self) -> None:
        self.tunnel = None
        if not self.ended:
            self.end_response(None)
        elif not self.client_done:
            self.stop_request()
        self.connection.flush_soon()

    # -- the response, as the client's window allows ----------------------------------------

    def send_headers(self, fields: Headers, *, end: bool) -> None:
        if self.ended or self.closed:
            return
        connection = self.connection
        connection.h2.send_headers(self.stream_id, fields, end_stream=end)
        connection.flush_soon()
        if end:
            self._ended()

    def send_data(self, data: bytes) -> None:
        if self.ended or self.closed or not data:
            return
        if not self.out:
            self.last_out = self.connection.state.loop.time()
        self.out.append(data)
        self.out_size += len(data)
        if not self.batching:
            self.drain()
        if self.out_size > STREAM_HIGH_WATER and not self.upstream_paused:
            gate = self._upstream_gate()
            if gate is not None:
                self.upstream_paused = True
                gate.pause(PEER_FULL)

    def end_response(self, trailers: Headers | None) -> None:
        if self.ended or self.closed:
            return
        self.out_end = True
        self.out_trailers = trailers
        if not self.batching:
            self.drain()

    def drain(self) -> None:
        """Send what the windows take; the rest waits for a WINDOW_UPDATE."""
        if self.ended or self.closed:
            return
        connection = self.connection
        if connection.write_paused:
            connection.blocked[self.stream_id] = self
            return
        h2c = connection.h2
        out = self.out
        stream_id = self.stream_id
        sent = False
        if len(out) > 1:
            # Pieces read together go out together: fewer, fuller frames.
            joined = b"".join(out)
            out.clear()
            out.append(joined)
        while out:
            window = h2c.local_flow_control_window(stream_id)
            if window <= 0:
                connection.blocked[stream_id] = self
                break
            piece = out[0]
            size = min(window, h2c.max_outbound_frame_size, len(piece))
            if size < len(piece):
                # Views, not copies: a 256 KiB read goes out as sixteen 16 KiB frames.
                view = memoryview(piece)
                out[0] = view[size:]
                piece = view[:size]
            else:
                out.popleft()
            self.out_size -= size
            last = self.out_end and not out and self.out_trailers is None
            h2c.send_data(stream_id, piece, end_stream=last)
            sent = True
            if last:
                self._ended()
                break
        else:
            if self.out_end and not self.ended:
                if self.out_trailers:
                    h2c.send_headers(stream_id, self.out_trailers, end_stream=True)
                else:
                    h2c.end_stream(stream_id)
                sent = True
                self._ended()
        if sent:
            self.last_out = connection.state.loop.time()
            connection.flush_soon()
        if self.upstream_paused and self.out_size <= STREAM_LOW_WATER:
            self.upstream_paused = False
            gate = self._upstream_gate()
            if gate is not None:
                gate.resume(PEER_FULL)

    def _upstream_gate(self) -> ReadGate | None:
        if self.tunnel is not None:
            return self.tunnel.gate
        return self.exchange.upstream_gate()

    def _ended(self) -> None:
        self.ended = True
        self.connection.blocked.pop(self.stream_id, None)
        if self.client_done:
            self.connection.stream_finished(self)
        elif self.refused:
            # A refused WebSocket's answer, out after exchange_done (it waited for a window).
            self.stop_request()
        else:
            # The request is still coming: up to DISCARD_LIMIT of it is read and dropped (a
            # tunnel's client half may still carry bytes for the upstream).
            self._stop_checking_request_length()

    def _stop_checking_request_length(self) -> None:
        """Answered, a request short or long of its content-length concerns this stream only.

        curl, answered before its upload is done, ends the request at once with an empty
        DATA frame. h2 takes a body short of its content-length for a connection error,
        and every other stream on the connection would go with it; RFC 9113 8.1.1 makes
        it this stream's error, and this stream is done.
        """
        stream = self.connection.h2.streams.get(self.stream_id)
        if stream is not None:
            # h2 has no public setting for this: the declared length is kept here.
            stream._expected_content_length = None

    def stop_request(self) -> None:
        """Answered, and the request still coming: the client is asked to stop (RFC 9113 8.1)."""
        connection = self.connection
        if not self.closed and not connection.closed:
            connection.h2.reset_stream(self.stream_id, ErrorCodes.NO_ERROR)
            connection.flush_soon()
        self.client_gone()
        connection.stream_finished(self)

    # -- endings ----------------------------------------------------------------------------

    def reset(self, code: ErrorCodes) -> None:
        """End the stream at once (the exchange and its upstream go too)."""
        connection = self.connection
        if not self.ended and not self.closed and not connection.closed:
            connection.h2.reset_stream(self.stream_id, code)
            connection.flush_soon()
        self.ended = True
        self.client_gone()
        connection.stream_finished(self)

    def client_gone(self) -> None:
        """The client reset the stream, or the connection is gone."""
        self.closed = True
        self.held = []
        self.out.clear()
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None:
            tunnel.detach()
        self.exchange.client_lost()

    def check_progress(self, now: float, limits: Limits) -> None:
        """Called every tick: a request body or a response that stopped moving ends."""
        exchange = self.exchange
        if self.ended:
            if now - self.last_in > limits.body_timeout:
                self.stop_request()
            return
        if (
            not self.client_done
            and self.tunnel is None
            and exchange.request is not None
            and now - self.last_in > limits.body_timeout
        ):
            exchange.give_up_waiting(408, b"request body took too long\n")
        elif self.out and now - self.last_out > limits.send_timeout:
            self.connection.log(
                f"{self.client_ip} HTTP/2 stream {self.stream_id}: the client took no response "
                f"bytes for {limits.send_timeout:g} s -> reset"
            )
            self.reset(ErrorCodes.CANCEL)
