"""Sans-IO HTTP/1.1 message framing (RFC 9112): bytes in, events out.

No sockets and no event loop here. ``RequestReader`` parses what a client sends,
``ResponseReader`` what an upstream answers. Each raises ``ProtocolError`` (with the
HTTP status to answer) and nothing else on bad input; input that could be framed two
ways (request smuggling) is refused, never guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from devtls.errors import ProtocolError
from devtls.proxy.uri import parse_target

# nginx's large_client_header_buffers default (4 x 8k): a request line or one header
# line longer than 8 KiB is refused, and so is a head larger than 32 KiB.
MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_LINE = 8 * 1024
MAX_HEAD_SIZE = 32 * 1024
# Apache's LimitRequestFields default.
MAX_HEADER_COUNT = 100
# An upstream's response head may be bigger (cookies, CSP); nginx's proxy_buffer_size is
# smaller than this, Go's net/http allows 1 MiB. 64 KiB is ample for a development server.
MAX_RESPONSE_HEAD_SIZE = 64 * 1024
# A chunk size must fit a signed 64-bit integer, as in nginx and Go: anything larger is an
# overflow attempt against some parser behind or in front of us.
MAX_CHUNK_SIZE = 2**63 - 1
MAX_CHUNK_LINE = 4 * 1024

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(.*?)[ \t]*")
_FIELD_VALUE = re.compile(rb"[\x21-\x7e\x80-\xff \t]*")
# A whole block of well-formed field lines, and one field of such a block.
_FIELD_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":[\x21-\x7e\x80-\xff \t]*\r?\n)*")
# (A greedy value that must end in a visible character backtracks far less than a lazy one.)
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*((?:[^\r\n]*[^\r\n \t])?)[ \t]*\r?\n")
_METHOD = re.compile(_TOKEN)
_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([\x09\x20-\x7e\x80-\xff]*))?")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_QUOTED = rb'"[^"\\\r\n]*"'
_CHUNK_EXT_ONE = rb"[ \t]*;[ \t]*" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?"
_CHUNK_EXT = re.compile(rb"(?:" + _CHUNK_EXT_ONE + rb")*[ \t]*")
# RFC 9110 7.8: protocol-name ["/" protocol-version], both tokens.
_PROTOCOL = re.compile(_TOKEN + rb"(?:/" + _TOKEN + rb")?")

# RFC 9110 7.6.1: connection-specific fields a proxy must not forward.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


class BodyKind(Enum):
    NONE = 0
    LENGTH = 1
    CHUNKED = 2
    UNTIL_CLOSE = 3  # responses only


Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    http11: bool
    headers: Headers
    host: bytes
    body: BodyKind
    content_length: int
    keep_alive: bool
    upgrade: bytes | None  # the Upgrade protocol asked for, e.g. b"websocket"
    expect_continue: bool
    connection_tokens: frozenset[bytes] = field(default_factory=frozenset)
    # The normalized path without the query (``*`` for ``OPTIONS *``): what routes match.
    path: bytes = b"/"


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: bytes
    http11: bool
    headers: Headers
    body: BodyKind
    content_length: int
    keep_alive: bool
    connection_tokens: frozenset[bytes] = field(default_factory=frozenset)
    # Codings applied before chunked (``gzip`` of ``gzip, chunked``): passed on as they are.
    transfer_codings: tuple[bytes, ...] = ()
    # Content-Length of a HEAD or 304 response, which describes a body not sent.
    declared_length: int | None = None


@dataclass(slots=True)
class Data:
    data: bytes


class EndOfMessage:
    __slots__ = ()


END = EndOfMessage()
Event = RequestHead | ResponseHead | Data | EndOfMessage


class _State(Enum):
    HEAD = 0
    LENGTH = 1
    CHUNK_SIZE = 2
    CHUNK_DATA = 3
    CHUNK_END = 4
    TRAILERS = 5
    UNTIL_CLOSE = 6
    DONE = 7


class _Reader:
    """Shared body framing for both directions."""

    def __init__(self, max_head: int) -> None:
        self._buffer = bytearray()
        self._state = _State.HEAD
        self._remaining = 0
        self._max_head = max_head
        self._eof = False
        # The trailer fields of the last chunked body, once its EndOfMessage is out.
        self.trailers: Headers = []

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def at_message_start(self) -> bool:
        return self._state is _State.HEAD and not self._buffer

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def feed_eof(self) -> None:
        self._eof = True

    def take_buffered(self) -> bytes:
        """Everything not yet parsed (the first bytes of an upgraded connection)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def next_message(self) -> None:
        """After EndOfMessage: start on the next message (pipelined bytes stay buffered)."""
        if self._state is not _State.DONE:
            raise RuntimeError("the current message is not finished")
        self._state = _State.HEAD
        self.trailers = []

    def _take_head(self, limit_status: int, line_limit: int | None = None) -> bytes | None:
        """The next head without its closing empty line (each line still ends in LF)."""
        buffer = self._buffer
        end = _find_head_end(buffer)
        if end < 0:
            too_long = line_limit is not None and len(buffer) > line_limit
            if too_long and b"\n" not in buffer[:line_limit]:
                raise ProtocolError("request line too long", 414)
            if len(buffer) > self._max_head:
                raise ProtocolError("message head too large", limit_status)
            if self._eof and buffer:
                raise ProtocolError("connection closed inside a message head", 400)
            return None
        if end > self._max_head:
            raise ProtocolError("message head too large", limit_status)
        head = bytes(buffer[:end])
        del buffer[:end]
        return head[:-2] if head.endswith(b"\n\r\n") else head[:-1]

    def _body_event(self) -> Data | EndOfMessage | None:
        state = self._state
        buffer = self._buffer
        while True:
            if state is _State.LENGTH:
                if self._remaining == 0:
                    self._state = _State.DONE
                    return END
                if not buffer:
                    if self._eof:
                        raise ProtocolError("connection closed inside a body", 400)
                    return None
                take = min(self._remaining, len(buffer))
                chunk = bytes(buffer[:take])
                del buffer[:take]
                self._remaining -= take
                return Data(chunk)
            if state is _State.UNTIL_CLOSE:
                if buffer:
                    chunk = bytes(buffer)
                    buffer.clear()
                    return Data(chunk)
                if self._eof:
                    self._state = _State.DONE
                    return END
                return None
            if state is _State.CHUNK_SIZE:
                newline = buffer.find(b"\n", 0, MAX_CHUNK_LINE)
                if newline < 0:
                    if len(buffer) >= MAX_CHUNK_LINE:
                        raise ProtocolError("chunk size line too long", 400)
                    if self._eof:
                        raise ProtocolError("connection closed inside a chunked body", 400)
                    return None
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                self._remaining = _parse_chunk_size(line)
                state = self._state = _State.TRAILERS if self._remaining == 0 else _State.CHUNK_DATA
                continue
            if state is _State.CHUNK_DATA:
                if not buffer:
                    if self._eof:
                        raise ProtocolError("connection closed inside a chunk", 400)
                    return None
                take = min(self._remaining, len(buffer))
                chunk = bytes(buffer[:take])
                del buffer[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _State.CHUNK_END
                return Data(chunk)
            if state is _State.CHUNK_END:
                first = bytes(buffer[:2])
                if first == b"\r\n" or first[:1] == b"\n":
                    del buffer[: 2 if first[:1] == b"\r" else 1]
                    state = self._state = _State.CHUNK_SIZE
                    continue
                if first not in (b"", b"\r"):
                    raise ProtocolError("chunk data not followed by CRLF", 400)
                if self._eof:
                    raise ProtocolError("connection closed inside a chunked body", 400)
                return None
            if state is _State.TRAILERS:
                if buffer[:2] == b"\r\n" or buffer[:1] == b"\n":
                    del buffer[: 2 if buffer[:1] == b"\r" else 1]
                    self._state = _State.DONE
                    return END
                if len(buffer) < 2 or (trailers := self._take_head(400)) is None:
                    if self._eof:
                        raise ProtocolError("connection closed inside a chunked body", 400)
                    return None
                # Checked as head fields are; which of them may go on is forwarding's call.
                self.trailers = _parse_fields(trailers, MAX_HEADER_COUNT, 400)
                self._state = _State.DONE
                return END
            return None


class RequestReader(_Reader):
    """Parses requests from a client, one at a time (pipelined ones wait in the buffer)."""

    def __init__(
        self,
        *,
        max_request_line: int = MAX_REQUEST_LINE,
        max_head: int = MAX_HEAD_SIZE,
        max_headers: int = MAX_HEADER_COUNT,
    ) -> None:
        super().__init__(max_head)
        self._max_request_line = max_request_line
        self._max_headers = max_headers

    def next_event(self) -> RequestHead | Data | EndOfMessage | None:
        """The next event, or None when more bytes are needed."""
        if self._state is _State.HEAD:
            # RFC 9112 2.2: ignore empty lines before a request line.
            while self._buffer.startswith((b"\r\n", b"\n")):
                del self._buffer[: 2 if self._buffer[:1] == b"\r" else 1]
            raw = self._take_head(431, self._max_request_line)
            if raw is None:
                return None
            head = self._parse_head(*_split_start_line(raw))
            self._start_body(head.body, head.content_length)
            return head
        if self._state is _State.DONE:
            return None
        return self._body_event()

    def _start_body(self, body: BodyKind, length: int) -> None:
        if body is BodyKind.CHUNKED:
            self._state = _State.CHUNK_SIZE
        elif body is BodyKind.UNTIL_CLOSE:
            self._state = _State.UNTIL_CLOSE
        else:
            self._state = _State.LENGTH
            self._remaining = length

    def _parse_head(self, request_line: bytes, fields: bytes) -> RequestHead:
        if len(request_line) > self._max_request_line:
            raise ProtocolError("request line too long", 414)
        parts = request_line.split(b" ")
        if len(parts) != 3:
            raise ProtocolError("malformed request line", 400)
        method, target, version = parts
        if not _METHOD.fullmatch(method) or not _TARGET.fullmatch(target):
            raise ProtocolError("malformed request line", 400)
        if version == b"HTTP/1.1":
            http11 = True
        elif version == b"HTTP/1.0":
            http11 = False
        elif version.startswith(b"HTTP/") and re.fullmatch(rb"HTTP/[0-9]\.[0-9]", version):
            raise ProtocolError("HTTP version not supported", 505)
        else:
            raise ProtocolError("malformed request line", 400)
        headers = _parse_fields(fields, self._max_headers, 431)
        framing = _Framing(headers)
        host = framing.single(b"host")
        host, target, path = parse_target(method, target, host, http11)
        body, length = framing.request_body(http11)
        tokens = framing.connection_tokens
        keep_alive = (b"close" not in tokens) if http11 else (b"keep-alive" in tokens)
        upgrade = None
        # RFC 9110 7.8: Upgrade in an HTTP/1.0 request is ignored.
        if http11 and b"upgrade" in tokens:
            upgrade = _upgrade_protocols(framing.single(b"upgrade"))
        expect = framing.single(b"expect")
        return RequestHead(
            method=method,
            target=target,
            http11=http11,
            headers=headers,
            host=host,
            body=body,
            content_length=length,
            keep_alive=keep_alive,
            upgrade=upgrade,
            expect_continue=expect is not None and expect.lower() == b"100-continue",
            connection_tokens=tokens,
            path=path,
        )


def _upgrade_protocols(value: bytes | None) -> bytes | None:
    """The protocols an Upgrade asks for, or None when there is nothing to tunnel.

    h2c is never tunnelled: it has no meaning over TLS (RFC 9113 3.1), and the tunnel would
    carry requests the router never sees.
    """
    if value is None:
        return None
    protocols = [p.strip() for p in value.split(b",") if p.strip()]
    if not protocols or not all(_PROTOCOL.fullmatch(p) for p in protocols):
        raise ProtocolError("malformed Upgrade header", 400)
    if any(p.lower().partition(b"/")[0] == b"h2c" for p in protocols):
        return None
    return b", ".join(protocols)


class ResponseReader(_Reader):
    """Parses one upstream response at a time; it must be told the request's method."""

    def __init__(self, *, max_head: int = MAX_RESPONSE_HEAD_SIZE) -> None:
        super().__init__(max_head)
        self._head_request = False

    def expect_response(self, *, head_request: bool) -> None:
        """Get ready for the response to a request (HEAD responses carry no body)."""
        self._head_request = head_request
        self._state = _State.HEAD
        self.trailers = []

    def next_event(self) -> ResponseHead | Data | EndOfMessage | None:
        try:
            if self._state is not _State.HEAD:
                return None if self._state is _State.DONE else self._body_event()
            raw = self._take_head(502)
            if raw is None:
                if self._eof and not self._buffer:
                    raise ProtocolError("closed the connection without a response", 502)
                return None
            head = self._parse_head(*_split_start_line(raw))
        except ProtocolError as exc:
            # Whatever the upstream got wrong, the client is answered 502.
            raise ProtocolError(f"upstream: {exc.message}", 502) from None
        if 100 <= head.status < 200:
            # 1xx: informational, and the real response is still to come (101 aside).
            self._state = _State.HEAD if head.status != 101 else _State.DONE
            return head
        if head.body is BodyKind.CHUNKED:
            self._state = _State.CHUNK_SIZE
        elif head.body is BodyKind.UNTIL_CLOSE:
            self._state = _State.UNTIL_CLOSE
        else:
            self._state = _State.LENGTH
            self._remaining = head.content_length
        return head

    def _parse_head(self, status_line: bytes, fields: bytes) -> ResponseHead:
        match = _STATUS_LINE.fullmatch(status_line)
        if not match:
            raise ProtocolError("malformed status line", 502)
        http11 = match.group(1) == b"1"
        status = int(match.group(2))
        if status < 100:
            raise ProtocolError("malformed status code", 502)
        headers = _parse_fields(fields, MAX_HEADER_COUNT * 2, 502)
        framing = _Framing(headers)
        tokens = framing.connection_tokens
        keep_alive = (b"close" not in tokens) if http11 else (b"keep-alive" in tokens)
        codings: tuple[bytes, ...] = ()
        declared: int | None = None
        if self._head_request or status < 200 or status in (204, 304):
            body, length = BodyKind.NONE, 0
            if framing.content_lengths and status >= 200 and status != 204:
                # A HEAD or 304 response's length describes the body it does not carry.
                declared = framing._content_length(502)
        else:
            body, length, codings = framing.response_body(http11)
            if body is BodyKind.UNTIL_CLOSE:
                keep_alive = False
        return ResponseHead(
            status=status,
            reason=match.group(3) or b"",
            http11=http11,
            headers=headers,
            body=body,
            content_length=length,
            keep_alive=keep_alive,
            connection_tokens=tokens,
            transfer_codings=codings,
            declared_length=declared,
        )


_CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _SINGLE = range(4)
# The fields that frame a message or must appear at most once; all others pass untouched.
_FRAMING_FIELDS = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"host": _SINGLE,
    b"upgrade": _SINGLE,
    b"expect": _SINGLE,
}


