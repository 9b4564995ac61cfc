"""Upstream connections, their silence watchdog, and the pool that keeps them between requests.

An upstream connection talks to whoever uses it through small interfaces: a ``Requester`` asked
the pool for it, an ``UpstreamUser`` (one exchange: an HTTP/1 request or an HTTP/2 stream) takes
its response, and a ``Pump`` takes its bytes once it is a tunnel.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections import deque
from typing import Protocol

from devtls.config import ServeConfig, Upstream
from devtls.errors import ProtocolError
from devtls.proxy import http1
from devtls.proxy.flow import BACKLOG, PEER_FULL, FlowControlled, ReadGate, Transport, open_gate
from devtls.proxy.http1 import END, Data, ResponseHead

log = logging.getLogger("devtls")

# Below Node's default keepAliveTimeout (5 s): an idle upstream connection is dropped by us
# before the upstream drops it, which keeps reuse races rare.
UPSTREAM_IDLE_SECONDS = 4.0
# As many as one HTTP/2 connection's streams: a page's burst of modules finds them again.
MAX_IDLE_PER_UPSTREAM = 100
# What "localhost" means for an upstream, in the order tried (as Node and curl resolve it).
LOOPBACK_HOSTS = ("127.0.0.1", "::1")
# --tcp: bytes an upstream sends before the client side is attached (SMTP, MySQL and SSH
# greetings, an h2 server's SETTINGS) are kept up to this, then the upstream is not read.
MAX_TUNNEL_EARLY = 64 * 1024


class PoolContext(Protocol):
    """What the pool reads of the server state."""

    config: ServeConfig
    upstream_tls: ssl.SSLContext | None
    draining: bool
    loop: asyncio.AbstractEventLoop


class Requester(Protocol):
    """Whoever asked the pool for a connection; told once how that went."""

    def upstream_ready(self, connection: UpstreamConnection) -> None:
        """The connection is open (or came from the pool) and is now this requester's."""

    def upstream_failed(
        self, upstream: Upstream, exc: BaseException, tried: tuple[str, ...]
    ) -> None:
        """No connection could be opened; ``tried`` names the addresses when several were."""

    def upstream_fault(self) -> None:
        """A fault of ours while handing the connection over (logged already)."""


class UpstreamUser(Requester, Protocol):
    """One exchange using an upstream connection: it takes the response, event by event."""

    @property
    def response_status(self) -> int:
        """The status sent to the client so far (0: nothing was answered yet)."""

    def sender_gate(self) -> ReadGate | None:
        """The gate of what sends this connection the request body (paused while it is full)."""

    def begin_batch(self) -> None:
        """Writes to the client may be held until end_batch."""

    def end_batch(self) -> None: ...

    def response_head(self, head: ResponseHead) -> None: ...

    def response_data(self, data: bytes) -> None: ...

    def response_end(self, connection: UpstreamConnection) -> None:
        """The response is complete; the user releases the connection to the pool."""

    def response_invalid(self, exc: ProtocolError) -> None:
        """The upstream broke HTTP/1.1; the connection is detached and closed after this."""

    def upstream_lost(self, connection: UpstreamConnection, *, nothing_sent: bool = False) -> None:
        """The upstream closed or failed before the response was complete."""

    def upstream_timed_out(self, timeout: float) -> None:
        """The upstream said nothing for ``timeout`` seconds; it is closed after this."""


class Pump(Protocol):
    """What a tunnel's upstream connection passes its bytes and its end to."""

    def client_gate(self) -> ReadGate | None: ...

    def upstream_data(self, data: bytes) -> None: ...

    def upstream_eof(self) -> bool:
        """The upstream's half-close; the result is ``eof_received``'s."""

    def upstream_lost(self) -> None: ...


class UpstreamConnection(FlowControlled):
    """A connection to an upstream, reused across requests through the pool."""

    def __init__(self, pool: UpstreamPool, key: str, *, tunnel: bool = False) -> None:
        self.pool = pool
        self.key = key
        self.transport: Transport | None = None
        self.reader = http1.ResponseReader()
        self.user: UpstreamUser | None = None
        self.pump: Pump | None = None
        self.gate: ReadGate | None = None
        self.ready = False
        self.reused = False
        # A --tcp connection is a tunnel from its first byte.
        self.tunnel = tunnel
        self.early = b""
        self.upstream_eof = False
        self.closed = False
        self.idle_since = 0.0
        self.last_active = 0.0
        self.timeout_timer: asyncio.TimerHandle | None = None
        self.watching = False
        # Counted in the pool's max_upstream_connections (an HTTP connection, not a tunnel).
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.gate = open_gate(transport)
        self.ready = True

    def attach(self, user: UpstreamUser, *, head_request: bool) -> None:
        """``user`` sends its request on this connection now and takes the response."""
        self.user = user
        self.reader.expect_response(head_request=head_request)
        self._watch_silence()

    def detach(self) -> None:
        """Whoever used this connection is gone: nobody is told of its end."""
        self.user = None
        self.pump = None
        self.close()

    def start_tunnel(self, pump: Pump) -> bytes:
        """From now on every byte and the end go to ``pump``; returns the bytes before it."""
        self.tunnel = True
        self.user = None
        self.pump = pump
        self._stop_watch()
        self.pool.uncount(self)  # a WebSocket lives as long as its app: it takes no HTTP slot
        early, self.early = self.early, b""
        return early + self.reader.take_buffered()

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            pump = self.pump
            if pump is not None:
                pump.upstream_data(data)
            elif not self.closed:
                # --tcp, before the client side is attached: a greeting, kept for it.
                self.early += data
                if len(self.early) >= MAX_TUNNEL_EARLY and self.gate is not None:
                    self.gate.pause(BACKLOG)
            return
        user = self.user
        if user is None:
            # An idle connection must not speak; whatever this is, the connection is done.
            self.close()
            return
        self.last_active = time.monotonic()
        self.reader.feed(data)
        self._pump(user)

    def _pump(self, user: UpstreamUser) -> None:
        user.begin_batch()
        try:
            self._pump_events(user)
        finally:
            user.end_batch()

    def _pump_events(self, user: UpstreamUser) -> None:
        reader = self.reader
        try:
            while self.user is user and not self.tunnel:
                event = reader.next_event()
                if event is None:
                    return
                if isinstance(event, Data):
                    user.response_data(event.data)
                elif event is END:
                    self._stop_watch()
                    self.user = None
                    user.response_end(self)
                    return
                else:
                    assert isinstance(event, ResponseHead)
                    user.response_head(event)
        except ProtocolError as exc:
            self.user = None
            user.response_invalid(exc)
            self.close()

    def eof_received(self) -> bool:
        self.upstream_eof = True
        if self.tunnel:
            pump = self.pump
            return pump.upstream_eof() if pump is not None else True
        user = self.user
        if user is not None:
            if user.response_status == 0 and not self.reader.buffered:
                # Not a byte of a response: connection_lost decides between a retry and a 502.
                return False
            self.reader.feed_eof()
            self._pump(user)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ready = False
        self._drop_watch()
        self.pool.forget(self)
        pump, self.pump = self.pump, None
        user, self.user = self.user, None
        if pump is not None:
            pump.upstream_lost()
        elif user is not None:
            user.upstream_lost(self)

    def peer_gate(self) -> ReadGate | None:
        if self.pump is not None:
            return self.pump.client_gate()
        return self.user.sender_gate() if self.user is not None else None

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
        user = self.user
        if not self.watching or user is None or self.tunnel:
            return
        if quiet_for < timeout:
            self.timeout_timer = self.pool.state.loop.call_later(
                timeout - quiet_for, self._on_silence
            )
            return
        self.user = None
        user.upstream_timed_out(timeout)
        self.close()


