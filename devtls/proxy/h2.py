"""The HTTP/2 front: one client connection, many streams, each stream one exchange.

The ``h2`` library does the framing, HPACK, the stream state machines and the windows; this
module moves bytes between it and asyncio, and bounds what a client can make devtls do
(RFC 9113 10.5). Upstreams stay HTTP/1.1: each stream in flight has an upstream connection
of its own from the pool (``h2stream``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from devtls.config import Upstream
from devtls.errors import ProtocolError
from devtls.proxy import forwarding, h2fields
from devtls.proxy.certs import peer_of, tls_of
from devtls.proxy.flow import (
    ANSWERS_WAIT,
    WRITE_HIGH_WATER,
    FlowControlled,
    ReadGate,
    Transport,
    open_gate,
)
from devtls.proxy.forwarding import ClientSide
from devtls.proxy.h2stream import H2Stream
from devtls.proxy.state import ServerState
from devtls.proxy.timer import LazyTimer

# nginx's http2_max_concurrent_streams is 128, Go's and Caddy's 250: each stream in flight
# holds an upstream connection, so fewer.
MAX_CONCURRENT_STREAMS = 100
# Streams over MAX_CONCURRENT_STREAMS are refused one by one (REFUSED_STREAM, as nginx and Go
# do); a client this far over it has the connection ended by h2 (GOAWAY PROTOCOL_ERROR). h2
# counts every stream one read opens before devtls sees any: this bounds what a read costs.
STREAM_HARD_LIMIT = 2 * MAX_CONCURRENT_STREAMS
# Request body bytes a client may send ahead on one connection, all streams together: what
# devtls holds at most while upstreams are slow to take them. Each stream has the default
# 65,535 of it.
CONNECTION_WINDOW = 256 * 1024
# Bytes in the send buffer above which the client is not read: frames that answer frames
# (PING and SETTINGS acknowledgements) cannot pile up behind a client that reads nothing.
CONTROL_BACKLOG = 4 * WRITE_HIGH_WATER
# Frames that ask for no request (PING, SETTINGS, PRIORITY, empty DATA, unknown types): a
# bucket of this many, refilled at FLOOD_RATE a second (CVE-2019-9512, -9515, -9518).
FLOOD_BURST = 1000
FLOOD_RATE = 100.0
# Streams a client may cancel (or have refused) beyond those answered before it is told to
# calm down: the rapid reset attack (CVE-2023-44487) opens and cancels streams without end.
RESET_ALLOWANCE = 2 * MAX_CONCURRENT_STREAMS
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
        self.timer = LazyTimer(state.wheel, self._on_timer)
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
        self.client_ip, self.sni = peer_of(t)
        limits = self.state.config.limits
        h2c = self.h2
        codes = h2.settings.SettingCodes
        settings = {
            codes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            codes.MAX_HEADER_LIST_SIZE: limits.max_head_size,
            codes.ENABLE_CONNECT_PROTOCOL: 1,
        }
        h2c.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        # Settings given this way are current at once, so no acknowledgement ever tells h2 to
        # apply this one to the HPACK decoder: done here, else it stays h2's 64 KiB.
        h2c.decoder.max_header_list_size = limits.max_head_size
        h2c.initiate_connection()
        # What was advertised is sent; what h2 enforces is STREAM_HARD_LIMIT. Between the two,
        # _request_received refuses each stream over the limit (RFC 9113 5.1.2: a stream
        # error), where h2 would end the connection and every stream on it.
        settings[codes.MAX_CONCURRENT_STREAMS] = STREAM_HARD_LIMIT
        h2c.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        h2c.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        if not self.state.admit(self, t, refusal=_refusal):
            self.closed = True
            return
        self._flush()
        self.idle_since = self.state.loop.time()
        self.timer.arm(limits.head_timeout)

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
        self.timer.drop()
        self.state.connection_closed(self)
        self._drop_streams()

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
        if len(self.streams) >= MAX_CONCURRENT_STREAMS:
            # Over the advertised limit: refused, and counted as a stream the client reset.
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self._count_reset()
            return
        loop = self.state.loop
        stream = H2Stream(self, stream_id, loop.time())
        self.streams[stream_id] = stream
        if len(self.streams) == 1:
            self.timer.arm(TICK_SECONDS)
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
        stream.start(head, forwarding.request_is_bodiless(head))

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
        self._count_reset()

    def _count_reset(self) -> None:
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
        # The client's GOAWAY. h2 sends nothing after one (its state machine is closed), so
        # the streams in flight cannot be answered: they end with the connection.
        self.client_gone_away = True
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
            tls = tls_of(self.transport) if wants_tls else None
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
                self.timer.arm(self.state.config.limits.idle_timeout)

    def log(self, line: str) -> None:
        if not self.state.config.quiet:
            self.state.write_log(line)

    # -- timers ------------------------------------------------------------------------------

    def _on_timer(self) -> None:
        """Every tick while streams are open; else once the connection has been idle long."""
        if self.closed:
            return
        now = self.state.loop.time()
        limits = self.state.config.limits
        if self.streams:
            for stream in list(self.streams.values()):
                stream.check_progress(now, limits)
            self._flush()
            if self.streams:
                self.timer.arm(TICK_SECONDS)
                return
        allowed = limits.idle_timeout if self.preface_seen else limits.head_timeout
        left = self.idle_since + allowed - now
        if left <= 0:
            self._close_gracefully()
        else:
            self.timer.arm(left)

    # -- endings -----------------------------------------------------------------------------

    def _protocol_error(self, exc: h2.exceptions.ProtocolError) -> None:
        """A connection error: h2 has queued its GOAWAY; it goes out, then the connection."""
        code = getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)
        name = code.name if isinstance(code, ErrorCodes) else str(code)
        what = str(exc)
        if what.isdigit():  # h2's StreamClosedError and NoSuchStreamError say only the stream
            what = f"{type(exc).__name__} on stream {what}"
        self.log(f"{self.client_ip} HTTP/2 error: {what} -> GOAWAY {name}")
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
        self.timer.drop()
        self._drop_streams()
        if self.transport is not None:
            self.transport.close()

    def _drop_streams(self) -> None:
        """Nothing more can be sent: the streams' exchanges and upstreams end now."""
        streams = list(self.streams.values())
        self.streams.clear()
        self.blocked.clear()
        for stream in streams:
            stream.client_gone()

    def abort(self) -> None:
        self.closed = True
        self.timer.drop()
        self._drop_streams()
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
