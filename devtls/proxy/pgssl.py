"""PostgreSQL's way into TLS, in front of the TLS protocol in --tcp mode.

A PostgreSQL client (libpq, pgjdbc, asyncpg, ...) first sends an 8-byte SSLRequest in
plaintext (length 8, code 80877103) and waits for one byte: ``S`` to go on with TLS, ``N``
for no. PostgreSQL 17's direct SSL (``sslnegotiation=direct``) sends the TLS ClientHello at
once, with ALPN ``postgresql`` (offered with ``--alpn postgresql``). A GSSENCRequest (code
80877104, libpq's try at GSSAPI encryption) is answered ``N`` once; libpq then asks for SSL.
Anything else goes to TLS as it came. See
https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import cast

REQUEST_SIZE = 8
SSL_REQUEST = struct.pack("!II", REQUEST_SIZE, 80877103)
GSSENC_REQUEST = struct.pack("!II", REQUEST_SIZE, 80877104)


class PostgresNegotiation(asyncio.Protocol):
    """Reads the first bytes; answers an SSLRequest with ``S``; then hands the TCP transport
    to ``tls`` (a TLSServerProtocol) with the bytes that are not PostgreSQL's to replay.

    The whole negotiation must end within ``timeout`` seconds (the handshake timeout): a
    client that sends 7 bytes and stalls is cut.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tls: asyncio.Protocol,
        *,
        timeout: float,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._loop = loop
        self._tls = tls
        self._timeout = timeout
        self._on_error = on_error
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = b""
        self._gssenc_refused = False
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._timer = self._loop.call_later(self._timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        buffer = self._buffer + data
        start = buffer[:REQUEST_SIZE]
        if not (SSL_REQUEST.startswith(start) or GSSENC_REQUEST.startswith(start)):
            self._hand_over(buffer)  # TLS at once (direct SSL), or bytes TLS will refuse
            return
        if len(buffer) < REQUEST_SIZE:
            self._buffer = buffer
            return
        request, rest = buffer[:REQUEST_SIZE], buffer[REQUEST_SIZE:]
        self._buffer = b""
        if rest:
            # Sent before our answer, so not protected by TLS: an injection (CVE-2021-23214),
            # which PostgreSQL refuses too.
            self._fail("client sent bytes after its SSLRequest, before the answer")
            return
        assert self._transport is not None
        if request == GSSENC_REQUEST:
            if self._gssenc_refused:
                self._fail("client sent a second GSSENCRequest")
                return
            self._gssenc_refused = True
            self._transport.write(b"N")
            return
        self._transport.write(b"S")
        self._hand_over(b"")

    def eof_received(self) -> bool:
        self._stop()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()

    def _hand_over(self, data: bytes) -> None:
        self._stop()
        transport = self._transport
        assert transport is not None
        transport.set_protocol(self._tls)
        self._tls.connection_made(transport)
        if data:
            self._tls.data_received(data)

    def _timed_out(self) -> None:
        self._timer = None
        if not self._done:
            self._fail("handshake timed out")

    def _fail(self, reason: str) -> None:
        self._stop()
        if self._on_error is not None:
            self._on_error(reason)
        if self._transport is not None:
            self._transport.abort()

    def _stop(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