class _Framing:
    """The fields that decide a message's framing, read once and checked for conflicts."""

    __slots__ = ("connection_tokens", "content_lengths", "singles", "transfer_encodings")

    def __init__(self, headers: Headers) -> None:
        self.content_lengths: list[bytes] = []
        self.transfer_encodings: list[bytes] = []
        self.singles: dict[bytes, list[bytes]] = {}
        tokens: set[bytes] = set()
        kinds = _FRAMING_FIELDS
        for name, value in headers:
            lower = name.lower()
            kind = kinds.get(lower)
            if kind is None:
                continue
            if kind == _CONTENT_LENGTH:
                self.content_lengths.append(value)
            elif kind == _TRANSFER_ENCODING:
                self.transfer_encodings.append(value)
            elif kind == _CONNECTION:
                tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
            else:
                self.singles.setdefault(lower, []).append(value)
        self.connection_tokens = frozenset(tokens)

    def single(self, name: bytes) -> bytes | None:
        values = self.singles.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise ProtocolError(f"duplicate {name.decode()} header", 400)
        return values[0]

    def request_body(self, http11: bool) -> tuple[BodyKind, int]:
        if self.transfer_encodings:
            if self.content_lengths:
                raise ProtocolError("both Content-Length and Transfer-Encoding", 400)
            if not http11:
                raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request", 400)
            self._require_chunked(501)
            return BodyKind.CHUNKED, 0
        if self.content_lengths:
            return BodyKind.LENGTH, self._content_length(400)
        return BodyKind.NONE, 0

    def response_body(self, http11: bool) -> tuple[BodyKind, int, tuple[bytes, ...]]:
        """The body's framing, its length, and the transfer codings other than chunked."""
        if self.transfer_encodings:
            if self.content_lengths:
                raise ProtocolError("both Content-Length and Transfer-Encoding", 502)
            if not http11:
                # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
                raise ProtocolError("Transfer-Encoding in an HTTP/1.0 response", 502)
            codings = self._codings()
            names = [c.partition(b";")[0].strip().lower() for c in codings]
            if not codings or b"" in names or b"chunked" in names[:-1]:
                raise ProtocolError("malformed Transfer-Encoding", 502)
            if names[-1] == b"chunked":
                return BodyKind.CHUNKED, 0, tuple(codings[:-1])
            # RFC 9112 6.3: a final coding other than chunked means "read until close".
            return BodyKind.UNTIL_CLOSE, 0, tuple(codings)
        if self.content_lengths:
            return BodyKind.LENGTH, self._content_length(502), ()
        return BodyKind.UNTIL_CLOSE, 0, ()

    def _codings(self) -> list[bytes]:
        return [c.strip() for v in self.transfer_encodings for c in v.split(b",") if c.strip()]

    def _is_chunked(self) -> bool:
        return [c.lower() for c in self._codings()] == [b"chunked"]

    def _require_chunked(self, status: int) -> None:
        if not self._is_chunked():
            raise ProtocolError("unsupported Transfer-Encoding (only chunked is)", status)

    def _content_length(self, status: int) -> int:
        if len(self.content_lengths) > 1:
            raise ProtocolError("duplicate Content-Length header", status)
        value = self.content_lengths[0]
        if not value.isdigit() or len(value) > 18:
            raise ProtocolError("malformed Content-Length header", status)
        return int(value)


