from __future__ import annotations

import contextlib
import functools
import re
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtls.errors import ProtocolError
from devtls.proxy.clienthello import (
    MAX_BUFFERED,
    MAX_HELLO,
    BadServerName,
    ClientHello,
    HelloReader,
    check_server_name,
    parse_client_hello,
)


def real_hello(server_name: str | None, alpn: list[str] | None) -> bytes:
    return _real_hello(server_name, tuple(alpn or ()))


@functools.lru_cache(maxsize=32)
def _real_hello(server_name: str | None, alpn: tuple[str, ...]) -> bytes:
    # Cached: hypothesis asks for the same hellos hundreds of times.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    if server_name is None:
        context.check_hostname = False
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_reads_what_pythons_ssl_sends() -> None:
    hello = real_hello("Example.TEST", ["acme-tls/1"])
    assert parse_client_hello(hello) == ClientHello("example.test", (b"acme-tls/1",))
    assert parse_client_hello(real_hello("a.test", None)) == ClientHello("a.test", ())
    two = real_hello("a.test", ["h2", "http/1.1"])
    assert parse_client_hello(two) == ClientHello("a.test", (b"h2", b"http/1.1"))


def test_partial_input_asks_for_more() -> None:
    hello = real_hello("a.test", ["h2"])
    for cut in (0, 3, 5, 40, len(hello) - 1):
        assert parse_client_hello(hello[:cut]) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_client_hello(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255))
def test_mutated_hellos_parse_or_raise_protocol_error(position: int, value: int) -> None:
    hello = bytearray(real_hello("a.test", ["acme-tls/1"]))
    hello[position % len(hello)] = value
    with contextlib.suppress(ProtocolError):
        parse_client_hello(bytes(hello))


# -- every ClientHello is read before OpenSSL: split, bounded, strict --------------------------


def with_server_name(raw: bytes) -> bytes:
    """A real hello whose SNI bytes are replaced by ``raw`` (of any length), lengths fixed."""
    placeholder = b"p" * 40 + b".test"
    hello = bytearray(real_hello(placeholder.decode(), ["h2"]))
    at = hello.index(placeholder)
    delta = len(raw) - len(placeholder)
    hello[at : at + len(placeholder)] = raw
    # Fix the lengths that enclose the name: name, name list, extension, extensions, handshake
    # message, record (innermost first; each sits just before what it measures).
    for offset, size in ((at - 2, 2), (at - 5, 2), (at - 7, 2)):
        value = int.from_bytes(hello[offset : offset + size], "big") + delta
        hello[offset : offset + size] = value.to_bytes(size, "big")
    extensions_at = _extensions_offset(bytes(hello))
    value = int.from_bytes(hello[extensions_at : extensions_at + 2], "big") + delta
    hello[extensions_at : extensions_at + 2] = value.to_bytes(2, "big")
    message = int.from_bytes(hello[6:9], "big") + delta
    hello[6:9] = message.to_bytes(3, "big")
    record = int.from_bytes(hello[3:5], "big") + delta
    hello[3:5] = record.to_bytes(2, "big")
    return bytes(hello)


def _extensions_offset(hello: bytes) -> int:
    at = 5 + 4 + 2 + 32
    at += 1 + hello[at]  # session id
    at += 2 + int.from_bytes(hello[at : at + 2], "big")  # cipher suites
    at += 1 + hello[at]  # compression methods
    return at


def test_with_server_name_builds_what_the_parser_reads() -> None:
    assert parse_client_hello(with_server_name(b"Other.Test")) == ClientHello(
        "other.test", (b"h2",)
    )


BAD_NAMES = [
    b"a\r\nX-Injected: yes",
    b"caf\xc3\xa9.test",  # UTF-8, not an A-label
    b"\xff\xfe\xfd",
    b"a b.test",
    b"a\x00b.test",
    b"",
    b".",
    b"a..test",
    b"-a.test",
    b"a-.test",
    b"*.app.test",
    b"[::1]",
    b"1.2.3",
    b"999.1.1.1",
    b"x" * 64 + b".test",
    (b"a" * 62 + b".") * 4 + b"test",  # 256 octets
    b"xn--.test",
    b"xn--99999999999.test",  # not punycode
    b"app.test..",
]


