"""The HTTP/2 front: one client connection, many streams, each stream one exchange.

The ``h2`` library does the framing, HPACK, the stream state machines and the windows; this
module moves bytes between it and asyncio, and bounds what a client can make devtls do
(RFC 9113 10.5). Upstreams stay HTTP/1.1: each stream in flight has an upstream connection
of its own from the pool. Flow control runs end to end: a stream's response is read from
its upstream only while the client's window (and the connection's send buffer) takes it, and
the client's window for a request body is opened again only as the upstream takes the bytes.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from devtls.config import Limits, Upstream
from devtls.errors import ProtocolError
from devtls.proxy import forwarding, h2fields
from devtls.proxy.certs import SNI_ATTRIBUTE
from devtls.proxy.exchange import Exchange
from devtls.proxy.flow import (
    ANSWERS_WAIT,
    PEER_FULL,
    WRITE_HIGH_WATER,
    WRITE_LOW_WATER,
    FlowControlled,
    ReadGate,
    Transport,
    open_gate,
)
from devtls.proxy.forwarding import ClientSide
from devtls.proxy.http1 import BodyKind, Headers, RequestHead, ResponseHead
from devtls.proxy.state import ServerState
from devtls.proxy.upstream import UpstreamConnection

# nginx's http2_max_concurrent_streams is 128, Go's and Caddy's 250: each stream in flight
# holds an upstream connection, so fewer.
MAX_CONCURRENT_STREAMS = 100
# Request body bytes a client may send ahead on one connection, all streams together: what
# devtls holds at most while upstreams are slow to take them. Each stream has the default
# 65,535 of it.
CONNECTION_WINDOW = 256 * 1024
# Response bytes queued on a stream beyond what the client's window takes: above the high
# mark its upstream is not read, below the low one it is again.
STREAM_HIGH_WATER = WRITE_HIGH_WATER
STREAM_LOW_WATER = WRITE_LOW_WATER
# Bytes in the send buffer above which the client is not read: frames that answer frames
# (PING and SETTINGS acknowledgements) cannot pile up behind a client that reads nothing.
CONTROL_BACKLOG = 4 * WRITE_HIGH_WATER
# Frames that ask for no request (PING, SETTINGS, PRIORITY, empty DATA, unknown types): a
# bucket of this many, refilled at FLOOD_RATE a second (CVE-2019-9512, -9515, -9518).
FLOOD_BURST = 1000
FLOOD_RATE = 100.0
# Streams a client may cancel beyond those answered before it is told to calm down: the
# rapid reset attack (CVE-2023-44487) opens and cancels streams without end.
RESET_ALLOWANCE = 2 * MAX_CONCURRENT_STREAMS
# Request body bytes still read (and dropped) after a complete answer, before the stream is
# reset: RFC 9113 8.1 allows the reset at once, but curl, among others, then reports an error.
DISCARD_LIMIT = 256 * 1024
# How often the streams of a busy connection are checked against their timeouts.
TICK_SECONDS = 1.0

_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    # Inbound fields are validated (RFC 9113 8.2); cookie crumbs are joined by h2fields.
    validate_inbound_headers=True,
    normalize_inbound_headers=False,
    # What devtls sends is built lower-case and valid by h2fields.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)


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

    def _respond_locally(self, status: int, body: bytes, *, close: bool) -> None:
        request = self.request
        assert request is not None
        self.response_status = status
        self.response_bytes = len(body)
        bodiless = request.method == b"HEAD" or not body
        self.stream.send_headers(h2fields.local_fields(status, len(body)), end=bodiless)
        if not bodiless:
            self.stream.send_data(body)
            self.stream.end_response(None)
        self._finish(True)

    def refuse(self, exc: ProtocolError) -> None:
        """A request that cannot be forwarded (a malformed head): answered, never sent on."""
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
    )

    def __init__(self, connection: H2Connection, stream_id: int, now: float) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.client_ip = connection.client_ip
        self.sni = connection.sni
        self.closed = False
        self.gate: ReadGate | None = ReadGate(self)
        self.paused = False
        # Request body bytes that came before the upstream could take them (at most a
        # window's worth: none of them is acknowledged yet).
        self.held: list[bytes] = []
        self.unacked = 0
        self.client_done = False
        self.trailers: Headers | None = None
        # The response's DATA waiting for the client's window.
        self.out: deque[bytes] = deque()
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
                out[0] = piece[size:]
                piece = piece[:size]
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
        # Else the request is still coming: up to DISCARD_LIMIT of it is read and dropped
        # (a tunnel's client half may still carry bytes for the upstream).

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


class H2Connection(FlowControlled):
    """A client's (decrypted) HTTP/2 connection: frames in, frames out, a stream per request."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.h2 = h2.connection.H2Connection(config=_CONFIG)
        self.transport: Transport | None = None
        self.gate: ReadGate | None = None
        self.client_ip = ""
        self.sni: str | None = None
        self.closed = False
        self.streams: dict[int, H2Stream] = {}
        # Streams with DATA waiting for a window, or for the send buffer to drain.
        self.blocked: dict[int, H2Stream] = {}
        self.write_paused = False
        self.batch = 0
        self.flush_scheduled = False
        # The last stream ID told in a graceful GOAWAY: streams above it are refused.
        self.goaway_at: int | None = None
        self.client_gone_away = False
        self.preface_seen = False
        self.resets = 0
        self.answered = 0
        self.flood_tokens = float(FLOOD_BURST)
        self.flood_at = 0.0
        self.idle_since = 0.0
        self._client_sides: dict[bool, ClientSide] = {}
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._handlers: dict[type[h2.events.Event], Callable[[Any], None]] = {
            h2.events.RequestReceived: self._request_received,
            h2.events.DataReceived: self._data_received,
            h2.events.StreamEnded: self._stream_ended,
            h2.events.TrailersReceived: self._trailers_received,
            h2.events.StreamReset: self._stream_reset,
            h2.events.WindowUpdated: self._window_updated,
            h2.events.RemoteSettingsChanged: self._settings_changed,
            h2.events.ConnectionTerminated: self._terminated,
        }

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t, self.gate = open_gate(transport)
        self.transport = t
        peer = t.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        sslobj = t.get_extra_info("ssl_object")
        if sslobj is not None:
            self.sni = getattr(sslobj, SNI_ATTRIBUTE, None)
        limits = self.state.config.limits
        h2c = self.h2
        h2c.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_head_size,
                h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
            },
        )
        h2c.initiate_connection()
        h2c.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        if not self.state.admit(self, t, refusal=_refusal):
            self.closed = True
            return
        self._flush()
        self.idle_since = self.state.loop.time()
        self._arm(limits.head_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._protocol_error(exc)
            return
        handlers = self._handlers
        self.batch += 1
        try:
            for event in events:
                handler = handlers.get(type(event))
                if handler is not None:
                    handler(event)
                elif not isinstance(event, h2.events.SettingsAcknowledged):
                    # PING, PRIORITY, unknown frame types: nothing to do, within bounds.
                    self._flood()
                if self.closed:
                    return
        finally:
            self.batch -= 1
        self._flush()
        transport = self.transport
        if (
            transport is not None
            and self.gate is not None
            and transport.get_write_buffer_size() > CONTROL_BACKLOG
        ):
            self.gate.pause(ANSWERS_WAIT)

    def eof_received(self) -> bool:
        # The client sends nothing more; what it asked for still goes out. A stream answered
        # already waits only for the rest of its request (or a tunnel's client half), which
        # cannot come now: it is finished at once (the last one closing the connection), not
        # left until body_timeout, or a stop's drain_timeout, ends it.
        self.client_gone_away = True
        for stream in [s for s in self.streams.values() if s.ended]:
            stream.client_gone()
            self.stream_finished(stream)
        if not self.streams:
            self.close()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._drop_timer()
        self.state.connection_closed(self)
        streams = list(self.streams.values())
        self.streams.clear()
        self.blocked.clear()
        for stream in streams:
            stream.client_gone()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.gate is not None:
            self.gate.resume(ANSWERS_WAIT)
        self._drain_blocked()

    def peer_gate(self) -> ReadGate | None:
        return None  # each stream has its own; see pause_writing

    # -- frames in ---------------------------------------------------------------------------

    def _request_received(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        assert stream_id is not None
        if self.goaway_at is not None and stream_id > self.goaway_at:
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        loop = self.state.loop
        stream = H2Stream(self, stream_id, loop.time())
        self.streams[stream_id] = stream
        if len(self.streams) == 1:
            self._arm(TICK_SECONDS)
        ended = event.stream_ended is not None
        stream.client_done = ended
        limits = self.state.config.limits
        try:
            head = h2fields.request_head(
                event.headers or [], end_stream=ended, max_fields=limits.max_headers
            )
        except ProtocolError as exc:
            self.log(f"{self.client_ip} bad request: {exc.message} -> {exc.status_hint}")
            stream.exchange.refuse(exc)
            return
        bodiless = head.body is BodyKind.NONE or (
            head.body is BodyKind.LENGTH and head.content_length == 0
        )
        stream.start(head, bodiless)

    def _data_received(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        assert stream_id is not None
        data = event.data or b""
        length = event.flow_controlled_length or 0
        if not data and event.stream_ended is None:
            self._flood()
        stream = self.streams.get(stream_id)
        if stream is None:
            # A stream already answered or reset: its bytes still count on the connection.
            if length:
                self.h2.acknowledge_received_data(length, stream_id)
            return
        stream.body_data(data, length, self.state.loop.time())

    def _trailers_received(self, event: h2.events.TrailersReceived) -> None:
        stream = self.streams.get(event.stream_id or 0)
        if stream is not None:
            stream.trailers = list(event.headers or [])

    def _stream_ended(self, event: h2.events.StreamEnded) -> None:
        stream = self.streams.get(event.stream_id or 0)
        if stream is not None:
            stream.client_ended()

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.get(event.stream_id or 0)
        if stream is None:
            return
        stream.ended = True
        stream.client_gone()
        self.stream_finished(stream, answered=False)
        self.resets += 1
        if self.resets - self.answered > RESET_ALLOWANCE:
            self.calm_down(b"too many streams reset")

    def _window_updated(self, event: h2.events.WindowUpdated) -> None:
        if not event.stream_id:
            self._drain_blocked()
        else:
            stream = self.blocked.pop(event.stream_id, None)
            if stream is not None:
                stream.drain()

    def _settings_changed(self, event: h2.events.RemoteSettingsChanged) -> None:
        if self.preface_seen:
            self._flood()
        self.preface_seen = True
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
            self._drain_blocked()

    def _terminated(self, event: h2.events.ConnectionTerminated) -> None:
        # The client's GOAWAY: it opens no more streams; those in flight still finish.
        self.client_gone_away = True
        if event.error_code or not self.streams:
            self.close()

    def _flood(self) -> None:
        now = self.state.loop.time()
        tokens = min(FLOOD_BURST, self.flood_tokens + (now - self.flood_at) * FLOOD_RATE)
        self.flood_at = now
        self.flood_tokens = tokens - 1
        if self.flood_tokens < 0:
            self.calm_down(b"too many frames that ask for nothing")

    # -- frames out --------------------------------------------------------------------------

    def flush_soon(self) -> None:
        """Send what h2 has queued once this turn of the loop is over (one write for all)."""
        if self.batch or self.flush_scheduled or self.closed:
            return
        self.flush_scheduled = True
        self.state.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        data = self.h2.data_to_send()
        if data:
            transport.write(data)

    def _drain_blocked(self) -> None:
        blocked = self.blocked
        if not blocked:
            return
        self.blocked = {}
        for stream in blocked.values():
            stream.drain()
            if self.write_paused:
                # Those not reached yet wait for resume_writing too.
                for rest in blocked.values():
                    if not rest.ended and rest.out:
                        self.blocked.setdefault(rest.stream_id, rest)
                return

    # -- streams -----------------------------------------------------------------------------

    def client_side(self, upstream: Upstream) -> ClientSide:
        wants_tls = upstream.wants_tls_info
        side = self._client_sides.get(wants_tls)
        if side is None:
            tls = None
            if wants_tls and self.transport is not None:
                sslobj = self.transport.get_extra_info("ssl_object")
                if sslobj is not None:
                    cipher = sslobj.cipher()
                    tls = (sslobj.version() or "", cipher[0] if cipher else "")
            side = ClientSide(self.client_ip, self.sni, self.state.listen_port, tls, b"HTTP/2")
            self._client_sides[wants_tls] = side
        return side

    def stream_finished(self, stream: H2Stream, *, answered: bool = True) -> None:
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self.blocked.pop(stream.stream_id, None)
        if answered:
            self.answered += 1
        if not self.streams:
            self.idle_since = self.state.loop.time()
            if self.goaway_at is not None or self.client_gone_away or self.state.draining:
                self._close_gracefully()
            else:
                self._arm(self.state.config.limits.idle_timeout)

    def log(self, line: str) -> None:
        if not self.state.config.quiet:
            self.state.write_log(line)

    # -- timers ------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        loop = self.state.loop
        self._deadline = deadline = loop.time() + seconds
        timer = self._timer
        if timer is not None and timer.when() > deadline:
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        loop = self.state.loop
        now = loop.time()
        if self.streams:
            limits = self.state.config.limits
            for stream in list(self.streams.values()):
                stream.check_progress(now, limits)
            self._flush()
            if self.streams:
                self._timer = loop.call_at(now + TICK_SECONDS, self._on_timer)
                return
        limits = self.state.config.limits
        allowed = limits.idle_timeout if self.preface_seen else limits.head_timeout
        deadline = self.idle_since + allowed
        if now >= deadline:
            self._close_gracefully()
        else:
            self._timer = loop.call_at(deadline, self._on_timer)

    def _drop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- endings -----------------------------------------------------------------------------

    def _protocol_error(self, exc: h2.exceptions.ProtocolError) -> None:
        """A connection error: h2 has queued its GOAWAY; it goes out, then the connection."""
        code = getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)
        name = code.name if isinstance(code, ErrorCodes) else str(code)
        self.log(f"{self.client_ip} HTTP/2 error: {exc} -> GOAWAY {name}")
        self._flush()
        self.close()

    def calm_down(self, reason: bytes) -> None:
        """GOAWAY with ENHANCE_YOUR_CALM (RFC 9113 5.4.1), as nginx and Go do for floods."""
        if self.closed:
            return
        self.log(f"{self.client_ip} HTTP/2: {reason.decode()} -> GOAWAY ENHANCE_YOUR_CALM")
        self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, additional_data=reason)
        self._flush()
        self.close()

    def _close_gracefully(self) -> None:
        if self.closed:
            return
        last = self.goaway_at if self.goaway_at is not None else self.h2.highest_inbound_stream_id
        self.h2.close_connection(ErrorCodes.NO_ERROR, last_stream_id=last)
        self._flush()
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._drop_timer()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self._drop_timer()
        if self.transport is not None:
            self.transport.abort()

    def close_if_idle(self) -> None:
        """When stopping: GOAWAY at once; streams in flight finish, then the connection ends.

        The GOAWAY is written by hand: h2 allows no frame after its own, and the streams in
        flight still need theirs. WebSockets end now, as they do on HTTP/1.1.
        """
        if self.closed:
            return
        if self.goaway_at is None:
            self._flush()
            self.goaway_at = self.h2.highest_inbound_stream_id
            frame = GoAwayFrame(stream_id=0, last_stream_id=self.goaway_at, error_code=0)
            if self.transport is not None:
                self.transport.write(frame.serialize())
        for stream in list(self.streams.values()):
            if stream.tunnel is not None:
                stream.tunnel.close()
        if not self.streams:
            self._close_gracefully()


@functools.cache
def _refusal() -> bytes:
    """What a client over the connection limit gets: SETTINGS, then GOAWAY (retry later)."""
    refused = h2.connection.H2Connection(config=_CONFIG)
    refused.initiate_connection()
    refused.close_connection(ErrorCodes.REFUSED_STREAM, additional_data=b"too many connections")
    return refused.data_to_send()