def _find_head_end(buffer: bytearray) -> int:
    """Index just past the empty line ending a head, or -1 (lines end in CRLF or LF)."""
    crlf = buffer.find(b"\n\r\n")
    lf = buffer.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return -1
    if lf < 0 or (0 <= crlf < lf):
        return crlf + 3
    return lf + 2


def _split_start_line(head: bytes) -> tuple[bytes, bytes]:
    """A head's first line (without its line ending) and the field lines after it."""
    newline = head.find(b"\n")
    first = head[:newline] if newline >= 0 else head
    fields = head[newline + 1 :] if newline >= 0 else b""
    return (first[:-1] if first.endswith(b"\r") else first), fields


def _parse_fields(block: bytes, max_count: int, limit_status: int) -> Headers:
    """Field lines, each ending in LF, into (name, value) pairs."""
    # Common case: a block no longer than one line may be is checked whole by one regular
    # expression and split by another; anything else takes the line-by-line path below,
    # which also finds the exact error.
    if len(block) <= MAX_HEADER_LINE and _FIELD_BLOCK.fullmatch(block):
        headers: Headers = _FIELD.findall(block)
        if len(headers) > max_count:
            raise ProtocolError("too many header fields", limit_status)
        return headers
    return _parse_field_lines(block, max_count, limit_status)


