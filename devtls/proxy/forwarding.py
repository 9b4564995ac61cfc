"""Sans-IO forwarding rules: the head devtls sends upstream, and the one it sends back.

Framing is never passed through: it is written from what ``http1`` parsed, so no field a
client or an upstream names in ``Connection`` can leave a body unframed, and no two parsers
can disagree about where a message ends. Fields devtls asserts (``Host``, ``X-Forwarded-*``,
``Forwarded``, ``X-Devtls-*``) are set by devtls alone.

An upstream with ``host_header = "upstream"`` is sent its own address as ``Host`` (what a
dev server's host check accepts unconfigured) and the browser's in ``X-Forwarded-Host`` and
``Forwarded: host=``.
"""

from __future__ import annotations

from dataclasses import dataclass

from devtls.config import Upstream
from devtls.errors import ProtocolError
from devtls.proxy.clienthello import check_server_name
from devtls.proxy.http1 import (
    HOP_BY_HOP,
    BodyKind,
    Headers,
    RequestHead,
    ResponseHead,
    encode_head,
)

# Client fields never passed on as they came: hop-by-hop ones, those devtls writes itself
# (framing and Host from the parse, the X-Forwarded-* it asserts), and Expect (devtls
# answers 100-continue).
_NOT_FORWARDED = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-port",
    b"expect",
}
# Upstream fields devtls writes itself from the parse.
_NOT_RETURNED = HOP_BY_HOP | {b"content-length"}
# devtls's own fields: a client cannot send them to the app.
OWN_PREFIX = b"x-devtls-"
# Requests a retry may repeat: RFC 9110 9.2.2 idempotent methods.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


@dataclass(frozen=True, slots=True)
class ClientSide:
    """What devtls knows about the client connection, for the fields it asserts."""

    ip: str
    sni: str | None
    listen_port: int
    # (TLS version, cipher) for an upstream that asked for them (the demo).
    tls: tuple[str, str] | None = None
    # The client's HTTP version, told to that upstream too.
    protocol: bytes = b"HTTP/1.1"


def request_host(head: RequestHead, client: ClientSide, upstream: Upstream) -> bytes:
    """The Host sent upstream: the parsed one, else the SNI name, else the upstream's own.

    HTTP/1.0 clients may leave Host out; HTTP/1.1, which devtls speaks upstream, may not
    (RFC 9112 3.2). The SNI reaches here validated by the TLS layer; it is checked again,
    since it becomes a header line.
    """
    if head.host:
        return head.host
    if client.sni:
        try:
            name = check_server_name(client.sni.encode("ascii", "replace"))
        except ProtocolError:
            name = None
        if name is not None:
            return name.encode("ascii")
    return upstream_host(upstream)


def upstream_host(upstream: Upstream) -> bytes:
    """The upstream's own address as a Host: ``localhost:5173``, ``[::1]:3000``; a default
    port is left out (``example.test`` for https on 443); a unix socket is ``localhost``."""
    if upstream.scheme == "unix":
        return b"localhost"
    host = upstream.host.encode("ascii")
    if b":" in host:
        host = b"[%s]" % host
    default = 443 if upstream.scheme == "https" else 80
    return host if upstream.port == default else b"%s:%d" % (host, upstream.port)


def upstream_origin(origin: bytes, browser_host: bytes, upstream: Upstream) -> bytes:
    """The Origin of a WebSocket handshake sent to an upstream that is sent its own Host.

    A page's own Origin (``https://`` and the Host the browser asked for) becomes the
    upstream's origin, which the dev server compares with its Host (webpack-dev-server
    refuses the HMR socket otherwise); any other Origin goes as it came, so the upstream
    still refuses sockets opened by other sites.
    """
    own = browser_host.lower()
    if own.endswith(b":443"):
        own = own[:-4]
    if origin.lower() != b"https://" + own:
        return origin
    scheme = b"https" if upstream.scheme == "https" else b"http"
    return b"%s://%s" % (scheme, upstream_host(upstream))


def upstream_request_head(
    head: RequestHead, target: bytes, client: ClientSide, upstream: Upstream
) -> bytes:
    """The request head for the upstream: origin-form ``target``, HTTP/1.1, reframed."""
    tokens = head.connection_tokens
    host = request_host(head, client, upstream)
    own_host = upstream.host_header == "upstream"
    headers: Headers = [(b"Host", upstream_host(upstream) if own_host else host)]
    # Only a handshake's: Next.js compares a request's Origin with X-Forwarded-Host.
    rewrite_origin = own_host and head.upgrade is not None
    forwarded_for = b""
    forwarded = b""
    for name, value in head.headers:
        lower = name.lower()
        if lower in tokens:
            continue  # hop-by-hop: named in Connection
        if rewrite_origin and lower == b"origin":
            headers.append((name, upstream_origin(value, host, upstream)))
        elif lower == b"x-forwarded-for":
            forwarded_for = forwarded_for + b", " + value if forwarded_for else value
        elif lower == b"forwarded":
            forwarded = forwarded + b", " + value if forwarded else value
        # Names with "_" are dropped as nginx's underscores_in_headers off does: CGI and WSGI
        # servers read X_Forwarded_Proto as X-Forwarded-Proto, which devtls asserts.
        elif lower not in _NOT_FORWARDED and b"_" not in lower and not lower.startswith(OWN_PREFIX):
            headers.append((name, value))
    ip = client.ip.encode("ascii")
    node = b'"[%s]"' % ip if b":" in ip else ip
    this_hop = b'for=%s;host="%s";proto=https' % (node, host)
    headers += [
        (b"X-Forwarded-For", forwarded_for + b", " + ip if forwarded_for else ip),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", host),
        (b"X-Forwarded-Port", b"%d" % client.listen_port),
        (b"Forwarded", forwarded + b", " + this_hop if forwarded else this_hop),
    ]
    if head.body is BodyKind.CHUNKED:
        headers.append((b"Transfer-Encoding", b"chunked"))
    elif head.body is BodyKind.LENGTH:
        headers.append((b"Content-Length", b"%d" % head.content_length))
    if head.upgrade is not None:
        headers += [(b"Connection", b"Upgrade"), (b"Upgrade", head.upgrade)]
    if upstream.wants_tls_info and client.tls is not None:
        version, cipher = client.tls
        headers += [
            (b"X-Devtls-Tls-Version", version.encode("ascii")),
            (b"X-Devtls-Tls-Cipher", cipher.encode("ascii")),
            (b"X-Devtls-Http-Version", client.protocol),
        ]
    return encode_head(b"%s %s HTTP/1.1" % (head.method, target), headers)


