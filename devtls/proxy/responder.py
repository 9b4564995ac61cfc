"""devtls's own small HTTP/1 servers: one responder for all of them.

The plain-HTTP listeners (``--redirect-http``, ACME http-01) and the demo app each answer from a
function of the request head; this module does the rest. Everything arriving is untrusted, so
every such server has the TLS port's limits: a head must arrive within ``head_timeout`` (408,
or a silent close when nothing came), it is read with the RequestReader limits (414, 431), and
at most ``max_connections`` connections are open at once on each listener (a 503 for the next
one). A request body is read and dropped; a reply may keep the connection, close it, or switch
it to another protocol (the demo's WebSocket echo).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
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


# Takes the connection over after a 101: gets the transport, returns what is fed the bytes.
Switch = Callable[[asyncio.Transport], Callable[[bytes], None]]


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole response, and what becomes of the connection after it."""

    data: bytes
    close: bool = True
    switch: Switch | None = None


Respond = Callable[[http1.RequestHead], Reply]


class ListenerState:
    """What the connections of one listener share: the limits and who is open."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.connections: set[Responder] = set()

    def close_all(self) -> None:
        for connection in list(self.connections):
            connection.close()


def plain_http(tls_port: int, acme: AcmeManager | None = None) -> Respond:
    """The plain-HTTP listener's answers: an ACME http-01 token, else a redirect to https."""

    def respond(head: http1.RequestHead) -> Reply:
        answer = acme.http01_answer(head.target.decode("latin-1")) if acme else None
        if answer is not None:
            return Reply(http1.simple_response(200, answer, close=True))
        if not head.host:
            return Reply(http1.simple_response(400, b"a Host header is needed\n", close=True))
        return Reply(redirect_to_https(head, tls_port))

    return respond


class Responder(asyncio.Protocol):
    """One connection to one of devtls's small HTTP/1 servers."""

    def __init__(self, state: ListenerState, respond: Respond) -> None:
        self.state = state
        self.respond = respond
        limits = state.limits
        self.reader = http1.RequestReader(
            max_request_line=limits.max_request_line,
            max_head=limits.max_head_size,
            max_headers=limits.max_headers,
        )
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        # Bytes of a head seen since the last reply: a timeout then is a 408, else a close.
        self.seen_bytes = False
        # The current request was answered; its body (if any) is read and dropped.
        self.answered = False
        self.switched: Callable[[bytes], None] | None = None
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
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        self._cancel_timer()
        self.state.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.done or self.transport is None:
            return
        if self.switched is not None:
            self.switched(data)
            return
        if not self.answered:
            self.seen_bytes = True
        self.reader.feed(data)
        try:
            self._advance()
        except ProtocolError as exc:
            self._answer(http1.simple_response(exc.status_hint, exc.message.encode(), close=True))

    def _advance(self) -> None:
        reader = self.reader
        transport = self.transport
        assert transport is not None
        while not self.done:
            event = reader.next_event()
            if event is None:
                return
            if isinstance(event, http1.RequestHead):
                reply = self.respond(event)
                self._cancel_timer()
                if reply.switch is not None:
                    transport.write(reply.data)
                    self.switched = feed = reply.switch(transport)
                    rest = reader.take_buffered()
                    if rest:
                        feed(rest)
                    return
                if reply.close or not event.keep_alive:
                    self._answer(reply.data)
                    return
                transport.write(reply.data)
                self.answered = True
                self.seen_bytes = False
                self._arm_timer()  # the rest of its body, if any, comes within the same time
            elif event is http1.END:
                reader.next_message()
                self.answered = False
                self.seen_bytes = bool(reader.buffered)
                self._arm_timer()

    def eof_received(self) -> bool | None:
        self.close()
        return False

    # A client that sends requests but reads no answers stops being read: the answers wait
    # in the transport's buffer, bounded by its write high-water mark.
    def pause_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        self.done = True
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _arm_timer(self) -> None:
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.state.limits.head_timeout, self._timed_out)

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
