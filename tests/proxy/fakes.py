"""The forwarder on fake transports: no sockets, no event loop turns needed to move bytes.

A client connection and its upstream connections get ``FakeTransport``s that keep what is
written; the pool opens no sockets, each connect takes the next scripted outcome. Used by the
exchange tests and by scripts/bench/python_cost.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from devtls.config import Limits, Route, ServeConfig, Upstream
from devtls.proxy.h1 import H1Connection
from devtls.proxy.routes import Router
from devtls.proxy.state import ServerState
from devtls.proxy.upstream import UpstreamConnection, UpstreamPool

UPSTREAM = Upstream("http", "127.0.0.1", 3000)


class FakeTransport:
    """Keeps what is written; reports a loopback peer."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.eof_written = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def writelines(self, pieces: list[bytes]) -> None:
        self.out.extend(pieces)

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def take(self) -> bytes:
        """Everything written since the last take."""
        data = b"".join(self.out)
        self.out.clear()
        return data


class FakePool(UpstreamPool):
    """A pool that opens no sockets: each connect takes the next outcome in ``outcomes``.

    ``None`` (or no outcome left) opens a connection on a FakeTransport; bytes open one that
    says them at once (a greeting); an exception is raised as the connect's failure.
    """

    def __init__(self, state: ServerState) -> None:
        super().__init__(state)
        self.outcomes: list[BaseException | bytes | None] = []
        self.opened: list[UpstreamConnection] = []

    async def connect(
        self, upstream: Upstream, key: str, host: str, *, tunnel: bool
    ) -> UpstreamConnection:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, BaseException):
            raise outcome
        connection = UpstreamConnection(self, key, tunnel=tunnel)
        connection.connection_made(FakeTransport())  # type: ignore[arg-type]
        if outcome:
            connection.data_received(outcome)
        self.opened.append(connection)
        return connection


def make_state(
    upstream: Upstream | None = UPSTREAM,
    *,
    routes: tuple[Route, ...] = (),
    tcp: bool = False,
    limits: Limits | None = None,
    log: list[str] | None = None,
) -> tuple[ServerState, FakePool]:
    """A server's shared state (on the running loop) with a FakePool.

    With ``log``, the access log is on and its lines are appended there.
    """
    config = ServeConfig(upstream=upstream, routes=routes, quiet=log is None, tcp=tcp)
    if limits is not None:
        config = replace(config, limits=limits)
    state = ServerState(
        config=config,
        router=Router(routes, upstream),
        write_log=log.append if log is not None else lambda line: None,
    )
    state.pool = pool = FakePool(state)
    return state, pool


def pooled_upstream(state: ServerState, upstream: Upstream = UPSTREAM) -> UpstreamConnection:
    """An open upstream connection, idle in the pool."""
    connection = UpstreamConnection(state.pool, str(upstream))
    connection.connection_made(FakeTransport())  # type: ignore[arg-type]
    state.pool.release(connection, reusable=True)
    return connection


def client_connection(state: ServerState) -> tuple[H1Connection, FakeTransport]:
    """An HTTP/1 client connection, just accepted."""
    transport = FakeTransport()
    client = H1Connection(state)
    client.connection_made(transport)  # type: ignore[arg-type]
    return client, transport


def transport_of(connection: UpstreamConnection) -> FakeTransport:
    transport = connection.transport
    assert isinstance(transport, FakeTransport)
    return transport