@dataclass(frozen=True, slots=True)
class ResponseStart:
    """A response head for the client, and how its body is to be written."""

    data: bytes
    chunked: bool
    keep_alive: bool


def informational_head(request: RequestHead, head: ResponseHead) -> bytes | None:
    """A 1xx other than 101 for the client, or None when it is not passed on.

    100 Continue is devtls's own to send; HTTP/1.0 clients get no 1xx (RFC 9110 15.2).
    """
    if not request.http11 or head.status == 100:
        return None
    return encode_head(_status_line(head), returned_fields(head))


def switching_head(request: RequestHead, head: ResponseHead) -> bytes:
    """The 101 for the client; an upgrade nobody asked for is the upstream's fault."""
    if request.upgrade is None:
        raise ProtocolError("upstream switched protocols without being asked", 502)
    upgrade = next((v for n, v in head.headers if n.lower() == b"upgrade"), request.upgrade)
    headers = [*returned_fields(head), (b"Connection", b"Upgrade"), (b"Upgrade", upgrade)]
    return encode_head(_status_line(head), headers)


def final_head(request: RequestHead, head: ResponseHead, *, draining: bool) -> ResponseStart:
    """A final (2xx-5xx) response head for the client, reframed for the client's version."""
    headers = returned_fields(head)
    keep_alive = request.keep_alive and not draining
    chunked = False
    if head.body is BodyKind.LENGTH:
        headers.append((b"Content-Length", b"%d" % head.content_length))
    elif head.body is BodyKind.NONE:
        if head.declared_length is not None:
            headers.append((b"Content-Length", b"%d" % head.declared_length))
    elif request.http11:
        headers.append((b"Transfer-Encoding", b", ".join([*head.transfer_codings, b"chunked"])))
        chunked = True
    elif head.transfer_codings:
        # An HTTP/1.0 client has no way to learn of a transfer coding.
        raise ProtocolError("upstream used a transfer coding an HTTP/1.0 client cannot read", 502)
    else:
        keep_alive = False  # the body ends when the connection does
    if not keep_alive:
        headers.append((b"Connection", b"close"))
    elif not request.http11:
        headers.append((b"Connection", b"keep-alive"))
    return ResponseStart(encode_head(_status_line(head), headers), chunked, keep_alive)


def _status_line(head: ResponseHead) -> bytes:
    return b"HTTP/1.1 %d %s" % (head.status, head.reason)


def returned_fields(head: ResponseHead) -> Headers:
    """The upstream's response fields that go on: not hop-by-hop, not its framing."""
    tokens = head.connection_tokens
    return [
        (n, v)
        for n, v in head.headers
        if (lower := n.lower()) not in _NOT_RETURNED and lower not in tokens
    ]


# Fields that cannot be trailers (RFC 9110 6.5.1): framing, routing and the hop's own; they
# are dropped, whichever way the trailers go.
_NOT_TRAILERS = HOP_BY_HOP | {b"content-length", b"host", b"trailer"}


def trailer_fields(trailers: Headers, *, to_upstream: bool) -> Headers:
    """The trailer fields that may go on; towards the upstream, the request rules apply too."""
    passed = []
    for name, value in trailers:
        lower = name.lower()
        if lower in _NOT_TRAILERS or lower[:1] == b":":
            continue
        if to_upstream and (b"_" in lower or lower.startswith(OWN_PREFIX)):
            continue
        passed.append((name, value))
    return passed


# -- the decisions around an exchange --------------------------------------------------------


def request_is_bodiless(head: RequestHead) -> bool:
    """No body, or "Content-Length: 0": the request's end is known with its head."""
    return head.body is BodyKind.NONE or (head.body is BodyKind.LENGTH and head.content_length == 0)


def sends_continue(request: RequestHead, *, request_done: bool) -> bool:
    """Whether devtls answers ``Expect: 100-continue`` itself, once the upstream is there.

    The upstream is asked for nothing (Expect is not forwarded); HTTP/1.0 clients get no 1xx.
    """
    return request.expect_continue and not request_done and request.http11


def retry_is_safe(method: bytes, *, nothing_sent: bool, reused: bool, body_bytes_sent: int) -> bool:
    """Whether a request the upstream lost may be sent again on a fresh connection.

    Only when it never reached the application: not a byte of it was written, or the pooled
    connection was closed by the upstream as it was reused (then only an idempotent request
    is sent again), and no byte of its body has gone out.
    """
    return (nothing_sent or (reused and method in IDEMPOTENT)) and body_bytes_sent == 0


def local_keep_alive(
    request: RequestHead, *, close: bool, draining: bool, request_done: bool
) -> bool:
    """Whether the client connection stays open after an answer of devtls's own.

    A request whose body is still coming cannot be told apart from the next request: the
    connection ends, and the answer says so.
    """
    return request.keep_alive and not close and not draining and request_done
