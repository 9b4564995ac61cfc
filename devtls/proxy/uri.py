"""Sans-IO reading of what a request names: its target, its authority (Host) and its path.

A forwarder and the app behind it must read a request's path the same way, or a route
can be stepped around (``/api/../secret``) and a prefix replaced into something else
(``/internal/../../secret``). So the path devtls matches routes on, and forwards, is the
normalized one: percent-encoded unreserved characters decoded (RFC 3986 6.2.2.2), hex
digits upper-cased (6.2.2.1), dot segments removed (5.2.4), and runs of ``/`` merged into
one, as nginx's ``merge_slashes on`` does. A path that climbs above the root, or hides a
dot segment behind an encoded or literal separator (``..%2f``, ``..\\``), is refused:
some apps decode those before resolving dots, and nginx refuses them too.
"""

from __future__ import annotations

import ipaddress
import re

from devtls.errors import ProtocolError

# RFC 3986 2.3.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(rb"%(..)?", re.DOTALL)
_HEX2 = re.compile(rb"[0-9A-Fa-f]{2}")
# Anything that may need rewriting; most paths have none of it and are taken as they are.
_NEEDS_WORK = re.compile(rb"%|/\.|//|\\")
# A separator some apps see inside one segment, decoded or not.
_HIDDEN_SEPARATOR = re.compile(rb"%2[Ff]|%5[Cc]|\\")
# reg-name (RFC 3986 3.2.2) without percent-encoding: every client sends A-labels.
_REG_NAME = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=]+")
_PORT = re.compile(rb"[0-9]{1,5}")
# The Host nearly every request carries (a name, a port up to 65535), checked in one match.
_COMMON_AUTHORITY = re.compile(
    rb"[A-Za-z0-9\-._~!$&'()*+,;=]+(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}"
    rb"|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
)
# absolute-form (RFC 9112 3.2.2): the scheme is case-insensitive, the authority ends at the
# first "/", "?" or "#".
_ABSOLUTE_FORM = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)(.*)", re.DOTALL)
# RFC 1035's 255 octets for a name, plus a port.
MAX_AUTHORITY = 255 + 6


def parse_target(
    method: bytes, target: bytes, host: bytes | None, http11: bool
) -> tuple[bytes, bytes, bytes]:
    """A request's (host, origin-form target, normalized path) from its target and Host.

    ``host`` is the Host field (None when absent). Raises ProtocolError with the status to
    answer for anything a second parser could read another way.
    """
    if host is not None and not valid_authority(host):
        raise ProtocolError("malformed Host header", 400)
    if method == b"CONNECT":
        raise ProtocolError("CONNECT is not supported: this is not a forward proxy", 405)
    if target[:1] == b"/" or (target == b"*" and method == b"OPTIONS"):
        pass
    elif match := _ABSOLUTE_FORM.fullmatch(target):
        # A proxy MUST take the target's authority over Host (RFC 9112 3.2.2); both are
        # checked, and only the authority goes on.
        authority, rest = match.groups()
        if b"@" in authority:
            raise ProtocolError("a user name in the request target", 400)
        if not authority or not valid_authority(authority):
            raise ProtocolError("absolute URL without a valid host", 400)
        if host is None and http11:
            raise ProtocolError("HTTP/1.1 request without Host", 400)
        host = authority
        target = rest if rest[:1] == b"/" else b"/" + rest
    else:
        raise ProtocolError("malformed request target", 400)
    if b"#" in target:
        raise ProtocolError("a fragment in the request target", 400)
    if target == b"*":
        path = target
    else:
        raw_path, question, query = target.partition(b"?")
        path = normalize_path(raw_path)
        if path is not raw_path:
            target = path + question + query
    if host is None:
        if http11:
            raise ProtocolError("HTTP/1.1 request without Host", 400)
        host = b""
    return _same_name(host), target, path


def _same_name(authority: bytes) -> bytes:
    """Lower case, and one final dot dropped (``App.Test.:8443`` is ``app.test:8443``): the
    same name to DNS (RFC 4343, RFC 1034 3.1), as it is to the SNI check and to nginx."""
    authority = authority.lower()
    if (authority[-1:] != b"." and b".:" not in authority) or authority[:1] == b"[":
        return authority
    name, colon, port = authority.partition(b":")
    if name.endswith(b".") and len(name) > 1:
        return name[:-1] + colon + port
    return authority


def valid_authority(authority: bytes) -> bool:
    """``host[:port]`` as Host carries it: a reg-name, IPv4 or bracketed IPv6, port <= 65535.

    The empty string is valid (RFC 9112 3.2: a target without authority sends an empty Host).
    """
    if not authority:
        return True
    if len(authority) > MAX_AUTHORITY:
        return False
    if _COMMON_AUTHORITY.fullmatch(authority):
        return True
    if authority[:1] == b"[":
        end = authority.find(b"]")
        if end < 0:
            return False
        try:
            address = ipaddress.IPv6Address(authority[1:end].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return False
        if address.scope_id is not None:
            return False
        rest = authority[end + 1 :]
        return not rest or (rest[:1] == b":" and _valid_port(rest[1:]))
    host, colon, port = authority.partition(b":")
    if colon and not _valid_port(port):
        return False
    return bool(_REG_NAME.fullmatch(host))


def _valid_port(port: bytes) -> bool:
    # RFC 3986 allows an empty port ("host:"); it means the scheme's default.
    return not port or (bool(_PORT.fullmatch(port)) and int(port) <= 65535)


def normalize_path(path: bytes) -> bytes:
    """The path (starting with ``/``, no query) devtls routes on and forwards.

    Raises ProtocolError (400) for a bad percent-encoding, a path above the root, or a dot
    segment hidden behind an encoded or literal separator.
    """
    if not _NEEDS_WORK.search(path):
        return path
    if b"%" in path:
        path = _PERCENT.sub(_normalize_escape, path)
    output: list[bytes] = []
    segments = path.split(b"/")[1:]
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == b"..":
            if not output:
                raise ProtocolError("the request path climbs above the root", 400)
            output.pop()
            if index == last:
                output.append(b"")
        elif segment == b"." or not segment:
            if index == last:  # "/a/." and "/a//" still name a folder
                output.append(b"")
        else:
            if _HIDDEN_SEPARATOR.search(segment) and _has_hidden_dot_segment(segment):
                raise ProtocolError("a dot segment behind an encoded separator in the path", 400)
            output.append(segment)
    return b"/" + b"/".join(output)


def _normalize_escape(match: re.Match[bytes]) -> bytes:
    digits = match.group(1)
    if digits is None or not _HEX2.fullmatch(digits):
        raise ProtocolError("malformed percent-encoding in the request path", 400)
    byte = int(digits, 16)
    return bytes((byte,)) if byte in _UNRESERVED else b"%" + digits.upper()


def _has_hidden_dot_segment(segment: bytes) -> bool:
    pieces = re.split(rb"%2[Ff]|%5[Cc]|\\", segment)
    return any(piece in (b".", b"..") for piece in pieces)
