"""Paths and authorities from the wire: normalized the one way an app reads them, or refused."""

from __future__ import annotations

import contextlib
import posixpath
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtls.errors import ProtocolError
from devtls.proxy.uri import normalize_path, parse_target, valid_authority


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        (b"/", b"/"),
        (b"/a/b", b"/a/b"),
        (b"/a/./b", b"/a/b"),
        (b"/a/b/../c", b"/a/c"),
        (b"/a/b/..", b"/a/"),
        (b"/a/.", b"/a/"),
        (b"/a/", b"/a/"),
        (b"//a///b//", b"/a/b/"),
        (b"/api/../secret", b"/secret"),
        (b"/%7Euser/%61", b"/~user/a"),
        (b"/a%2fb", b"/a%2Fb"),
        (b"/api/%2e%2e/secret", b"/secret"),
        (b"/api/%2E/x", b"/api/x"),
        (b"/caf%c3%a9", b"/caf%C3%A9"),
        (b"/a..b/c.", b"/a..b/c."),
        (b"/group%2Fproject/x", b"/group%2Fproject/x"),
    ],
)
def test_normalized(raw: bytes, normalized: bytes) -> None:
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        b"/..",
        b"/../secret",
        b"/api/../../secret",
        b"/a/%2e%2e/%2e%2e/x",
        b"/api/..%2f..%2fsecret",
        b"/api/..%5Csecret",
        b"/api/..\\..\\secret",
        b"/api/.%2fx",
        b"/bad%zz",
        b"/bad%4",
        b"/bad%",
    ],
)
def test_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        normalize_path(raw)
    assert info.value.status_hint == 400


PATH_PIECES = st.lists(
    st.sampled_from(
        [b"a", b"b", b".", b"..", b"", b"%2e", b"%2E%2e", b"%41", b"%2f", b"%5c", b"\\", b"%", b"~"]
    ),
    max_size=10,
)


@given(PATH_PIECES)
@settings(max_examples=500, deadline=None)
def test_parses_or_refuses_and_never_climbs(pieces: list[bytes]) -> None:
    raw = b"/" + b"/".join(pieces)
    try:
        path = normalize_path(raw)
    except ProtocolError as exc:
        assert exc.status_hint == 400
        return
    assert path.startswith(b"/")
    # Idempotent: the app normalizing again sees the same path.
    assert normalize_path(path) == path
    # No dot segment is left, even after the app decodes every escape (encoded / included).
    decoded = unquote_to_bytes(path).replace(b"\\", b"/")
    assert b"/../" not in decoded + b"/"
    assert b"/./" not in decoded + b"/"
    # Without encoded separators, it is what a file-system resolution of the request gives.
    if b"%2f" not in raw.lower() and b"%5c" not in raw.lower() and b"\\" not in raw:
        resolved = posixpath.normpath(unquote_to_bytes(raw))
        assert resolved.lstrip(b"/") == posixpath.normpath(decoded).lstrip(b"/")


@given(st.binary(max_size=40))
@settings(max_examples=500, deadline=None)
def test_any_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        normalize_path(b"/" + data)


@pytest.mark.parametrize(
    "authority",
    [b"", b"localhost", b"app.test:8443", b"127.0.0.1", b"[::1]", b"[::1]:8443", b"a-b.c_d", b"x:"],
)
def test_valid_authorities(authority: bytes) -> None:
    assert valid_authority(authority)


@pytest.mark.parametrize(
    "authority",
    [
        b"a b",
        b"a\r\nX: y",
        b"a:99999",
        b"a:-1",
        b"a:80:80",
        b"[::1",
        b"[nope]",
        b"[fe80::1%25eth0]",
        b"a/b",
        b'a"b',
        b"a@b",
        b"a%41",
        b":80",
        b"x" * 300,
    ],
)
def test_invalid_authorities(authority: bytes) -> None:
    assert not valid_authority(authority)


@pytest.mark.parametrize(
    ("host", "seen"),
    [
        (b"App.Test", b"app.test"),
        (b"app.test.", b"app.test"),
        (b"APP.test.:8443", b"app.test:8443"),
        (b"[::1]:8443", b"[::1]:8443"),
        (b"localhost", b"localhost"),
    ],
)
def test_host_names_are_compared_as_dns_does(host: bytes, seen: bytes) -> None:
    assert parse_target(b"GET", b"/", host, True)[0] == seen


def reference_authority(authority: bytes) -> bool:
    """RFC 3986 host[:port] as devtls reads Host, written the slow way."""
    if authority.startswith(b"["):
        return valid_authority(authority)  # IPv6 literals have one path only
    host, colon, port = authority.partition(b":")
    if colon and port and not (port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        return False
    allowed = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=")
    return not authority or (bool(host) and all(c in allowed for c in host))


@given(st.binary(max_size=12) | st.from_regex(rb"\A[a-z0-9.]{1,6}:[0-9]{1,6}\Z"))
@settings(max_examples=1000, deadline=None)
def test_the_common_host_fast_path_agrees_with_the_rule(authority: bytes) -> None:
    assert valid_authority(authority) == reference_authority(authority)