def _parse_field_lines(block: bytes, max_count: int, limit_status: int) -> Headers:
    lines = block.split(b"\n")[:-1]
    if len(lines) > max_count:
        raise ProtocolError("too many header fields", limit_status)
    headers: Headers = []
    append = headers.append
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > MAX_HEADER_LINE:
            raise ProtocolError("header field too large", limit_status)
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            if line[:1] in (b" ", b"\t"):
                raise ProtocolError("obsolete line folding in a header", 400)
            raise ProtocolError("malformed header field", 400)
        value = match.group(2)
        if not _FIELD_VALUE.fullmatch(value):
            raise ProtocolError("invalid character in a header value", 400)
        append((match.group(1), value))
    return headers


def _parse_chunk_size(line: bytes) -> int:
    if line.endswith(b"\r"):
        line = line[:-1]
    size_end = 0
    while size_end < len(line) and line[size_end : size_end + 1] in b"0123456789abcdefABCDEF":
        size_end += 1
    size, extensions = line[:size_end], line[size_end:]
    if not size or not _HEX.fullmatch(size):
        raise ProtocolError("malformed chunk size", 400)
    if extensions and not _CHUNK_EXT.fullmatch(extensions):
        raise ProtocolError("malformed chunk extension", 400)
    value = int(size, 16)
    if value > MAX_CHUNK_SIZE:
        raise ProtocolError("chunk size too large", 400)
    return value


