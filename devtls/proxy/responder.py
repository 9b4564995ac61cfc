"""The plain-HTTP listeners (``--redirect-http``, ACME http-01): one small HTTP/1 responder.

It answers one request per connection (a permanent redirect to https, or an ACME http-01 token)
and then closes. Everything arriving is untrusted, so it has the TLS port's limits: the head must
arrive within ``head_timeout`` (408, or a silent close when nothing came), it is read with the
RequestReader limits (414, 431), and at most ``max_connections`` connections are open at once on
each such listener (a 503 for the next one).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from devtls.config import Limits
from devtls.errors import ProtocolError
from devtls.proxy import http1
from devtls.proxy.routes import host_without_port

if TYPE_CHECKING:
    from devtls.proxy.acme import AcmeManager


def redirect_to_https(head: http1.RequestHead, port: int) -> bytes:
    bare = host_without_port(head.host.decode("latin-1"))
    if ":" in bare:
        bare = f"[{bare}]"
    suffix = "" if port == 443 else f":{port}"
    location = f"https://{bare}{suffix}{head.target.decode('latin-1')}".encode("latin-1")
    # 301 keeps GET/HEAD as they are; 308 also keeps the method and body of a POST.
    status = 301 if head.method in (b"GET", b"HEAD") else 308
    return http1.simple_response(
        status,
        b"",
        extra=[(b"Location", location)],
        close=True,
    )


class ListenerState:
    """What the connections of one plain-HTTP listener share: the limits and who is open."""

    def __init__(self, tls_port: int, limits: Limits, acme: AcmeManager | None = None) -> None:
        self.tls_port = tls_port
        self.limits = limits
        self.acme = acme
        self.connections: set[RedirectProtocol] = set()

    def close_all(self) -> None:
        for connection in list(self.connections):
            connection.close()


class RedirectProtocol(asyncio.Protocol):
    """One connection to a plain-HTTP listener: every request gets a permanent redirect."""

    def __init__(self, state: ListenerState) -> None:
        self.state = state
        limits = state.limits
        self.reader = http1.RequestReader(
            max_request_line=limits.max_request_line,
            max_head=limits.max_head_size,
            max_headers=limits.max_headers,
        )
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.seen_bytes = False
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        state = self.state
        if len(state.connections) >= state.limits.max_connections:
            self._answer(
                http1.simple_response(503, b"devtls: too many connections, try again\n", close=True)
            )
            return
        state.connections.add(self)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(state.limits.head_timeout, self._timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        self._cancel_timer()
        self.state.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.done or self.transport is None:
            return
        self.seen_bytes = True
        self.reader.feed(data)
        try:
            head = self.reader.next_event()
        except ProtocolError as exc:
            self._answer(http1.simple_response(exc.status_hint, exc.message.encode(), close=True))
            return
        if head is None:
            return
        assert isinstance(head, http1.RequestHead)
        acme = self.state.acme
        answer = acme.http01_answer(head.target.decode("latin-1")) if acme else None
        if answer is not None:
            self._answer(http1.simple_response(200, answer, close=True))
        elif not head.host:
            self._answer(http1.simple_response(400, b"a Host header is needed\n", close=True))
        else:
            self._answer(redirect_to_https(head, self.state.tls_port))

    def eof_received(self) -> bool | None:
        self.close()
        return False

    def close(self) -> None:
        self.done = True
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _timed_out(self) -> None:
        self.timer = None
        if self.done:
            return
        if self.seen_bytes:
            # As the TLS port: a head begun but not finished in time gets a 408.
            self._answer(http1.simple_response(408, b"request head took too long\n", close=True))
        else:
            self.close()

    def _answer(self, response: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(response)
        self.close()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
