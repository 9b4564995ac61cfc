"""One exchange: a request and its response, whatever protocol carries them to the client.

The exchange routes the request, gets an upstream connection from the pool, sends the head
and the body there, passes the response back, answers locally when there is no upstream to
answer (404, 502, 504), retries once when that is safe, and writes the access log line. The
client side is a ``Front``: one HTTP/1 connection (h1), or one HTTP/2 stream (h2stream).
"""

from __future__ import annotations

import errno
import logging
import time
from typing import Protocol

from devtls.config import Upstream
from devtls.errors import ProtocolError
from devtls.proxy import forwarding, http1, pages
from devtls.proxy.flow import CONNECTING, PEER_FULL, ReadGate
from devtls.proxy.forwarding import ClientSide
from devtls.proxy.http1 import BodyKind, Headers, RequestHead, ResponseHead
from devtls.proxy.routes import upstream_target
from devtls.proxy.state import ServerState
from devtls.proxy.upstream import UpstreamConnection, describe_upstream_failure

log = logging.getLogger("devtls")


class Front(Protocol):
    """What an exchange needs of the client connection it answers on."""

    client_ip: str
    sni: str | None
    closed: bool
    # Pauses what the request body comes from (while connecting, or the upstream is full).
    gate: ReadGate | None
    # The client's send buffer is full: a new upstream connection starts paused too.
    write_paused: bool

    def client_side(self, upstream: Upstream) -> ClientSide:
        """What the upstream is told about the client (the X-Forwarded-* and Forwarded)."""

    def write(self, data: bytes) -> None: ...

    def write_pieces(self, pieces: list[bytes]) -> None: ...

    def begin_batch(self) -> None:
        """Hold writes until end_batch (one send for a response's head and body)."""

    def end_batch(self) -> None: ...

    def send_body(self) -> None:
        """The upstream is there: pass it the request body that has come and is coming."""

    def exchange_done(self, keep_alive: bool) -> None:
        """The response is complete; the connection takes the next request, or ends."""

    def switch_protocols(self, connection: UpstreamConnection) -> None:
        """A 101 went out: the client and ``connection`` are joined into a tunnel."""

    def close(self) -> None: ...

    def abort(self) -> None:
        """End the connection at once: the only way to tell of a response cut short."""


class _Departed:
    """The front of an exchange whose client connection is gone: closed, its writes dropped.

    It takes the connection's place when the connection is lost, so that no reference cycle
    keeps the two alive: both are freed as soon as the last callback (a connect still under
    way) is done, without waiting for the cycle collector.
    """

    client_ip = ""
    sni: str | None = None
    closed = True
    gate: ReadGate | None = None
    write_paused = False

    def client_side(self, upstream: Upstream) -> ClientSide:
        return ClientSide("", None, 0)

    def write(self, data: bytes) -> None:
        pass

    def write_pieces(self, pieces: list[bytes]) -> None:
        pass

    def begin_batch(self) -> None:
        pass

    def end_batch(self) -> None:
        pass

    def send_body(self) -> None:
        pass

    def exchange_done(self, keep_alive: bool) -> None:
        pass

    def switch_protocols(self, connection: UpstreamConnection) -> None:
        connection.close()

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


DEPARTED: Front = _Departed()


