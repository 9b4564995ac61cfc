"""What every connection of one server shares: settings, routes, the upstream pool, the log."""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from devtls.config import ServeConfig
from devtls.proxy import http1
from devtls.proxy.flow import Transport
from devtls.proxy.heap import HeapTrimmer
from devtls.proxy.routes import Router
from devtls.proxy.timer import TimerWheel
from devtls.proxy.upstream import UpstreamPool


class ServedConnection(Protocol):
    """A client connection as the server sees it when stopping."""

    def close_if_idle(self) -> None: ...
    def abort(self) -> None: ...


@dataclass
class ServerState:
    """What every connection of one server shares."""

    config: ServeConfig
    router: Router
    upstream_tls: ssl.SSLContext | None = None
    listen_port: int = 0
    connections: set[ServedConnection] = field(default_factory=set)
    draining: bool = False
    pool: UpstreamPool = field(init=False)
    heap: HeapTrimmer = field(init=False)
    wheel: TimerWheel = field(init=False)  # the connections' timeouts
    write_log: Callable[[str], None] = field(default=lambda line: None)
    # Kept here because asyncio.get_running_loop() costs a getpid() system call on Linux,
    # twice per request otherwise.
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)

    def __post_init__(self) -> None:
        self.pool = UpstreamPool(self)
        self.heap = HeapTrimmer(self.loop)
        self.wheel = TimerWheel(self.loop)

    def admit(
        self,
        connection: ServedConnection,
        transport: Transport,
        refusal: Callable[[], bytes] | None = None,
    ) -> bool:
        """Count a new client connection in, or refuse it (over the limit, or stopping).

        ``refusal`` makes what a refused client is told in its protocol (an HTTP/1.1 503
        unless given).
        """
        if len(self.connections) >= self.config.limits.max_connections or self.draining:
            transport.write(refusal() if refusal is not None else _TOO_MANY)
            transport.close()
            return False
        self.connections.add(connection)
        return True

    def connection_closed(self, connection: ServedConnection) -> None:
        """A client connection is gone (called once, from its connection_lost)."""
        connections = self.connections
        if connection in connections:
            connections.discard(connection)
            self.heap.closed(len(connections))


_TOO_MANY = http1.simple_response(503, b"devtls: too many connections, try again\n", close=True)


def print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
