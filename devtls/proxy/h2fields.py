"""HTTP/2 field lists to and from the HTTP/1.1 heads devtls forwards (RFC 9113 8, RFC 8441).

Sans-IO. A request's fields come here after the ``h2`` library has validated them as RFC 9113
8.2 asks (no upper case, CR, LF or NUL, no connection-specific field, pseudo-fields first and
each once); what is left to check here is what HTTP/1.1 upstreams would read another way.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

from devtls.errors import ProtocolError
from devtls.proxy.forwarding import returned_fields
from devtls.proxy.http1 import BodyKind, Headers, RequestHead, ResponseHead
from devtls.proxy.uri import parse_target

_DIGITS = re.compile(rb"[0-9]{1,18}")
# RFC 6455 4.2.2: what Sec-WebSocket-Accept is computed with.
_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Response fields with no meaning in HTTP/2 (RFC 9113 8.2.2), besides those named in
# Connection; and the WebSocket handshake's own, which stays on the HTTP/1.1 side.
_NOT_IN_H2 = frozenset({b"sec-websocket-accept"})


def request_head(fields: Headers, *, end_stream: bool, max_fields: int) -> RequestHead:
    """The request an HTTP/2 HEADERS block carries, as the HTTP/1.1 head sent upstream.

    ``:authority`` becomes the Host; cookie crumbs are joined into one field (RFC 9113
    8.2.3); a body without ``content-length`` is sent chunked. An extended CONNECT for a
    WebSocket (RFC 8441) becomes a ``GET`` with ``Upgrade: websocket`` and a key of our own.
    Raises ProtocolError with the status to answer.
    """
    method = scheme = authority = path = protocol = None
    headers: Headers = []
    cookies: list[bytes] = []
    host = None
    length = None
    for name, value in fields:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":scheme":
                scheme = value
            elif name == b":protocol":
                protocol = value
            continue
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            if host is not None:
                raise ProtocolError("more than one Host field", 400)
            host = value
        elif name == b"content-length":
            if not _DIGITS.fullmatch(value) or (length is not None and int(value) != length):
                raise ProtocolError("malformed content-length", 400)
            length = int(value)
        headers.append((name, value))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    if len(headers) > max_fields:
        raise ProtocolError("too many header fields", 431)
    if method is None:
        raise ProtocolError("request without :method", 400)
    upgrade = None
    if protocol is not None:
        if method != b"CONNECT" or protocol.lower() != b"websocket":
            raise ProtocolError("only WebSockets may use an extended CONNECT", 400)
        method, upgrade = b"GET", b"websocket"
        headers.append((b"sec-websocket-key", base64.b64encode(os.urandom(16))))
    elif method == b"CONNECT":
        raise ProtocolError("CONNECT is not supported: this is not a forward proxy", 405)
    if scheme not in (b"https", b"http") or path is None:
        raise ProtocolError("request without :scheme https and a :path", 400)
    if path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
        # Absolute-form has no place in :path (RFC 9113 8.3.1).
        raise ProtocolError("malformed :path", 400)
    if authority is not None and host is not None and authority.lower() != host.lower():
        # RFC 9113 8.3.1: Host and :authority naming different hosts is malformed.
        raise ProtocolError(":authority and Host differ", 400)
    if authority is None and host is None:
        raise ProtocolError("request without :authority or Host", 400)
    host_name, target, normalized = parse_target(
        method, path, authority if authority is not None else host, True
    )
    if upgrade is not None or end_stream:
        if length:
            raise ProtocolError("content-length but no body", 400)
        body, length = BodyKind.NONE, 0
    elif length is not None:
        body = BodyKind.LENGTH
    else:
        body, length = BodyKind.CHUNKED, 0
    expect = next((v for n, v in headers if n == b"expect"), None)
    return RequestHead(
        method=method,
        target=target,
        http11=True,
        headers=headers,
        host=host_name,
        body=body,
        content_length=length,
        keep_alive=True,
        upgrade=upgrade,
        expect_continue=expect is not None and expect.lower() == b"100-continue",
        path=normalized,
    )


def response_fields(request: RequestHead, head: ResponseHead) -> Headers:
    """A final response's HEADERS for the client: the upstream's fields, reframed.

    HTTP/2 has no transfer codings: a body sent ``gzip, chunked`` cannot be passed on. To
    an extended CONNECT a 2xx means the WebSocket is open (RFC 8441 5): an upstream that
    answered the upgrade with one (a plain 200 page) opened none, so that is a 502 here (an
    HTTP/1.1 client gets the 200, and tells it from a 101 by itself).
    """
    if head.transfer_codings:
        raise ProtocolError("upstream used a transfer coding HTTP/2 cannot carry", 502)
    if request.upgrade is not None and 200 <= head.status < 300:
        raise ProtocolError(
            f"upstream did not switch protocols: it answered the WebSocket handshake with "
            f"{head.status}, not 101",
            502,
        )
    fields = _h2_fields(head)
    if head.body is BodyKind.LENGTH:
        fields.append((b"content-length", b"%d" % head.content_length))
    elif head.body is BodyKind.NONE and head.declared_length is not None:
        fields.append((b"content-length", b"%d" % head.declared_length))
    return fields


def informational_fields(head: ResponseHead) -> Headers | None:
    """A 1xx other than 100 and 101 for the client (103 Early Hints), or None."""
    if head.status in (100, 101):
        return None
    return _h2_fields(head)


def switching_fields(request: RequestHead, head: ResponseHead, key: bytes) -> Headers:
    """The 200 that opens an RFC 8441 WebSocket, from the upstream's 101.

    The 101 must answer our key: a 101 for another handshake is the upstream's fault.
    """
    if request.upgrade is None:
        raise ProtocolError("upstream switched protocols without being asked", 502)
    accept = next((v for n, v in head.headers if n.lower() == b"sec-websocket-accept"), None)
    # SHA-1 because RFC 6455 says so; it proves nothing secret here.
    digest = hashlib.sha1(key + _WEBSOCKET_GUID, usedforsecurity=False).digest()
    expected = base64.b64encode(digest)
    if accept != expected:
        raise ProtocolError("upstream answered the WebSocket handshake wrongly", 502)
    fields = _h2_fields(head)
    fields[0] = (b":status", b"200")
    return fields


def websocket_key(request: RequestHead) -> bytes:
    """The Sec-WebSocket-Key that ``request_head`` made for an extended CONNECT."""
    return next(v for n, v in reversed(request.headers) if n == b"sec-websocket-key")


def local_fields(
    status: int,
    length: int,
    content_type: bytes = b"text/plain; charset=utf-8",
    extra: Headers | None = None,
) -> Headers:
    """The HEADERS of an answer of devtls's own (404, 502, 504: the HTTP/1.1 pages' twins)."""
    fields: Headers = [
        (b":status", b"%d" % status),
        (b"content-type", content_type),
        (b"content-length", b"%d" % length),
        (b"cache-control", b"no-store"),
    ]
    if extra:
        fields += [(name.lower(), value) for name, value in extra]
    return fields


def _h2_fields(head: ResponseHead) -> Headers:
    fields: Headers = [(b":status", b"%d" % head.status)]
    for name, value in returned_fields(head):
        lower = name.lower()
        if lower not in _NOT_IN_H2:
            fields.append((lower, value))
    return fields
