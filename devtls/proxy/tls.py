"""Server-side TLS over a plain asyncio TCP transport, with memory BIOs.

asyncio's own TLS transport cannot half-close (a client's close_notify shuts the whole
connection, so a reply still on its way is lost), allocates a 256 KiB read buffer per
connection, and answers bytes that are not TLS with a bare reset. Driving ``ssl.SSLObject``
directly fixes all three and costs fewer Python calls per read.

``TLSServerProtocol`` is the TCP protocol; to the application protocol it looks like a
transport (write, writelines, write_eof, close, pause_reading, get_extra_info).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol, cast

from devtls.errors import ProtocolError
from devtls.proxy.clienthello import parse_client_hello

log = logging.getLogger("devtls.tls")

# One TLS record carries at most 16 KiB of plaintext (RFC 8446 5.1), and SSL_read returns
# one record's worth per call: asking for more only allocates a bigger object to shrink.
READ_CHUNK = 16 * 1024
# OpenSSL's memory BIOs never shrink: each keeps, for the life of the connection, a buffer
# as big as the most it ever held at once. So bytes go through them one record's worth at a
# time (plaintext into SSL_write, ciphertext into the incoming BIO), each drained before the
# next; a 256 KiB write would otherwise pin about 340 KiB per connection until it closes.
BIO_PIECE = 16 * 1024
# Bytes on the TLS port that start like an HTTP request get a helpful plain-HTTP answer.
_HTTP_METHOD_STARTS = (b"GET ", b"HEAD", b"POST", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN")


class AlpnChallenges(Protocol):
    alpn_contexts: dict[str, ssl.SSLContext]

    def alpn_challenge(
        self, server_name: str | None, alpn: tuple[bytes, ...]
    ) -> ssl.SSLContext | None: ...


class TLSServerProtocol(asyncio.Protocol):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: ssl.SSLContext,
        app_factory: Callable[[], asyncio.Protocol],
        *,
        handshake_timeout: float,
        plain_http_answer: Callable[[bytes], bytes] | None = None,
        on_handshake_error: Callable[[str], None] | None = None,
        challenges: AlpnChallenges | None = None,
    ) -> None:
        # Given, not looked up: asyncio.get_running_loop() costs a getpid() system call.
        self._loop = loop
        self._challenges = challenges
        self._hello = bytearray()
        self._context = context
        self._app_factory = app_factory
        self._handshake_timeout = handshake_timeout
        self._plain_http_answer = plain_http_answer
        self._on_handshake_error = on_handshake_error
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl: ssl.SSLObject | None = None
        self._transport: asyncio.Transport | None = None
        self._app: asyncio.Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._eof_sent = False
        self._app_eof = False
        self._seen_bytes = False
        self._extra: dict[str, Any] = {}

    # -- TCP side ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, so no isinstance here.
        self._transport = cast(asyncio.Transport, transport)
        # Kept: the peer's address is still wanted for a log line after the socket is gone.
        self._extra = {"peername": transport.get_extra_info("peername")}
        self._ssl = self._context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._timer = self._loop.call_later(self._handshake_timeout, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        sslobj = self._ssl
        if sslobj is None or self._closed:
            return
        if not self._seen_bytes:
            self._seen_bytes = True
            if data[:1] != b"\x16":  # every TLS connection starts with a handshake record
                self._refuse_non_tls(data)
                return
            challenges = self._challenges
            if challenges is not None and challenges.alpn_contexts:
                self._hello += data
        elif self._hello:
            self._hello += data
        if self._hello:
            # An ACME tls-alpn-01 validation is told apart by its ClientHello (ALPN acme-tls/1)
            # before OpenSSL sees it; only while such a challenge is pending.
            data = self._choose_challenge_context()
            if not data:
                return
        if self._app is None:
            self._incoming.write(data)
            try:
                sslobj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except (ssl.SSLError, OSError) as exc:
                self._flush()
                self._handshake_failed(exc)
                return
            self._handshake_done()
            if self._closed:
                return
            data = b""  # already in the BIO
        chunks: list[bytes] = []
        eof = False
        incoming = self._incoming
        for piece in (data,) if len(data) <= BIO_PIECE else _pieces(data):
            if piece:
                incoming.write(piece)
            try:
                while True:
                    chunk = sslobj.read(READ_CHUNK)
                    if not chunk:
                        eof = True
                        break
                    chunks.append(chunk)
                    if not incoming.pending and not sslobj.pending():
                        # Every record is decrypted: one more read would only raise
                        # SSLWantReadError.
                        break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                eof = True
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS error from %s: %s", self._extra.get("peername"), exc)
                self._abort_all()
                return
            if eof:
                break
        # Key updates and session tickets may need answering.
        self._flush()
        app = self._app
        assert app is not None
        if chunks:
            app.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof and not self._app_eof:
            self._deliver_eof()

    def eof_received(self) -> bool:
        # A TCP FIN without close_notify: tell the application, keep our side open.
        if self._app is None:
            self._close_transport()
            return False
        if not self._app_eof:
            self._deliver_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        if self._app is not None:
            app, self._app = self._app, None
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    # -- transport interface for the application -----------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or self._eof_sent or self._ssl is None:
            return
        sslobj = self._ssl
        try:
            if len(data) <= BIO_PIECE:
                sslobj.write(data)
                self._flush()
                return
            # The same records OpenSSL would cut, one at a time (see BIO_PIECE).
            outgoing = self._outgoing
            records: list[bytes] = []
            for piece in _pieces(data):
                sslobj.write(piece)
                records.append(outgoing.read())
        except (ssl.SSLError, OSError):
            self._abort_all()
            return
        if self._transport is not None:
            self._transport.write(b"".join(records))

    def writelines(self, pieces: list[bytes]) -> None:
        self.write(b"".join(pieces))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Send close_notify and a TCP FIN, while still reading what the client sends."""
        if self._closed or self._eof_sent or self._ssl is None or self._transport is None:
            return
        self._eof_sent = True
        self._send_close_notify()
        if self._transport.can_write_eof():
            self._transport.write_eof()

    def close(self) -> None:
        if self._closed or self._transport is None:
            return
        if not self._eof_sent and self._ssl is not None and self._app is not None:
            self._eof_sent = True
            self._send_close_notify()
        self._close_transport()

    def abort(self) -> None:
        self._abort_all()

    def is_closing(self) -> bool:
        return self._closed or self._transport is None or self._transport.is_closing()

    def pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._transport is not None:
            self._transport.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name in self._extra or self._transport is None:
            return self._extra.get(name, default)
        return self._transport.get_extra_info(name, default)

    # -- internals -------------------------------------------------------------------------

    def _choose_challenge_context(self) -> bytes:
        """The buffered hello bytes once the hello is complete (b"" while it is not)."""
        assert self._challenges is not None
        assert self._ssl is not None
        try:
            hello = parse_client_hello(bytes(self._hello))
        except ProtocolError:
            hello = None  # not ours to judge: OpenSSL will refuse it
        else:
            if hello is None:
                return b""
        data, self._hello = bytes(self._hello), bytearray()
        if hello is not None:
            context = self._challenges.alpn_challenge(hello.server_name, hello.alpn)
            if context is not None:
                self._ssl.context = context
        return data

    def _flush(self) -> None:
        if self._outgoing.pending and self._transport is not None:
            self._transport.write(self._outgoing.read())

    def _send_close_notify(self) -> None:
        assert self._ssl is not None
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # we do not wait for the peer's close_notify
        except (ssl.SSLError, OSError):
            return
        self._flush()

    def _handshake_done(self) -> None:
        self._cancel_timer()
        self._app = self._app_factory()
        self._app.connection_made(self)  # type: ignore[arg-type]

    def _handshake_failed(self, exc: Exception) -> None:
        reason = getattr(exc, "reason", None) or str(exc)
        if self._on_handshake_error is not None:
            self._on_handshake_error(str(reason))
        self._close_transport()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._app is None and not self._closed:
            if self._on_handshake_error is not None:
                self._on_handshake_error("handshake timed out")
            self._abort_all()

    def _refuse_non_tls(self, data: bytes) -> None:
        """Answer plain HTTP sent to the TLS port (as nginx's 497), drop other garbage."""
        if self._plain_http_answer is not None and data[:4] in _HTTP_METHOD_STARTS:
            assert self._transport is not None
            self._transport.write(self._plain_http_answer(data))
        elif self._on_handshake_error is not None:
            self._on_handshake_error("client sent bytes that are not TLS")
        self._close_transport()

    def _deliver_eof(self) -> None:
        self._app_eof = True
        app = self._app
        if app is None:
            return
        keep_open = app.eof_received()
        if not keep_open:
            self.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_transport(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _abort_all(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _pieces(data: bytes | bytearray | memoryview) -> list[memoryview]:
    view = memoryview(data)
    return [view[offset : offset + BIO_PIECE] for offset in range(0, len(view), BIO_PIECE)]
