from __future__ import annotations

import contextlib
import ssl

from hypothesis import given, settings
from hypothesis import strategies as st

from devtls.errors import ProtocolError
from devtls.proxy.clienthello import ClientHello, parse_client_hello


def real_hello(server_name: str | None, alpn: list[str] | None) -> bytes:
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
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
