"""The byte pump for upgraded (101) and ``--tcp`` connections: flow control and half-close.

A tunnel joins a client connection and an upstream connection: bytes go both ways as they
come, each side's end (a half-close) is passed on to the other, and the client connection
closes when both ends are done or the upstream is gone. A full send buffer on one side stops
reading on the other (the read gates of ``flow``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from devtls.config import Upstream
from devtls.proxy.certs import peer_of
from devtls.proxy.flow import BACKLOG, CONNECTING, FlowControlled, ReadGate, Transport, open_gate
from devtls.proxy.state import ServerState
from devtls.proxy.upstream import UpstreamConnection, describe_upstream_failure

log = logging.getLogger("devtls")


class TunnelClient(Protocol):
    """The client connection a tunnel runs on."""

    transport: Transport | None
    gate: ReadGate | None
    closed: bool

    def write(self, data: bytes) -> None:
        """A write that may be held in the connection's batch."""

    def close(self) -> None: ...

    def abort(self) -> None: ...


class _Departed:
    """The client side of a tunnel whose client connection is gone (see exchange._Departed)."""

    transport: Transport | None = None
    gate: ReadGate | None = None
    closed = True

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


DEPARTED: TunnelClient = _Departed()


class Tunnel:
    """Bytes both ways between one client connection and one upstream connection."""

    __slots__ = ("attached", "client", "client_eof", "eof_pending", "held", "upstream")

    def __init__(self, client: TunnelClient) -> None:
        self.client = client
        self.upstream: UpstreamConnection | None = None
        # The upstream's bytes flow to the client (for --tcp: once the upstream is open).
        self.attached = False
        # --tcp: what the client sent (and whether it ended) before the upstream was open.
        self.held = bytearray()
        self.eof_pending = False
        self.client_eof = False

    def upgrade(self, connection: UpstreamConnection, early: bytes) -> None:
        """A 101 went out: ``early`` is what the client sent after its request."""
        self.upstream = connection
        self.attached = True
        assert connection.transport is not None
        if early:
            connection.transport.write(early)
        rest = connection.start_tunnel(self)
        if rest:
            self.client.write(rest)

    # -- opening (--tcp): the pool's requester ---------------------------------------------

    def open(self, state: ServerState, upstream: Upstream) -> None:
        gate = self.client.gate
        assert gate is not None
        gate.pause(CONNECTING)
        state.pool.acquire(upstream, self, fresh=True, tunnel=True)

    def upstream_ready(self, connection: UpstreamConnection) -> None:
        client = self.client
        if client.closed:
            connection.close()
            return
        self.upstream = connection
        transport = connection.transport
        assert transport is not None
        if not connection.closed:
            early, self.held = bytes(self.held), bytearray()
            if early:
                transport.write(early)
            if self.eof_pending:
                self.client_eof = True
                if transport.can_write_eof():
                    transport.write_eof()
        if client.gate is not None:
            client.gate.resume(CONNECTING)
        # Last: what the upstream said before now goes out, and an upstream already gone
        # closes this connection.
        self.attached = True
        greeting = connection.start_tunnel(self)
        if greeting:
            client.write(greeting)
        if connection.closed:
            client.close()
            return
        if connection.gate is not None:
            connection.gate.resume(BACKLOG)
        if connection.upstream_eof and client.transport is not None:
            client.transport.write_eof()
            if self.client_eof:
                client.close()

    def upstream_failed(
        self, upstream: Upstream, exc: BaseException, tried: tuple[str, ...] = ()
    ) -> None:
        """The upstream cannot be reached; the client learns by the connection closing."""
        _, message = describe_upstream_failure(upstream, exc, tried)
        log.warning("upstream %s: %s", upstream.authority, message)
        self.client.close()

    def upstream_fault(self) -> None:
        if not self.client.closed:
            self.client.abort()

    # -- the client side (called by the client connection) ---------------------------------

    def client_data(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None:
            # --tcp: bytes that came with the handshake, before the upstream is open.
            self.held += data
        elif not upstream.closed and upstream.transport is not None:
            # (uvloop raises on a write to a transport that is closed.)
            upstream.transport.write(data)

    def client_eof_received(self) -> bool:
        upstream = self.upstream
        if upstream is None:
            self.eof_pending = True
        elif not upstream.closed and upstream.transport is not None:
            if upstream.transport.can_write_eof():
                upstream.transport.write_eof()
            self.client_eof = True
            if upstream.upstream_eof:
                self.client.close()
                return False
        return True

    def client_lost(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.detach()
        self.client = DEPARTED

    def upstream_gate(self) -> ReadGate | None:
        return self.upstream.gate if self.upstream is not None else None

    def close_upstream(self) -> None:
        """When stopping: the upstream goes now (tunnels live as long as their apps)."""
        if self.upstream is not None:
            self.upstream.close()

    # -- the upstream side: the Pump of the upstream connection ---------------------------

    def client_gate(self) -> ReadGate | None:
        return self.client.gate if self.attached else None

    def upstream_data(self, data: bytes) -> None:
        transport = self.client.transport
        if transport is not None:
            transport.write(data)

    def upstream_eof(self) -> bool:
        client = self.client
        if client.transport is not None:
            client.transport.write_eof()
            if self.client_eof:
                client.close()
                return False
        return True

    def upstream_lost(self) -> None:
        self.upstream = None
        self.client.close()


class TcpConnection(FlowControlled):
    """--tcp: a client connection that is a tunnel to its route's upstream from the start."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.transport: Transport | None = None
        self.gate: ReadGate | None = None
        self.closed = False
        self.tunnel = Tunnel(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t, self.gate = open_gate(transport)
        self.transport = t
        if not self.state.admit(self, t):
            self.closed = True
            return
        _, sni = peer_of(t)
        _, upstream = self.state.router.match(sni or "", "/")
        if upstream is None:
            self.close()
            return
        self.tunnel.open(self.state, upstream)

    def data_received(self, data: bytes) -> None:
        self.tunnel.client_data(data)

    def eof_received(self) -> bool:
        return self.tunnel.client_eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connection_closed(self)
        self.tunnel.client_lost()

    def peer_gate(self) -> ReadGate | None:
        return self.tunnel.upstream_gate()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close_if_idle(self) -> None:
        """When stopping: a tunnel is closed now (waiting would only delay the stop)."""
        self.tunnel.close_upstream()
        self.close()
