"""Sans-IO reading of a TLS ClientHello: the server name and the ALPN protocols offered.

Used only to tell an ACME tls-alpn-01 validation (ALPN ``acme-tls/1``) from a normal client
before the handshake starts. Bytes in, a result out; malformed input raises ProtocolError.
"""

from __future__ import annotations

from dataclasses import dataclass

from devtls.errors import ProtocolError

HANDSHAKE_RECORD = 0x16
CLIENT_HELLO = 0x01
EXT_SERVER_NAME = 0
EXT_ALPN = 16
# A ClientHello larger than this is not one we need to look into (RFC 8446 caps records at
# 16 KiB; a post-quantum key share makes hellos a few KiB, still far below this).
MAX_HELLO = 64 * 1024


@dataclass(frozen=True)
class ClientHello:
    server_name: str | None
    alpn: tuple[bytes, ...]


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise ProtocolError("truncated ClientHello")
        piece = self.data[self.at : self.at + size]
        self.at += size
        return piece

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(self.number(length_size))

    @property
    def done(self) -> bool:
        return self.at >= len(self.data)


def parse_client_hello(data: bytes) -> ClientHello | None:
    """The hello in ``data`` (the first bytes a client sent), or None if more are needed."""
    message = bytearray()
    offset = 0
    # The handshake message may span several records; gather their payloads.
    while True:
        if len(data) < offset + 5:
            return None
        if data[offset] != HANDSHAKE_RECORD:
            raise ProtocolError("not a TLS handshake record")
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        if len(data) < offset + 5 + length:
            return None
        message += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if len(message) >= 4:
            if message[0] != CLIENT_HELLO:
                raise ProtocolError("the first handshake message is not a ClientHello")
            needed = 4 + int.from_bytes(message[1:4], "big")
            if needed > MAX_HELLO:
                raise ProtocolError("ClientHello too large")
            if len(message) >= needed:
                return _parse_body(bytes(message[4:needed]))
        if offset > MAX_HELLO:
            raise ProtocolError("ClientHello too large")


def _parse_body(body: bytes) -> ClientHello:
    cursor = _Cursor(body)
    cursor.take(2 + 32)  # legacy version, random
    cursor.vector(1)  # session id
    cursor.vector(2)  # cipher suites
    cursor.vector(1)  # compression methods
    if cursor.done:
        return ClientHello(None, ())
    extensions = _Cursor(cursor.vector(2))
    server_name: str | None = None
    alpn: tuple[bytes, ...] = ()
    while not extensions.done:
        kind = extensions.number(2)
        content = _Cursor(extensions.vector(2))
        if kind == EXT_SERVER_NAME:
            names = _Cursor(content.vector(2))
            while not names.done:
                name_type = names.number(1)
                name = names.vector(2)
                if name_type == 0:
                    try:
                        server_name = name.decode("ascii").lower()
                    except UnicodeDecodeError:
                        raise ProtocolError("server name is not ASCII") from None
        elif kind == EXT_ALPN:
            protocols = _Cursor(content.vector(2))
            found = []
            while not protocols.done:
                found.append(protocols.vector(1))
            alpn = tuple(found)
    return ClientHello(server_name, alpn)
