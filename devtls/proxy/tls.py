"""Server-side TLS over a plain asyncio TCP transport, with memory BIOs.

asyncio's own TLS transport cannot half-close (a client's close_notify shuts the whole
connection, so a reply still on its way is lost), allocates a 256 KiB read buffer per
connection, and answers bytes that are not TLS with a bare reset. Driving ``ssl.SSLObject``
directly fixes all three and costs fewer Python calls per read.

The ClientHello is read here before OpenSSL sees any byte (devtls.proxy.clienthello): its server
name is validated (a bad one gets an alert and one log line), the certificate is chosen from it
(waiting, off the event loop, for one being minted), and only then is the SSLObject made. From
accept to the end of the handshake a connection holds one of ``max_connections`` slots.

``TLSServerProtocol`` is the TCP protocol; to the application protocol it looks like a
transport (write, writelines, write_eof, close, pause_reading, get_extra_info).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from devtls.errors import ProtocolError
from devtls.proxy.certs import SNI_ATTRIBUTE
from devtls.proxy.clienthello import (
    ALERT_DECODE_ERROR,
    ALERT_UNRECOGNIZED_NAME,
    MAX_HELLO,
    BadServerName,
    ClientHello,
    HelloReader,
)

log = logging.getLogger("devtls.tls")

# One TLS record carries at most 16 KiB of plaintext (RFC 8446 5.1), and SSL_read returns
# one record's worth per call: asking for more only allocates a bigger object to shrink.
READ_CHUNK = 16 * 1024
# OpenSSL's memory BIOs never shrink: each keeps, for the life of the connection, a buffer
# as big as the most it ever held at once. So bytes go through them one record's worth at a
# time (plaintext into SSL_write, ciphertext into the incoming BIO), each drained before the
# next; a 256 KiB write would otherwise pin about 340 KiB per connection until it closes.
BIO_PIECE = 16 * 1024
# A connection closed with bytes still unsent gives a client that reads nothing this long
# before it is aborted: a close otherwise waits for the send buffer to drain, and keeps its
# max_connections slot, for as long as the client keeps its window shut.
CLOSE_DRAIN_SECONDS = 10.0
# Bytes on the TLS port that start like an HTTP request get a helpful plain-HTTP answer.
_HTTP_METHOD_STARTS = (b"GET ", b"HEAD", b"POST", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN")


class ContextChooser(Protocol):
    """Picks the certificate for a ClientHello whose server name is validated already.

    None means the default context; a future means a certificate is being minted (off the event
    loop) and the handshake waits for it.
    """

    def choose(
        self, hello: ClientHello
    ) -> ssl.SSLContext | asyncio.Future[ssl.SSLContext | None] | None: ...


class HandshakeSlots:
    """``max_connections`` counts connections still in the TLS handshake too.

    A connection takes a slot when it is accepted and hands it to the forwarder when its
    handshake completes; past the limit a new connection is closed at once, before any TLS work
    (cheaper than a handshake only to send a 503).
    """

    # The "limit reached" line is printed at most this often.
    LOG_EVERY = 60.0

    def __init__(
        self,
        limit: int,
        established: Callable[[], int],
        write_log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.established = established
        self.handshaking = 0
        self._write_log = write_log
        self._clock = clock
        self._logged_at: float | None = None

    def acquire(self) -> bool:
        if self.handshaking + self.established() < self.limit:
            self.handshaking += 1
            return True
        now = self._clock()
        if self._write_log is not None and (
            self._logged_at is None or now - self._logged_at >= self.LOG_EVERY
        ):
            self._logged_at = now
            self._write_log(
                f"max_connections ({self.limit}) reached: new connections are closed"
                f" (--limit max_connections=N raises it)"
            )
        return False

    def release(self) -> None:
        self.handshaking -= 1


class TLSServerProtocol(asyncio.Protocol):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: ssl.SSLContext,
        # Given the protocol ALPN chose (None when none was): what runs behind TLS.
        app_factory: Callable[[str | None], asyncio.Protocol],
        *,
        handshake_timeout: float,
        plain_http_answer: Callable[[bytes], bytes] | None = None,
        on_handshake_error: Callable[[str], None] | None = None,
        certificates: ContextChooser | None = None,
        slots: HandshakeSlots | None = None,
    ) -> None:
        # Given, not looked up: asyncio.get_running_loop() costs a getpid() system call.
        self._loop = loop
        self._certificates = certificates
        self._slots = slots
        self._has_slot = False
        # Every ClientHello is read (and its server name validated) before OpenSSL sees it.
        self._hello: HelloReader | None = HelloReader()
        self._waiting: bytearray | None = None  # bytes that came while a certificate is minted
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
        self._drain_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._eof_sent = False
        self._app_eof = False
        # Kept: the peer's address is still wanted for a log line after the socket is gone.
        self._peername: Any = None

    # -- TCP side ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, so no isinstance here.
        self._transport = cast(asyncio.Transport, transport)
        if self._slots is not None:
            if not self._slots.acquire():
                self._closed = True
                transport.close()
                return
            self._has_slot = True
        self._peername = transport.get_extra_info("peername")
        self._timer = self._loop.call_later(self._handshake_timeout, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._hello is not None:
            self._read_hello(data)
            return
        sslobj = self._ssl
        if sslobj is None:
            # A certificate is being minted for this client: keep what it sends meanwhile.
            if self._waiting is not None:
                self._waiting += data
                if len(self._waiting) > MAX_HELLO:
                    self._abort_all()
            return
        self._tls_data(sslobj, data)

    def _tls_data(self, sslobj: ssl.SSLObject, data: bytes = b"") -> None:
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
                log.debug("TLS error from %s: %s", self._peername, exc)
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

    def _read_hello(self, data: bytes) -> None:
        reader = self._hello
        assert reader is not None
        if not reader.buffer and data[:1] != b"\x16":
            # Every TLS connection starts with a handshake record.
            self._refuse_non_tls(data)
            return
        try:
            hello = reader.feed(data)
        except BadServerName as exc:
            self._refuse_hello(ALERT_UNRECOGNIZED_NAME, exc.message)
            return
        except ProtocolError as exc:
            self._refuse_hello(ALERT_DECODE_ERROR, f"malformed ClientHello: {exc.message}")
            return
        if hello is None:
            return
        choice = None if self._certificates is None else self._certificates.choose(hello)
        if isinstance(choice, asyncio.Future):
            # Minted off the loop: this handshake waits, nothing else does.
            self._waiting = bytearray()
            self.pause_reading()
            choice.add_done_callback(lambda future: self._minted(future, hello))
            return
        self._start_tls(hello, choice)

    def _minted(self, future: asyncio.Future[ssl.SSLContext | None], hello: ClientHello) -> None:
        if self._closed:
            return
        context = None
        if not future.cancelled() and future.exception() is None:
            context = future.result()
        self.resume_reading()
        self._start_tls(hello, context)

    def _start_tls(self, hello: ClientHello, context: ssl.SSLContext | None) -> None:
        """Hand the buffered hello (and what followed) to OpenSSL, with the chosen context."""
        reader, self._hello = self._hello, None
        assert reader is not None
        # Wrapped with the default context, then switched, as an SNI callback would: session
        # tickets stay those of the default context for every certificate.
        sslobj = self._context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        if context is not None and context is not self._context:
            sslobj.context = context
        # Only a validated, lower-case host name (or None) is ever left here.
        setattr(sslobj, SNI_ATTRIBUTE, hello.server_name)
        self._ssl = sslobj
        self._incoming.write(reader.buffer)
        if self._waiting:
            self._incoming.write(self._waiting)
        self._waiting = None
        self._tls_data(sslobj)

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
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        self._release_slot()
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
        if name == "peername":
            return self._peername
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    # -- internals -------------------------------------------------------------------------

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
        self._release_slot()  # the forwarder counts this connection from now on
        sslobj = self._ssl
        alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
        self._app = self._app_factory(alpn)
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
        self._closed = True
        self._close_transport()

    def _deliver_eof(self) -> None:
        self._app_eof = True
        app = self._app
        if app is None:
            return
        keep_open = app.eof_received()
        if not keep_open:
            self.close()

    def _refuse_hello(self, alert: int, reason: str) -> None:
        """A fatal alert, as OpenSSL would send for a hello it refuses, then close."""
        assert self._transport is not None
        # Record header (alert, TLS 1.2 record version, length 2), then level fatal (2).
        self._transport.write(bytes((0x15, 3, 3, 0, 2, 2, alert)))
        if self._on_handshake_error is not None:
            self._on_handshake_error(reason)
        self._closed = True
        self._close_transport()

    def _release_slot(self) -> None:
        if self._has_slot:
            self._has_slot = False
            assert self._slots is not None
            self._slots.release()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_transport(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
            if transport.get_write_buffer_size() and self._drain_timer is None:
                self._drain_timer = self._loop.call_later(CLOSE_DRAIN_SECONDS, self._abort_all)

    def _abort_all(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _pieces(data: bytes | bytearray | memoryview) -> list[memoryview]:
    view = memoryview(data)
    return [view[offset : offset + BIO_PIECE] for offset in range(0, len(view), BIO_PIECE)]