# -- writing ---------------------------------------------------------------------------------


def encode_head(start_line: bytes, headers: Headers) -> bytes:
    parts = [start_line, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> list[bytes]:
    """One chunk of a chunked body, as pieces for writelines (no copy of the data)."""
    return [b"%x\r\n" % len(data), data, b"\r\n"]


LAST_CHUNK = b"0\r\n\r\n"


def last_chunk(trailers: Headers) -> bytes:
    """The end of a chunked body, with its trailer section (fields checked by the caller)."""
    if not trailers:
        return LAST_CHUNK
    return encode_head(b"0", trailers)


REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    301: "Moved Permanently",
    308: "Permanent Redirect",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def simple_response(
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    extra: Headers | None = None,
    close: bool = False,
    head_only: bool = False,
) -> bytes:
    """A complete response generated by the forwarder itself (errors, redirects, the demo)."""
    headers: Headers = [
        (b"Content-Type", content_type),
        (b"Content-Length", b"%d" % len(body)),
        (b"Cache-Control", b"no-store"),
    ]
    if extra:
        headers += extra
    if close:
        headers.append((b"Connection", b"close"))
    reason = REASONS.get(status, "Status").encode()
    head = encode_head(b"HTTP/1.1 %d %s" % (status, reason), headers)
    return head if head_only else head + body