@pytest.mark.parametrize("raw", BAD_NAMES)
def test_a_server_name_that_is_not_a_host_name_is_refused(raw: bytes) -> None:
    with pytest.raises(BadServerName) as caught:
        parse_client_hello(with_server_name(raw))
    assert caught.value.raw == raw
    # The message shows the name escaped, never raw.
    assert repr(raw[:48])[2:-1] in caught.value.message
    assert "\r" not in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"APP.Test", "app.test"),
        (b"app.test.", "app.test"),
        (b"xn--bcher-kva.test", "xn--bcher-kva.test"),
        (b"my_app.localhost", "my_app.localhost"),
        (b"a" * 63 + b".test", "a" * 63 + ".test"),
        (b"127.0.0.1", None),  # an IP literal is not allowed in SNI: ignored, as nginx does
        (b"::1", None),
        (b"localhost", "localhost"),
    ],
)
def test_host_names_are_lower_cased_and_ip_literals_ignored(
    raw: bytes, expected: str | None
) -> None:
    assert check_server_name(raw) == expected
    assert parse_client_hello(with_server_name(raw)) == ClientHello(expected, (b"h2",))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_server_name_is_a_safe_host_name_or_refused(raw: bytes) -> None:
    try:
        name = check_server_name(raw)
    except BadServerName:
        return
    if name is not None:
        assert len(name) <= 253
        assert re.fullmatch(r"[a-z0-9_.-]+", name), name


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 600), max_size=30))
def test_a_hello_split_anywhere_reads_the_same(cuts: list[int]) -> None:
    hello = real_hello("split.test", ["h2", "http/1.1"])
    reader = HelloReader()
    at = 0
    result = None
    for size in [*cuts, len(hello)]:
        piece = hello[at : at + size]
        at += len(piece)
        result = reader.feed(piece)
        if at < len(hello):
            assert result is None
        else:
            break
    assert result == ClientHello("split.test", (b"h2", b"http/1.1"))
    assert bytes(reader.buffer) == hello


def test_a_hello_one_byte_at_a_time_and_over_many_records() -> None:
    hello = real_hello("bytes.test", ["h2"])
    reader = HelloReader()
    for i in range(len(hello) - 1):
        assert reader.feed(hello[i : i + 1]) is None
    assert reader.feed(hello[-1:]) == ClientHello("bytes.test", (b"h2",))
    # The same handshake message cut into one-byte records (as TLS allows) reads the same.
    message = hello[5:]
    records = b"".join(b"\x16\x03\x01\x00\x01" + message[i : i + 1] for i in range(len(message)))
    assert parse_client_hello(records) == ClientHello("bytes.test", (b"h2",))


def test_hellos_are_bounded() -> None:
    # A handshake message announced larger than MAX_HELLO is refused at once.
    huge = b"\x16\x03\x01\x00\x04\x01" + (MAX_HELLO).to_bytes(3, "big")
    with pytest.raises(ProtocolError):
        parse_client_hello(huge)
    # Records above 2^14 bytes, empty records and non-handshake records are refused.
    for header in (b"\x16\x03\x01\x40\x01", b"\x16\x03\x01\x00\x00", b"\x17\x03\x01\x00\x01"):
        with pytest.raises(ProtocolError):
            parse_client_hello(header + b"\x01")
    # A hello announced as large as allowed, sent in one-byte records: refused once the
    # buffer (record headers included) passes MAX_BUFFERED, never held beyond it.
    reader = HelloReader()
    reader.feed(b"\x16\x03\x01\x00\x04\x01" + (MAX_HELLO - 4).to_bytes(3, "big"))
    with pytest.raises(ProtocolError, match="too large"):
        for _ in range(MAX_HELLO):
            reader.feed(b"\x16\x03\x01\x00\x01\x00")
    assert len(reader.buffer) <= MAX_BUFFERED + 6


@pytest.mark.parametrize(
    "mutation",
    ["duplicate extension", "two names", "not host_name", "empty alpn"],
)
def test_strict_where_openssl_is_strict(mutation: str) -> None:
    hello = bytearray(real_hello("strict.test", ["h2"]))
    at = _extensions_offset(bytes(hello))
    extensions = bytes(hello[at + 2 :])
    sni = (
        b"\x00\x00"
        + (16).to_bytes(2, "big")
        + (14).to_bytes(2, "big")
        + b"\x00"
        + (11).to_bytes(2, "big")
        + b"strict.test"
    )
    if mutation == "duplicate extension":
        extra = sni
    elif mutation == "two names":
        names = b"\x00\x00\x01a" + b"\x00\x00\x01b"
        extra = b"\x00\x00" + (len(names) + 2).to_bytes(2, "big") + len(names).to_bytes(2, "big")
        extra += names
    elif mutation == "not host_name":
        extra = b"\x00\x00\x00\x06\x00\x04\x01\x00\x01a"
    else:
        extra = b"\x00\x10\x00\x05\x00\x03\x00\x01h"
    if mutation != "duplicate extension":
        # Replace the real SNI / ALPN extension by the mutated one.
        kind = 16 if mutation == "empty alpn" else 0
        extensions = _without_extension(extensions, kind)
    new_extensions = extensions + extra
    body = bytes(hello[9:at]) + len(new_extensions).to_bytes(2, "big") + new_extensions
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    record = b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message
    with pytest.raises(ProtocolError):
        parse_client_hello(record)


def _without_extension(extensions: bytes, kind: int) -> bytes:
    out = b""
    at = 0
    while at < len(extensions):
        size = int.from_bytes(extensions[at + 2 : at + 4], "big")
        if int.from_bytes(extensions[at : at + 2], "big") != kind:
            out += extensions[at : at + 4 + size]
        at += 4 + size
    return out


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_any_server_name_bytes_in_a_real_hello_parse_or_raise(raw: bytes) -> None:
    try:
        hello = parse_client_hello(with_server_name(raw))
    except ProtocolError:
        return
    assert hello is not None
    assert hello.server_name is None or re.fullmatch(r"[a-z0-9_.-]+", hello.server_name)
