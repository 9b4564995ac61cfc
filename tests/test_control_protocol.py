"""The control protocol without sockets: lines in, requests out, errors as answers."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtls import control_protocol as cp
from devtls.config import Upstream
from devtls.errors import ProtocolError


def line(**fields: object) -> bytes:
    return json.dumps({"v": cp.PROTOCOL_VERSION, **fields}).encode()


def test_each_operation_parses() -> None:
    assert cp.parse_request(line(op="list")) == cp.ListRoutes()
    assert cp.parse_request(line(op="stop")) == cp.Stop()
    assert cp.parse_request(line(op="remove", route="API.localhost/v1/")) == cp.RemoveRoute(
        "api.localhost", "/v1"
    )
    add = cp.parse_request(line(op="add", route="*.app.test", upstream="3001", hold=True))
    assert isinstance(add, cp.AddRoute)
    assert (add.route.host, add.route.path, add.hold, add.force) == ("*.app.test", "/", True, False)
    assert add.route.upstream == Upstream("http", "localhost", 3001)


def test_an_add_may_name_its_host_header_and_ask_for_the_starting_page() -> None:
    plain = cp.parse_request(line(op="add", route="a.localhost", upstream="1"))
    assert isinstance(plain, cp.AddRoute)
    assert plain.host_header is None  # the router's own setting applies
    assert (plain.route.upstream.host_header, plain.route.upstream.starting) == ("client", "")
    add = cp.parse_request(
        line(
            op="add",
            route="shop.localhost",
            upstream="127.0.0.1:4000",
            host_header="upstream",
            starting=True,
        )
    )
    assert isinstance(add, cp.AddRoute)
    assert add.host_header == "upstream"
    assert add.route.upstream == Upstream(
        "http", "127.0.0.1", 4000, host_header="upstream", starting="shop"
    )
    named = cp.parse_request(line(op="add", route="b.a.test", upstream="1", starting=True))
    assert isinstance(named, cp.AddRoute)
    assert named.route.upstream.starting == "b.a.test"


def test_the_client_lines_are_what_the_router_reads() -> None:
    sent = cp.request_line("add", route="a.localhost/x", upstream="unix:/tmp/a.sock", force=True)
    assert sent.endswith(b"\n")
    assert sent.count(b"\n") == 1
    request = cp.parse_request(sent.rstrip(b"\n"))
    assert isinstance(request, cp.AddRoute)
    assert request.force
    assert str(request.route.upstream) == "unix:/tmp/a.sock"


@pytest.mark.parametrize(
    ("message", "kind", "words"),
    [
        (b"not json", "protocol", "not JSON"),
        (b"[1, 2]", "protocol", "not a JSON object"),
        (b'{"op": "list"}', "protocol", "version None"),
        (json.dumps({"v": 2, "op": "list"}).encode(), "protocol", "version 2"),
        (json.dumps({"v": True, "op": "list"}).encode(), "protocol", "version True"),
        (line(op="explode"), "protocol", "unknown control operation"),
        (line(op="list", extra=1), "protocol", "unknown field 'extra'"),
        (line(op="add", route="a.localhost"), "protocol", "'upstream'"),
        (line(op="add", route="a.localhost", upstream=3000), "protocol", "'upstream'"),
        (line(op="add", route="a.localhost", upstream="1", hold="yes"), "protocol", "'hold'"),
        (line(op="add", route="x" * 5000, upstream="1"), "protocol", "'route'"),
        (line(op="add", route="bad host", upstream="1"), "usage", "bad host"),
        (line(op="add", route="a.localhost", upstream="ftp://x"), "usage", "scheme"),
        (line(op="add", route="a.localhost=3000", upstream="1"), "usage", "HOST[/PATH]"),
        (line(op="add", route="a.localhost/a?b", upstream="1"), "usage", "path prefix"),
        (line(op="remove", route=""), "protocol", "'route'"),
        (line(op="add", route="a.localhost", upstream="1", host_header="x"), "protocol", "'x'"),
        (line(op="add", route="a.localhost", upstream="1", host_header=None), "protocol", "None"),
        (line(op="add", route="a.localhost", upstream="1", starting=1), "protocol", "'starting'"),
        (b"\xff\xfe", "protocol", "not JSON"),
    ],
)
def test_bad_requests_are_errors_with_a_kind(message: bytes, kind: str, words: str) -> None:
    with pytest.raises(cp.ControlError) as caught:
        cp.parse_request(message)
    assert caught.value.kind == kind
    assert words in str(caught.value)
    # ... and each becomes one answer line the client turns back into the same error.
    answer = cp.error_line(caught.value)
    assert answer.count(b"\n") == 1
    with pytest.raises(cp.ControlError) as again:
        cp.parse_response(answer.rstrip(b"\n"))
    assert again.value.kind == kind
    assert again.value.exit_code == (2 if kind == "usage" else 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_control_error(data: bytes) -> None:
    with contextlib.suppress(cp.ControlError):
        cp.parse_request(data)


FIELDS = st.sampled_from(
    ["v", "op", "route", "upstream", "hold", "force", "host_header", "starting", "x"]
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(
        ["list", "add", "remove", "stop", "a.localhost/x", "3000", "*", "client", "upstream"]
    ),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(FIELDS, VALUES))
def test_any_object_parses_or_raises_control_error(message: dict[str, object]) -> None:
    message.setdefault("v", cp.PROTOCOL_VERSION)
    with contextlib.suppress(cp.ControlError):
        cp.parse_request(json.dumps(message).encode())


def test_line_reader_splits_and_bounds_lines() -> None:
    reader = cp.LineReader(limit=10)
    reader.feed(b"abc\nde")
    assert reader.next_line() == b"abc"
    assert reader.next_line() is None
    reader.feed(b"f\n")
    assert reader.next_line() == b"def"
    reader.feed(b"x" * 10 + b"\n")
    assert reader.next_line() == b"x" * 10
    reader.feed(b"y" * 11)
    with pytest.raises(ProtocolError):
        reader.next_line()


def test_answers_ok_and_malformed() -> None:
    assert cp.parse_response(cp.ok_line(pid=7).rstrip(b"\n"))["pid"] == 7
    with pytest.raises(cp.ControlError, match="neither ok nor an error"):
        cp.parse_response(line(ok="maybe"))
    with pytest.raises(cp.ControlError) as caught:
        cp.parse_response(line(ok=False, error="no", hint=3, kind="weird"))
    assert caught.value.kind == "refused"
    assert caught.value.hint is None