class UpstreamPool:
    """Idle upstream connections by upstream, and opening new ones."""

    def __init__(self, state: PoolContext) -> None:
        self.state = state
        self.idle: dict[str, list[UpstreamConnection]] = {}
        self.pending: set[asyncio.Task[None]] = set()
        self.sweeper: asyncio.TimerHandle | None = None
        # For upstreams named "localhost": the loopback address that answered last.
        self.answered: dict[str, str] = {}
        # HTTP connections open or being opened, by upstream, and who waits for one when
        # max_upstream_connections are (HTTP/2 streams beyond it queue, as in nginx's max_conns).
        self.busy: dict[str, int] = {}
        self.waiting: dict[str, deque[tuple[Upstream, Requester]]] = {}

    def acquire(
        self,
        upstream: Upstream,
        requester: Requester,
        *,
        fresh: bool = False,
        tunnel: bool = False,
    ) -> bool:
        """Give ``requester`` a connection now (from the pool) or when it is open.

        True when it was given now; False when one is being opened (the requester may pause
        reading meanwhile).
        """
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
                requester.upstream_ready(connection)
                return True
        if not tunnel:
            busy = self.busy.get(key, 0)
            if busy >= self.state.config.limits.max_upstream_connections:
                self.waiting.setdefault(key, deque()).append((upstream, requester))
                return False
            self.busy[key] = busy + 1
        self._start_open(upstream, key, requester, tunnel)
        return False

    def _start_open(self, upstream: Upstream, key: str, requester: Requester, tunnel: bool) -> None:
        task = asyncio.ensure_future(self._open(upstream, key, requester, tunnel))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def uncount(self, connection: UpstreamConnection) -> None:
        """``connection`` no longer takes an HTTP slot (closed, or now a tunnel)."""
        if connection.counted:
            connection.counted = False
            self._slot_free(connection.key)

    def _slot_free(self, key: str) -> None:
        waiting = self.waiting.get(key)
        if waiting:
            upstream, requester = waiting.popleft()
            self._start_open(upstream, key, requester, False)  # the slot passes on
        else:
            self.busy[key] -= 1

    async def _open(self, upstream: Upstream, key: str, requester: Requester, tunnel: bool) -> None:
        hosts = self._hosts_to_try(upstream, key)
        # Kept without their tracebacks: those hold this frame (and the client) in a cycle with
        # wait_for's task, which kept each refused connection's memory until a full gc.
        failures: list[BaseException] = []
        protocol: UpstreamConnection | None = None
        for host in hosts:
            try:
                protocol = await self.connect(upstream, key, host, tunnel=tunnel)
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
        if not tunnel:
            if protocol is None:
                self._slot_free(key)
            else:
                protocol.counted = True
                if protocol.closed:  # lost before this task went on: forget() came too early
                    self.uncount(protocol)
        try:
            if protocol is None:
                tried = tuple(_authority(host, upstream.port) for host in hosts)
                tried = tried if len(tried) > 1 else ()
                requester.upstream_failed(upstream, failures[-1], tried)
            else:
                requester.upstream_ready(protocol)
        except Exception:
            # A fault of ours must still end in an answer, never in a task nobody awaits.
            log.exception("forwarding to %s failed", upstream.authority)
            requester.upstream_fault()
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

    async def connect(
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
        if connection.gate is not None:
            # Paused because the last user's client was full: that client is not the next
            # user's, and an idle connection must be read to notice the upstream closing it.
            connection.gate.resume(PEER_FULL)
        waiting = self.waiting.get(connection.key)
        if waiting:
            _, requester = waiting.popleft()
            connection.reused = True
            requester.upstream_ready(connection)
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
        """A connection is gone (from its connection_lost)."""
        idle = self.idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)
        self.uncount(connection)

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
