"""Sans-IO reading of a TLS ClientHello: the server name and the ALPN protocols offered.

Every ClientHello is read here before OpenSSL sees it: the server name (SNI) is validated as a
host name, and the certificate is chosen from it (or an ACME tls-alpn-01 validation is told
apart by ALPN ``acme-tls/1``). Bytes in, a result out; malformed input raises ProtocolError, and
a server name that is not a host name raises its subclass BadServerName.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from devtls.errors import ProtocolError

HANDSHAKE_RECORD = 0x16
CLIENT_HELLO = 0x01
EXT_SERVER_NAME = 0
EXT_ALPN = 16
HOST_NAME = 0
# A ClientHello larger than this is refused (RFC 8446 caps a record at 16 KiB; a post-quantum
# key share makes hellos 2 KiB or so, still far below this). OpenSSL's own cap is 128 KiB.
MAX_HELLO = 64 * 1024
# RFC 8446 5.1: a plaintext record carries at most 2^14 bytes.
MAX_RECORD = 1 << 14
# What is held while a hello arrives, record headers included (a hello cut into tiny records
# carries 5 bytes of header per piece).
MAX_BUFFERED = MAX_HELLO + 5 + MAX_RECORD
# RFC 1035 / RFC 6066: labels of 1-63 octets, a name of at most 253 (without a final dot).
MAX_LABEL = 63
MAX_NAME = 253
# Fatal TLS alerts (RFC 8446 6.2), sent before any handshake message of ours.
ALERT_DECODE_ERROR = 50
ALERT_UNRECOGNIZED_NAME = 112

# Letters, digits and '-' (LDH, which IDNA A-labels are too), plus '_', which devtls accepts in
# certificate names (`devtls cert`, `--name`) so that every name it can mint can be asked for.
# No label starts or ends with '-'.
_NAME = re.compile(
    rb"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?",
    re.IGNORECASE,
)


class BadServerName(ProtocolError):
    """The SNI is not a host name; ``raw`` is what the client sent (for an escaped log line)."""

    def __init__(self, raw: bytes, why: str) -> None:
        super().__init__(f"server name {shown(raw)} is not a host name: {why}")
        self.raw = raw


def shown(raw: bytes, limit: int = 48) -> str:
    """A wire value for a log line: escaped (repr), never raw, and cut to ``limit`` bytes."""
    text = repr(raw[:limit])
    return text + "..." if len(raw) > limit else text


def check_server_name(raw: bytes) -> str | None:
    """The SNI as a lower-case host name; None for an IP literal, which is ignored as nginx does.

    RFC 6066 3: a DNS host name in ASCII, without a trailing dot; an IP literal is not allowed.
    One trailing dot is removed (the same name; browsers and curl leave it out); anything else
    that is not a host name raises BadServerName.
    """
    name = raw[:-1] if raw.endswith(b".") else raw
    if not name:
        raise BadServerName(raw, "empty")
    if len(name) > MAX_NAME:
        raise BadServerName(raw, f"longer than {MAX_NAME} bytes")
    if _NAME.fullmatch(name) is None:
        if b":" in name and name.isascii():
            try:
                ipaddress.IPv6Address(name.decode("ascii"))
            except ValueError:
                pass
            else:
                return None
        raise BadServerName(raw, "only letters, digits, '-', '_' and dots, labels of 1-63")
    text = name.decode("ascii").lower()
    last = text.rpartition(".")[2]
    if last.isdigit():
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise BadServerName(raw, "a numeric last label, not an IPv4 address") from None
        return None
    if "xn--" in text:
        for label in text.split("."):
            if label.startswith("xn--"):
                try:
                    unicode = label[4:].encode("ascii").decode("punycode")
                except UnicodeError:
                    unicode = ""
                if unicode.isascii():  # empty, or only ASCII: no U-label has this form
                    raise BadServerName(raw, f"{label!r} is not an IDNA A-label")
    return text


@dataclass(frozen=True)
class ClientHello:
    server_name: str | None
    alpn: tuple[bytes, ...]


class HelloReader:
    """Collects the records of one ClientHello as they arrive, in any number of pieces.

    Each byte is looked at once (a hello sent one byte per TCP segment costs no more than one
    sent whole), and at most MAX_BUFFERED bytes are ever held.
    """

    __slots__ = ("_at", "_message", "buffer")

    def __init__(self) -> None:
        self.buffer = bytearray()  # every byte received, to be handed to OpenSSL as it is
        self._at = 0  # where the next record starts in buffer
        self._message = bytearray()  # the handshake payload gathered so far

    def feed(self, data: bytes) -> ClientHello | None:
        """The hello once complete, None while more bytes are needed; ProtocolError if bad."""
        buffer = self.buffer
        buffer += data
        if len(buffer) > MAX_BUFFERED:
            raise ProtocolError("ClientHello too large")
        while len(buffer) >= self._at + 5:
            at = self._at
            if buffer[at] != HANDSHAKE_RECORD:
                raise ProtocolError("not a TLS handshake record")
            if buffer[at + 1] != 3:
                raise ProtocolError("not a TLS record version")
            length = (buffer[at + 3] << 8) | buffer[at + 4]
            if not 0 < length <= MAX_RECORD:
                raise ProtocolError("a TLS record of a bad length")
            if len(buffer) < at + 5 + length:
                return None
            message = self._message
            message += buffer[at + 5 : at + 5 + length]
            self._at = at + 5 + length
            if message[0] != CLIENT_HELLO:
                raise ProtocolError("the first handshake message is not a ClientHello")
            if len(message) >= 4:
                needed = 4 + int.from_bytes(message[1:4], "big")
                if needed > MAX_HELLO:
                    raise ProtocolError("ClientHello too large")
                if len(message) >= needed:
                    return _parse_body(bytes(message[4:needed]))
            if len(message) > MAX_HELLO:
                raise ProtocolError("ClientHello too large")
        return None


def parse_client_hello(data: bytes) -> ClientHello | None:
    """The hello in ``data`` (the first bytes a client sent), or None if more are needed."""
    return HelloReader().feed(data)


def _parse_body(body: bytes) -> ClientHello:
    # Plain index arithmetic, no objects per field: this runs for every TLS connection.
    end = len(body)
    at = 2 + 32  # legacy version, random
    if at >= end:
        raise ProtocolError("truncated ClientHello")
    at += 1 + body[at]  # session id
    if at + 2 > end:
        raise ProtocolError("truncated ClientHello")
    at += 2 + ((body[at] << 8) | body[at + 1])  # cipher suites
    if at >= end:
        raise ProtocolError("truncated ClientHello")
    at += 1 + body[at]  # compression methods
    if at == end:
        return ClientHello(None, ())
    if at + 2 > end:
        raise ProtocolError("truncated ClientHello")
    extensions_end = at + 2 + ((body[at] << 8) | body[at + 1])
    if extensions_end > end:
        raise ProtocolError("truncated ClientHello")
    if extensions_end < end:
        raise ProtocolError("bytes after the ClientHello extensions")
    at += 2
    seen: set[int] = set()
    raw_name: bytes | None = None
    alpn: tuple[bytes, ...] = ()
    while at < extensions_end:
        if at + 4 > extensions_end:
            raise ProtocolError("truncated ClientHello")
        kind = (body[at] << 8) | body[at + 1]
        start = at + 4
        at = start + ((body[at + 2] << 8) | body[at + 3])
        if at > extensions_end:
            raise ProtocolError("truncated ClientHello")
        if kind in seen:
            # RFC 8446 4.2: never two extensions of one type (OpenSSL refuses them too).
            raise ProtocolError(f"extension {kind} is sent twice")
        seen.add(kind)
        if kind == EXT_SERVER_NAME:
            raw_name = _server_name(body[start:at])
        elif kind == EXT_ALPN:
            alpn = _alpn(body[start:at])
    # Validated last: a hello that is malformed elsewhere is a decode error, not a bad name.
    server_name = None if raw_name is None else check_server_name(raw_name)
    return ClientHello(server_name, alpn)


def _server_name(content: bytes) -> bytes:
    # RFC 6066 3: a list of (type, name); one name per type, and host_name (0) is the only
    # type. OpenSSL, too, accepts exactly one entry of that type and nothing after it.
    if len(content) < 5 or ((content[0] << 8) | content[1]) != len(content) - 2:
        raise ProtocolError("a malformed server_name extension")
    if content[2] != HOST_NAME:
        raise ProtocolError("server_name holds a name that is not a host_name")
    if ((content[3] << 8) | content[4]) != len(content) - 5:
        raise ProtocolError("server_name must hold exactly one name")
    return content[5:]


def _alpn(content: bytes) -> tuple[bytes, ...]:
    end = len(content)
    if end < 3 or ((content[0] << 8) | content[1]) != end - 2:
        raise ProtocolError("a malformed ALPN extension")
    found = []
    at = 2
    while at < end:
        size = content[at]
        if not size or at + 1 + size > end:
            raise ProtocolError("a malformed ALPN protocol name")
        found.append(content[at + 1 : at + 1 + size])
        at += 1 + size
    return tuple(found)
