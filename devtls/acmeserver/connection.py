"""One client connection of ``devtls acme-server``: HTTP/1.1 requests in, bounded, answers out.

The framing is proxy.http1's (its head limits give 414 and 431); a body over MAX_BODY gets 413,
a request that takes longer than REQUEST_SECONDS 408, and a connection idle for IDLE_SECONDS is
closed. Every answer, a framing error's too, carries a Replay-Nonce.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from devtls.acmeserver.problems import AcmeProblem
from devtls.acmeserver.service import AcmeService
from devtls.acmeserver.wire import Request, Response
from devtls.errors import ProtocolError
from devtls.proxy import http1

if TYPE_CHECKING:
    from devtls.acmeserver.server import AcmeServer

# Larger than any ACME request (a CSR with 100 names is about 8 KiB once in a JWS).
MAX_BODY = 64 * 1024
REQUEST_SECONDS = 30.0
IDLE_SECONDS = 60.0
_REASONS = {201: "Created", 204: "No Content", 403: "Forbidden", 409: "Conflict",
            415: "Unsupported Media Type", 429: "Too Many Requests"}  # fmt: skip


def encode(response: Response, *, head_only: bool, close: bool) -> bytes:
    headers: http1.Headers = []
    if response.content_type:
        headers.append((b"Content-Type", response.content_type.encode("ascii")))
    if response.status != 204:
        headers.append((b"Content-Length", b"%d" % len(response.body)))
    headers.append((b"Cache-Control", b"no-store"))
    for name, value in response.headers:
        # Values are built here from validated parts; a line break would still be refused.
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} holds a line break")
        headers.append((name.encode("ascii"), value.encode("latin-1")))
    if close:
        headers.append((b"Connection", b"close"))
    reason = _REASONS.get(response.status) or http1.REASONS.get(response.status, "Status")
    head = http1.encode_head(b"HTTP/1.1 %d %s" % (response.status, reason.encode()), headers)
    return head if head_only or response.status == 204 else head + response.body


class AcmeConnection(asyncio.Protocol):
    """One client connection: requests in (bounded), the service's answers out."""

    def __init__(self, server: AcmeServer) -> None:
        self.server = server
        self.reader = http1.RequestReader()
        self.transport: asyncio.Transport | None = None
        self.head: http1.RequestHead | None = None
        self.body = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        self._arm(IDLE_SECONDS)

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        self._cancel()
        self.server.connections.discard(self)

    def eof_received(self) -> bool | None:
        self.close()
        return False

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.reader.feed(data)
        try:
            self._advance()
        except ProtocolError as exc:
            self._fail(exc.status_hint, exc.message)

    def _advance(self) -> None:
        while not self.done:
            event = self.reader.next_event()
            if event is None:
                return
            if isinstance(event, http1.RequestHead):
                if event.content_length > MAX_BODY:
                    self._fail(413, f"request bodies are limited to {MAX_BODY} bytes")
                    return
                self.head = event
                self.body.clear()
                self._arm(REQUEST_SECONDS)
                if event.expect_continue and self.transport is not None:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            elif isinstance(event, http1.Data):
                self.body += event.data
                if len(self.body) > MAX_BODY:
                    self._fail(413, f"request bodies are limited to {MAX_BODY} bytes")
                    return
            else:
                self._respond()
                if self.done:
                    return
                self.reader.next_message()
                self._arm(IDLE_SECONDS)

    def _respond(self) -> None:
        head, transport = self.head, self.transport
        assert head is not None
        assert transport is not None
        self.head = None
        base = self.server.base_for(head)
        if base is None:
            self._fail(400, "the Host header is not a host name or an IP address")
            return
        content_type = next((v for k, v in head.headers if k.lower() == b"content-type"), None)
        request = Request(
            head.method.decode("ascii"),
            head.path.decode("latin-1"),
            base,
            content_type.decode("latin-1") if content_type is not None else None,
            bytes(self.body),
        )
        response = self.server.service.handle(request)
        self.server.request_handled()
        close = not head.keep_alive
        transport.write(encode(response, head_only=head.method == b"HEAD", close=close))
        if close:
            self.close()

    def _fail(self, status: int, detail: str) -> None:
        """A framing error: a problem document (with a nonce, as every answer), then close."""
        problem = AcmeProblem("malformed", detail, status=status)
        response = AcmeService.problem_response(problem)
        response.headers.append(("Replay-Nonce", self.server.service.nonces.issue()))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(response, head_only=False, close=True))
        self.close()

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        self.done = True
        self._cancel()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _arm(self, seconds: float) -> None:
        self._cancel()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        if self.head is not None or self.reader.buffered:
            self._fail(408, "the request took too long")
        else:
            self.close()

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