class Exchange:
    """A request and its response. An HTTP/1 connection runs one at a time on one object."""

    __slots__ = (
        "begin_batch",
        "end_batch",
        "front",
        "head_bytes",
        "request",
        "request_bytes_sent",
        "request_done",
        "response_bytes",
        "response_chunked",
        "response_keep_alive",
        "response_status",
        "retried",
        "route_upstream",
        "started",
        "state",
        "upstream",
        "upstream_keep_alive",
    )

    def __init__(self, front: Front, state: ServerState) -> None:
        self.front = front
        self.state = state
        self.request: RequestHead | None = None
        self.route_upstream: Upstream | None = None
        self.upstream: UpstreamConnection | None = None
        self.request_done = False
        self.response_status = 0
        self.response_bytes = 0
        self.response_chunked = False
        self.response_keep_alive = False
        # Whether the upstream's final head let its connection be reused.
        self.upstream_keep_alive = False
        # The front's own methods, bound once: the upstream connection calls them around
        # every piece of a response it reads.
        self.begin_batch = front.begin_batch
        self.end_batch = front.end_batch
        self.started = 0.0
        self.request_bytes_sent = 0
        self.head_bytes = b""
        self.retried = False

    # -- the request (called by the front) ------------------------------------------------

    def start(self, head: RequestHead, bodiless: bool) -> None:
        """A new request: its head is here (and with ``bodiless``, its end too).

        It is routed to an upstream connection, or answered with a local 404.
        """
        self.request = head
        self.request_done = bodiless
        self.response_status = 0
        self.response_bytes = 0
        self.request_bytes_sent = 0
        self.retried = False
        state = self.state
        if not state.config.quiet:  # the start time only feeds the access log
            self.started = time.perf_counter()
        front = self.front
        host = head.host.decode("ascii") or (front.sni or "")
        route, upstream = state.router.match(host, head.path.decode("latin-1"))
        if upstream is None:
            content_type, body = pages.no_route_page(
                host,
                state.router.routes,
                _port_of(host),
                as_html=pages.wants_html(_field(head.headers, b"accept")),
            )
            self._respond_locally(404, body, close=False, content_type=content_type)
            return
        self.route_upstream = upstream
        target = upstream_target(route, upstream, head.target.decode("latin-1"))
        self.head_bytes = forwarding.upstream_request_head(
            head, target.encode("latin-1"), front.client_side(upstream), upstream
        )
        if not state.pool.acquire(upstream, self) and front.gate is not None:
            front.gate.pause(CONNECTING)  # until upstream_ready

    def can_send(self) -> bool:
        """Whether request body bytes can go to the upstream now."""
        upstream = self.upstream
        return upstream is not None and upstream.ready

    def request_data(self, data: bytes) -> bool:
        """Pass a piece of the request body on; False when the upstream is going away."""
        upstream = self.upstream
        assert upstream is not None
        assert self.request is not None
        transport = upstream.transport
        if transport is None or transport.is_closing():
            return False  # its connection_lost is on the way, and decides what happens
        self.request_bytes_sent += len(data)
        if self.request.body is BodyKind.CHUNKED:
            transport.writelines(http1.chunk(data))
        else:
            transport.write(data)
        return True

    def request_end(self, trailers: Headers | None = None) -> bool:
        """The request body is complete; False when the upstream is going away.

        ``trailers`` go on when the body is chunked (a Content-Length body has no place for
        them).
        """
        upstream = self.upstream
        assert upstream is not None
        assert self.request is not None
        transport = upstream.transport
        if transport is None or transport.is_closing():
            return False
        if self.request.body is BodyKind.CHUNKED:
            passed = forwarding.trailer_fields(trailers, to_upstream=True) if trailers else []
            transport.write(http1.last_chunk(passed))
        self.request_done = True
        return True

    def upstream_gate(self) -> ReadGate | None:
        """The gate of the upstream connection in use, for the client side's flow control."""
        return self.upstream.gate if self.upstream is not None else None

    def client_lost(self) -> None:
        """The client is gone: so is the upstream connection in use (it may be mid-response)."""
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.detach()
        self.front = DEPARTED
        self.begin_batch = DEPARTED.begin_batch
        self.end_batch = DEPARTED.end_batch

    def fail_locally(self) -> None:
        """An unexpected fault while forwarding: a 502 if nothing was answered yet, then close."""
        if self.front.closed:
            return
        if self.request is not None and not self.response_status:
            self.upstream = None
            message = b"devtls: forwarding failed (see devtls's log)\n"
            self._respond_locally(502, message, close=True)
        else:
            self.front.abort()

    # -- the upstream side (called by the pool and the upstream connection) ----------------

    def upstream_ready(self, connection: UpstreamConnection) -> None:
        """The upstream connection is there: send the head and stream the body."""
        front = self.front
        request = self.request
        if front.closed or request is None:
            self.state.pool.release(connection, reusable=True)
            return
        transport = connection.transport
        if connection.closed or transport is None or transport.is_closing():
            # Reset between accept and write (an upstream restarting): nothing was sent.
            self.upstream_lost(connection, nothing_sent=True)
            return
        self.upstream = connection
        connection.attach(self, head_request=request.method == b"HEAD")
        if front.write_paused and connection.gate is not None:
            # A pipelined request started while the client reads nothing: its response
            # waits in the upstream's socket, not in our memory.
            connection.gate.pause(PEER_FULL)
        transport.write(self.head_bytes)
        if request.expect_continue and forwarding.sends_continue(
            request, request_done=self.request_done
        ):
            # We asked the upstream for nothing; the client may send its body now. (The
            # first test spares the call for the requests that expect nothing.)
            self._send_continue()
        gate = front.gate
        if gate is not None:
            gate.resume(CONNECTING)
        front.send_body()

    def upstream_failed(
        self, upstream: Upstream, exc: BaseException, tried: tuple[str, ...] = ()
    ) -> None:
        if self.front.closed or self.request is None:
            return
        if upstream.starting and _refused(exc):
            # A dev server that is still booting: a page that asks again, not an error.
            self._respond_locally(
                503,
                pages.starting_page(upstream.starting),
                close=not self.request_done,
                content_type=pages.HTML,
                extra=pages.starting_headers(),
            )
            return
        status, message = describe_upstream_failure(upstream, exc, tried)
        log.warning("upstream %s: %s", upstream.authority, message)
        self._respond_locally(status, message.encode() + b"\n", close=not self.request_done)

    def upstream_fault(self) -> None:
        self.fail_locally()

    def upstream_lost(self, connection: UpstreamConnection, *, nothing_sent: bool = False) -> None:
        """The upstream closed or failed before the response was complete."""
        self.upstream = None
        front = self.front
        if front.closed:
            return
        if self.response_status:
            # Part of the response is out; the client can only learn by the connection closing.
            front.abort()
            return
        request = self.request
        if (
            request is not None
            and not self.retried
            and self.route_upstream is not None
            and forwarding.retry_is_safe(
                request.method,
                nothing_sent=nothing_sent,
                reused=connection.reused,
                body_bytes_sent=self.request_bytes_sent,
            )
        ):
            # The request never reached the application. Once is enough.
            self.retried = True
            if not self.state.pool.acquire(self.route_upstream, self, fresh=True):
                gate = front.gate
                if gate is not None:
                    gate.pause(CONNECTING)
            return
        if request is None or self.route_upstream is None:
            front.close()
            return
        self._respond_locally(
            502,
            f"devtls: the upstream {self.route_upstream.authority} closed the connection "
            "without answering\n".encode(),
            close=not self.request_done,
        )

    def upstream_timed_out(self, timeout: float) -> None:
        if self.response_status:
            self.front.abort()
            return
        upstream = self.route_upstream
        where = upstream.authority if upstream else "the upstream"
        self.upstream = None
        self._respond_locally(
            504,
            f"devtls: {where} did not answer within {timeout:g} s\n".encode(),
            close=True,
        )

    def response_invalid(self, exc: ProtocolError) -> None:
        if self.response_status:
            self.front.abort()
        else:
            self.upstream = None
            self._respond_locally(502, f"devtls: {exc.message}\n".encode(), close=True)

    def sender_gate(self) -> ReadGate | None:
        return self.front.gate

    def response_head(self, head: ResponseHead) -> None:
        request = self.request
        assert request is not None
        status = head.status
        if status < 200 and status != 101:
            # Another head follows; this one may be passed on (103 Early Hints).
            self._pass_informational(request, head)
            return
        if status == 101:
            self._pass_switch(request, head)  # 502 when not asked for
            self.response_status = 101
            connection, self.upstream = self.upstream, None
            assert connection is not None
            self._log(request)
            self.request = None
            self.front.switch_protocols(connection)
            return
        self.upstream_keep_alive = head.keep_alive
        self._pass_final(request, head)
        self.response_status = status

    def response_data(self, data: bytes) -> None:
        self.response_bytes += len(data)
        if self.response_chunked:
            self.front.write_pieces(http1.chunk(data))
        else:
            self.front.write(data)

    def response_end(self, connection: UpstreamConnection) -> None:
        if self.response_chunked:
            trailers = connection.reader.trailers
            passed = forwarding.trailer_fields(trailers, to_upstream=False) if trailers else []
            self.front.write(http1.last_chunk(passed))
        self.upstream = None
        request_done = self.request_done
        self.state.pool.release(connection, reusable=self.upstream_keep_alive and request_done)
        # A response that ends before the request's body does (an early 413, say): the rest
        # of that body cannot be told apart from a next request, so the connection ends.
        self._finish(self.response_keep_alive and request_done)

    # -- what goes to the client: HTTP/1 here, HTTP/2 frames in h2.StreamExchange ----------

    def _send_continue(self) -> None:
        self.front.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _pass_informational(self, request: RequestHead, head: ResponseHead) -> None:
        informational = forwarding.informational_head(request, head)
        if informational is not None:
            self.front.write(informational)

    def _pass_switch(self, request: RequestHead, head: ResponseHead) -> None:
        self.front.write(forwarding.switching_head(request, head))

    def _pass_final(self, request: RequestHead, head: ResponseHead) -> None:
        start = forwarding.final_head(request, head, draining=self.state.draining)
        self.response_chunked = start.chunked
        self.response_keep_alive = start.keep_alive
        self.front.write(start.data)

    # -- local answers, the access log -------------------------------------------------------

    def _finish(self, keep_alive: bool) -> None:
        request = self.request
        assert request is not None
        self._log(request)
        self.request = None
        self.route_upstream = None
        self.front.exchange_done(keep_alive)

    def _respond_locally(
        self,
        status: int,
        body: bytes,
        *,
        close: bool,
        content_type: bytes = pages.TEXT,
        extra: Headers | None = None,
    ) -> None:
        request = self.request
        assert request is not None
        keep_alive = forwarding.local_keep_alive(
            request, close=close, draining=self.state.draining, request_done=self.request_done
        )
        self.response_status = status
        self.response_bytes = len(body)
        self.front.write(
            http1.simple_response(
                status,
                body,
                content_type=content_type,
                extra=extra,
                close=not keep_alive,
                head_only=request.method == b"HEAD",
            )
        )
        self._finish(keep_alive)

    def _log(self, request: RequestHead) -> None:
        if self.state.config.quiet:
            return
        ms = (time.perf_counter() - self.started) * 1000
        self.state.write_log(
            f'{self.front.client_ip} "{request.method.decode()} {request.host.decode()}'
            f'{request.target.decode("ascii", "backslashreplace")}" {self.response_status} '
            f"{self.response_bytes}B {ms:.1f}ms"
        )


def _field(headers: Headers, name: bytes) -> bytes | None:
    for field_name, value in headers:
        if field_name.lower() == name:
            return value
    return None


def _port_of(host: str) -> int:
    """The port the client asked for in Host (443 when it named none)."""
    _, colon, port = host.rpartition(":")
    return int(port) if colon and port.isdigit() and "]" not in port else 443


def _refused(exc: BaseException) -> bool:
    return (
        isinstance(exc, (ConnectionRefusedError, FileNotFoundError))
        or getattr(exc, "errno", None) == errno.ECONNREFUSED
    )
