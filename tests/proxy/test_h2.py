"""devtls serve over HTTP/2 with real clients: curl, nghttp, h2load, httpx, Chromium, and the h2
library as a client that shows every frame (informational heads, trailers, windows, GOAWAY).

The upstreams stay HTTP/1.1: the harness's aiohttp app and websockets echo, and raw upstreams
that answer bytes chosen here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import h11
import hpack
import httpx
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)
from websockets.sync.client import ClientConnection, connect

from devtls.proxy.h2 import H2Connection
from devtls.proxy.h2stream import H2Stream
from devtls.proxy.server import RunningServer, shutdown
from tests.conftest import require_tool, wait_for
from tests.proxy.conftest import Harness, pattern_bytes
from tests.proxy.h2client import tls_socket
from tests.proxy.rawupstream import Seen, raw_upstream

MiB = 1024 * 1024

# -- clients -----------------------------------------------------------------------------------


def curl(
    h: Harness, url: str, *args: str, body: bytes | None = None, out: Path | None = None
) -> tuple[str, str, bytes, str]:
    """curl's HTTP version and status, its body and its -v lines (stdin is ``body``)."""
    binary = require_tool("curl")
    target = out or Path(os.devnull)
    result = subprocess.run(
        [binary, "-sS", "-v", "--cacert", str(h.ca_file), "-o", str(target),
         "-w", "%{http_version} %{http_code}", *args, url],
        input=body if body is not None else b"", capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    version, status = result.stdout.decode().split()
    data = out.read_bytes() if out is not None else b""
    return version, status, data, result.stderr.decode(errors="replace")


class EventClient:
    """A blocking HTTP/2 client over the h2 library: every event is there to look at.

    (``h2client.H2Client`` is the one that writes frames by hand, for hostile cases.)
    """

    def __init__(
        self,
        h: Harness,
        port: int,
        *,
        settings: dict[int, int] | None = None,
        auto_ack: bool = True,
    ) -> None:
        self.sock = tls_socket(port, h.ca_file)
        self.authority = f"localhost:{port}".encode()
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        if settings:
            self.h2.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.h2.initiate_connection()
        self.flush()
        self.auto_ack = auto_ack
        self.pending: list[h2.events.Event] = []
        self.closed = False

    def __enter__(self) -> EventClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def read(self, timeout: float) -> None:
        """One read from the socket; its events are added to ``pending``."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:  # the same class from 3.10 on
            return
        except (ssl.SSLError, ConnectionError):
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.h2.receive_data(data):
            if self.auto_ack and isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id or 0
                )
            self.pending.append(event)
        self.flush()

    def until(
        self, predicate: Callable[[h2.events.Event], bool], timeout: float = 5
    ) -> list[h2.events.Event]:
        """The events up to the first that ``predicate`` accepts (it included)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.pending):
                if predicate(event):
                    taken, self.pending = self.pending[: i + 1], self.pending[i + 1 :]
                    return taken
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"no such event within {timeout} s: {self.pending}")
            self.read(left)

    def request(
        self,
        method: bytes,
        path: bytes,
        extra: list[tuple[bytes, bytes]] | None = None,
        *,
        end: bool = True,
    ) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        headers = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", self.authority),
            (b":path", path),
            *(extra or []),
        ]
        self.h2.send_headers(stream_id, headers, end_stream=end)
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """``data`` in DATA frames as the windows allow, reading WINDOW_UPDATEs meanwhile."""
        deadline = time.monotonic() + 10
        offset = 0
        while offset < len(data):
            window = self.h2.local_flow_control_window(stream_id)
            size = min(window, self.h2.max_outbound_frame_size, len(data) - offset)
            if size > 0:
                self.h2.send_data(stream_id, data[offset : offset + size])
                offset += size
                continue
            self.flush()
            assert time.monotonic() < deadline, "the window stayed shut"
            assert not self.closed
            self.read(deadline - time.monotonic())
        if end:
            self.h2.end_stream(stream_id)
        self.flush()

    def response(self, stream_id: int, timeout: float = 5) -> Response:
        """Everything the stream got until it ended (or was reset)."""
        response = Response()

        def done(event: h2.events.Event) -> bool:
            if getattr(event, "stream_id", None) != stream_id:
                return False
            return isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)

        for event in self.until(done, timeout):
            if getattr(event, "stream_id", None) != stream_id:
                continue
            response.events.append(event)
            if isinstance(event, h2.events.InformationalResponseReceived):
                response.informational.append(list(event.headers or []))
            elif isinstance(event, h2.events.ResponseReceived):
                response.headers = list(event.headers or [])
            elif isinstance(event, h2.events.DataReceived):
                response.body += event.data or b""
            elif isinstance(event, h2.events.TrailersReceived):
                response.trailers = list(event.headers or [])
            elif isinstance(event, h2.events.StreamReset):
                response.reset = ErrorCodes(event.error_code)
        return response


class Response:
    def __init__(self) -> None:
        self.events: list[h2.events.Event] = []
        self.informational: list[list[tuple[bytes, bytes]]] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.reset: ErrorCodes | None = None

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def field(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]


def connection_count(h: Harness, proxy: RunningServer) -> int:
    async def count() -> int:
        return len(proxy.state.connections)

    return h.loop.run(count())


def h2_streams(h: Harness, proxy: RunningServer) -> list[H2Stream]:
    """The streams in flight on the proxy's HTTP/2 connections (read on its loop)."""

    async def collect() -> list[H2Stream]:
        return [
            stream
            for connection in proxy.state.connections
            if isinstance(connection, H2Connection)
            for stream in connection.streams.values()
        ]

    return h.loop.run(collect())


# -- 1. curl: methods, bodies both ways, framing, devtls's own pages -----------------------------


def test_curl_get_over_h2(harness: Harness, tmp_path: Path) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    out = tmp_path / "out"
    version, status, data, _ = curl(
        harness, f"https://localhost:{proxy.port}/headers/x?q=1", "--http2", out=out
    )
    assert (version, status) == ("2", "200")
    record = json.loads(data)
    headers = {k.lower(): v for k, v in record["headers"]}
    assert record["method"] == "GET"
    assert record["path"] == "/headers/x?q=1"
    # :authority became the Host; no pseudo-field went upstream as a header.
    assert headers["host"] == f"localhost:{proxy.port}"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["user-agent"].startswith("curl/")
    assert not [name for name in headers if name.startswith(":")]


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize("size", [0, 1024, 5 * MiB])
@pytest.mark.parametrize("with_length", [True, False], ids=["length", "no-length"])
def test_curl_uploads_keep_their_digest(
    harness: Harness, tmp_path: Path, method: str, size: int, with_length: bool
) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    data = pattern_bytes(size)
    source = tmp_path / "body"
    source.write_bytes(data)
    if with_length:
        # A file: curl knows its size and sends content-length.
        how = ["--data-binary", f"@{source}"] if method == "POST" else ["-T", str(source)]
        stdin = None
    else:
        # Standard input streamed: curl cannot know the size and sends none (HTTP/2 has no
        # chunked coding; the body's end is the END_STREAM flag).
        how, stdin = ["-T", "-"], data
    version, status, out, verbose = curl(
        harness, f"https://localhost:{proxy.port}/sha256", "--http2", "-X", method, *how,
        body=stdin, out=tmp_path / "out",
    )  # fmt: skip
    assert (version, status) == ("2", "200")
    sent = [line.lower() for line in verbose.splitlines() if line.startswith("> ")]
    assert any(line.startswith(f"> {method.lower()} /sha256") for line in sent)
    assert any(line.startswith("> content-length:") for line in sent) == with_length
    assert json.loads(out) == {"sha256": hashlib.sha256(data).hexdigest(), "size": size}


@pytest.mark.parametrize("size", [0, 100 * 1024, 20 * MiB])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_curl_downloads_are_byte_exact(
    harness: Harness, tmp_path: Path, size: int, chunked: bool
) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    query = "?chunked=1" if chunked else ""
    version, status, data, verbose = curl(
        harness, f"https://localhost:{proxy.port}/bytes/{size}{query}", "--http2",
        out=tmp_path / "out",
    )  # fmt: skip
    assert (version, status) == ("2", "200")
    assert data == pattern_bytes(size)
    received = [line.lower() for line in verbose.splitlines() if line.startswith("< ")]
    # A length is passed on; a chunked body has none and no transfer-encoding either.
    assert any(line.startswith(f"< content-length: {size}") for line in received) != chunked
    assert not any(line.startswith("< transfer-encoding") for line in received)


def test_curl_head_keeps_the_length_and_has_no_body(harness: Harness, tmp_path: Path) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    version, status, data, verbose = curl(
        harness, f"https://localhost:{proxy.port}/bytes/1000", "--http2", "-I",
        out=tmp_path / "out",
    )  # fmt: skip
    assert (version, status) == ("2", "200")
    assert "content-length: 1000" in data.decode().lower()
    assert "< content-length: 1000" in verbose.lower()


def test_head_204_304_end_with_their_headers(harness: Harness) -> None:
    """Bodiless answers: END_STREAM on the HEADERS frame, not a byte of DATA after it."""
    proxy = harness.start_proxy(str(harness.upstream.port))
    with EventClient(harness, proxy.port) as client:
        cases = [(b"HEAD", b"/bytes/1000", 200), (b"GET", b"/status/204", 204),
                 (b"GET", b"/status/304", 304)]  # fmt: skip
        for method, path, expected in cases:
            response = client.response(client.request(method, path))
            assert response.status == expected
            first = response.events[0]
            assert isinstance(first, h2.events.ResponseReceived)
            assert first.stream_ended is not None, "the HEADERS frame carries END_STREAM"
            assert response.body == b""
            assert not any(isinstance(e, h2.events.DataReceived) for e in response.events)
            if method == b"HEAD":
                assert response.field(b"content-length") == [b"1000"]
        # The connection is fine after all that.
        response = client.response(client.request(b"GET", b"/"))
        assert (response.status, response.body) == (200, b"root")
    for version in ("--http2", "--http1.1"):
        for code in ("204", "304"):
            got = curl(harness, f"https://localhost:{proxy.port}/status/{code}", version)
            assert got[1] == code


def test_local_pages_are_the_same_over_h2_and_http1(harness: Harness, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    dead = harness.start_proxy(str(dead_port))
    routed = harness.start_proxy(routes=(f"alive.test={harness.upstream.port}",))
    pages = {}
    for version in ("--http2", "--http1.1"):
        got_502 = curl(harness, f"https://localhost:{dead.port}/x", version, out=tmp_path / "502")
        # No route for the host the request names.
        got_404 = curl(harness, f"https://localhost:{routed.port}/x", version,
                       "-H", "Host: other.test", out=tmp_path / "404")  # fmt: skip
        assert got_502[0] == got_404[0] == ("2" if version == "--http2" else "1.1")
        pages[version] = (got_502[1:3], got_404[1:3])
    assert pages["--http2"] == pages["--http1.1"]
    (status_502, body_502), (status_404, body_404) = pages["--http2"]
    assert status_502 == "502"
    assert f"nothing is listening on 127.0.0.1:{dead_port}".encode() in body_502
    assert status_404 == "404"
    assert b"no route for host 'other.test'" in body_404
    assert b"alive.test" in body_404


def test_slow_upstream_is_a_504_over_h2(harness: Harness, tmp_path: Path) -> None:
    # An upstream that takes the connection (the kernel's backlog does) and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        proxy = harness.start_proxy(str(silent.getsockname()[1]), limits=("upstream_timeout=1",))
        started = time.monotonic()
        version, status, data, _ = curl(
            harness, f"https://localhost:{proxy.port}/slow", "--http2", out=tmp_path / "out"
        )
    assert (version, status) == ("2", "504")
    assert b"did not answer within 1 s" in data
    assert time.monotonic() - started < 3


# -- 2. server-sent events ------------------------------------------------------------------------


def test_server_sent_events_arrive_as_sent_over_h2(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    context = ssl.create_default_context(cafile=str(harness.ca_file))
    with (
        httpx.Client(http2=True, verify=context, timeout=10) as http,
        http.stream("GET", f"https://localhost:{proxy.port}/sse") as response,
    ):
        assert response.http_version == "HTTP/2"
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.iter_lines()
        assert next(lines) == "data: first"
        # Only now may the upstream send the rest: the first event was not held back.
        harness.release_sse()
        rest = [line for line in lines if line]
    assert rest == ["data: second"]


def test_client_eof_ends_streams_that_only_wait_for_its_request(harness: Harness) -> None:
    """A stream answered while its request body still came: once the client's connection
    ends, that body cannot come any more, and the stream and connection go at once."""
    proxy = harness.start_proxy(str(harness.upstream.port))
    with EventClient(harness, proxy.port) as client:
        stream_id = client.request(b"POST", b"/headers/early", end=False)
        client.h2.send_data(stream_id, b"the start of a body")
        client.flush()
        # aiohttp answers /headers without reading the body.
        response = client.response(stream_id)
        assert response.status == 200
        assert len(h2_streams(harness, proxy)) == 1, "the rest of the request is awaited"
        client.sock.shutdown(socket.SHUT_WR)  # the client's FIN (no close_notify)
        assert wait_for(lambda: connection_count(harness, proxy) == 0, 2)


# -- 3. trailers ------------------------------------------------------------------------------


def test_response_trailers_reach_the_h2_client(harness: Harness) -> None:
    def answer(seen: Seen) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\n"
            b"Transfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n"
            b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n"
            b"content-length: 5\r\n\r\n"
        )

    with raw_upstream(answer) as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        with EventClient(harness, proxy.port) as client:
            response = client.response(client.request(b"POST", b"/svc/Method", end=True))
    assert response.status == 200
    assert response.body == b"hello"
    # The trailing HEADERS frame, END_STREAM on it; content-length is no trailer (RFC 9110
    # 6.5.1) and is dropped.
    assert response.trailers == [(b"grpc-status", b"0"), (b"grpc-message", b"fine")]
    last = response.events[-1]
    assert isinstance(last, h2.events.StreamEnded)
    trailers_event = response.events[-2]
    assert isinstance(trailers_event, h2.events.TrailersReceived)
    assert trailers_event.stream_ended is not None
    assert response.field(b"transfer-encoding") == []


def test_request_trailers_reach_the_upstream(harness: Harness) -> None:
    with raw_upstream() as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        with EventClient(harness, proxy.port) as client:
            stream_id = client.request(
                b"POST", b"/upload", [(b"te", b"trailers"), (b"trailer", b"x-digest")], end=False
            )
            client.h2.send_data(stream_id, b"part one, ")
            client.h2.send_data(stream_id, b"part two")
            client.h2.send_headers(
                stream_id, [(b"x-digest", b"abc123"), (b"content-length", b"1")], end_stream=True
            )
            client.flush()
            response = client.response(stream_id)
    assert response.status == 200
    assert response.body == b"ok /upload"
    [seen] = upstream.seen
    assert seen.body == b"part one, part two"
    # No length was given: the body went chunked, the trailers in its trailer section
    # (content-length among them dropped).
    assert seen.field(b"transfer-encoding") == [b"chunked"]
    assert seen.trailers == [(b"x-digest", b"abc123")]


# -- 4. 103 Early Hints ------------------------------------------------------------------------


def test_early_hints_come_before_the_final_answer(harness: Harness) -> None:
    def answer(seen: Seen) -> bytes:
        return (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nLink: </a.css>; rel=preload\r\n\r\npage"
        )

    with raw_upstream(answer) as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        with EventClient(harness, proxy.port) as client:
            response = client.response(client.request(b"GET", b"/"))
    kinds = [type(e).__name__ for e in response.events]
    assert kinds[:2] == ["InformationalResponseReceived", "ResponseReceived"]
    assert response.informational == [[(b":status", b"103"), (b"link", b"</a.css>; rel=preload")]]
    assert response.status == 200
    assert response.body == b"page"


# -- 5. nghttp and h2load ---------------------------------------------------------------------


def test_nghttp_sees_the_servers_settings(harness: Harness) -> None:
    nghttp = require_tool("nghttp")
    proxy = harness.start_proxy(str(harness.upstream.port))
    result = subprocess.run(
        [nghttp, "-nv", f"https://localhost:{proxy.port}/headers/nghttp"],
        # nghttp verifies against OpenSSL's default file: the devtls root, here.
        env={**os.environ, "SSL_CERT_FILE": str(harness.ca_file)},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "The negotiated protocol: h2" in out
    assert "Certificate verification failed" not in out
    # The server's SETTINGS frame, up to the next frame's line.
    start = out.index("recv SETTINGS frame")
    settings = out[start : out.index("\n[", start)]
    assert "[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]" in settings
    assert "[SETTINGS_ENABLE_CONNECT_PROTOCOL(0x08):1]" in settings  # RFC 8441
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", out)


def test_h2load_many_streams_all_2xx(harness: Harness) -> None:
    h2load = require_tool("h2load")
    proxy = harness.start_proxy(str(harness.upstream.port), quiet=True)
    result = subprocess.run(
        [h2load, "-c", "10", "-m", "10", "-n", "2000", f"https://localhost:{proxy.port}/"],
        env={**os.environ, "SSL_CERT_FILE": str(harness.ca_file)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Application protocol: h2" in out
    assert "2000 succeeded, 0 failed, 0 errored, 0 timeout" in out
    assert "status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx" in out


# -- 6. httpx ------------------------------------------------------------------------------------


@pytest.mark.parametrize("http1_only", [False, True], ids=["h2", "http1-only"])
def test_httpx_many_concurrent_requests_on_one_connection(
    harness: Harness, http1_only: bool
) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port), http1_only=http1_only)
    context = ssl.create_default_context(cafile=str(harness.ca_file))
    base = f"https://localhost:{proxy.port}"

    async def many() -> tuple[list[httpx.Response], list[httpx.Response], float, int]:
        async with httpx.AsyncClient(http2=True, verify=context, timeout=10) as http:
            first = await http.get(f"{base}/headers/first")
            started = time.monotonic()
            # 50 at once: 25 that the upstream takes half a second over, 25 that it answers
            # at once, each with its own path.
            slow = [http.get(f"{base}/slow?s=0.5") for _ in range(25)]
            quick = [http.get(f"{base}/headers/{i}") for i in range(25)]
            responses = await asyncio.gather(*slow, *quick)
            elapsed = time.monotonic() - started
            return (
                [first, *responses[:25]],
                list(responses[25:]),
                elapsed,
                connection_count(harness, proxy),
            )

    slow, quick, elapsed, connections = asyncio.run(many())
    expected = "HTTP/1.1" if http1_only else "HTTP/2"
    assert {r.http_version for r in slow + quick} == {expected}
    assert [r.status_code for r in slow + quick] == [200] * 51
    assert [r.text for r in slow[1:]] == ["slow"] * 25
    assert [r.json()["path"] for r in quick] == [f"/headers/{i}" for i in range(25)]
    # The slow ones ran side by side: one after the other they would take 12.5 s.
    assert elapsed < 3
    if http1_only:
        assert connections > 1, "HTTP/1.1 runs one request at a time per connection"
    else:
        assert connections == 1, "all 51 streams on one connection"


# -- 7. WebSockets over HTTP/2 (RFC 8441) -------------------------------------------------------


def ws_frame(opcode: int, payload: bytes, *, mask: bytes = b"\x11\x22\x33\x44") -> bytes:
    """One final, masked client frame (RFC 6455 5.2)."""
    if len(payload) < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload))
    elif len(payload) < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, len(payload))
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, len(payload))
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def ws_parse(data: bytes) -> tuple[int, bytes, bytes] | None:
    """The first unmasked server frame in ``data``: (opcode, payload, the rest), or None."""
    if len(data) < 2:
        return None
    opcode, length = data[0] & 0x0F, data[1] & 0x7F
    assert not data[1] & 0x80, "a server's frames are not masked"
    offset = 2
    if length == 126:
        (length,) = struct.unpack("!H", data[2:4])
        offset = 4
    elif length == 127:
        (length,) = struct.unpack("!Q", data[2:10])
        offset = 10
    if len(data) < offset + length:
        return None
    return opcode, data[offset : offset + length], data[offset + length :]


def extended_connect(client: EventClient, path: bytes = b"/") -> int:
    # RFC 8441 3: the client waits for SETTINGS_ENABLE_CONNECT_PROTOCOL before using it.
    client.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    assert client.h2.remote_settings.enable_connect_protocol == 1
    stream_id = client.h2.get_next_available_stream_id()
    client.h2.send_headers(
        stream_id,
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"https"),
            (b":path", path),
            (b":authority", client.authority),
            (b"sec-websocket-version", b"13"),
        ],
    )
    client.flush()
    return stream_id


def test_websocket_over_h2_echoes_and_closes(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.ws_port))
    with EventClient(harness, proxy.port) as client:
        stream_id = extended_connect(client)
        [*_, opened] = client.until(lambda e: isinstance(e, h2.events.ResponseReceived))
        headers = dict(opened.headers or [])
        assert headers[b":status"] == b"200"
        assert opened.stream_ended is None
        # The HTTP/1.1 handshake's own fields stay on the upstream side.
        assert b"sec-websocket-accept" not in headers
        assert b"upgrade" not in headers

        def echo(opcode: int, payload: bytes) -> tuple[int, bytes]:
            client.send_body(stream_id, ws_frame(opcode, payload))
            received = b""
            while (frame := ws_parse(received)) is None:
                [*_, data] = client.until(lambda e: isinstance(e, h2.events.DataReceived))
                received += data.data or b""
            assert frame[2] == b"", "one frame back"
            return frame[0], frame[1]

        [stream] = h2_streams(harness, proxy)
        upstream = stream.tunnel
        assert upstream is not None
        assert echo(0x1, b"hello over h2") == (0x1, b"hello over h2")
        big = pattern_bytes(300 * 1024)  # more than a window: WINDOW_UPDATEs both ways
        assert echo(0x2, big) == (0x2, big)
        # Close: the echo server answers the close frame and ends its TCP connection; the
        # stream ends with it.
        close = struct.pack("!H", 1000) + b"bye"
        assert echo(0x8, close) == (0x8, close)
        client.h2.end_stream(stream_id)
        client.flush()
        client.until(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == stream_id)
        # Both halves are over: so is devtls's connection to the echo server.
        assert wait_for(lambda: upstream.closed, 2)
        assert h2_streams(harness, proxy) == []
        # The connection goes on: a plain request after the tunnel is answered.
        response = client.response(client.request(b"GET", b"/"))
        assert response.status in (400, 426)  # the echo server wants a WebSocket handshake
    assert any('"GET localhost:' in line and '/" 101 ' in line for line in harness.log)


def test_websocket_over_h2_to_a_server_that_does_not_switch(harness: Harness) -> None:
    """An upstream that answers the upgrade with a plain 200 opened no WebSocket: the client
    must not take that 200 for one (in RFC 8441 a 2xx is the tunnel's success)."""

    def answer(seen: Seen) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot a ws!"

    with raw_upstream(answer) as upstream:
        proxy = harness.start_proxy(str(upstream.port))
        with EventClient(harness, proxy.port) as client:
            stream_id = extended_connect(client)
            response = client.response(stream_id, timeout=5)
            assert response.reset is None
            assert response.status == 502
            assert b"did not switch" in response.body
            # No tunnel, so nothing for the client's half to carry: the stream is reset
            # (NO_ERROR) at once instead of waiting for the client to end it.
            [*_, reset] = client.until(
                lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == stream_id, 2
            )
            assert reset.error_code == ErrorCodes.NO_ERROR
            assert h2_streams(harness, proxy) == []
    [seen] = upstream.seen
    assert seen.field(b"upgrade") == [b"websocket"]


# -- 8. Chromium ----------------------------------------------------------------------------------


class DevTools:
    """A page of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=20))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]  # type: ignore[no-any-return]

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 15) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"never true: {expression}")

    def open(self, url: str) -> None:
        self.evaluate("document.readyState")  # the page target is live
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory, session_ca_dir: Path) -> Iterator[DevTools]:
    """One headless Chromium for this module's pages, the devtls root trusted in its NSS db."""
    from tests.proxy.test_browser import CHROMIUM_FLAGS, trust_in_nss

    binary = require_tool("chromium")
    home = tmp_path_factory.mktemp("chromium-home")
    trust_in_nss(home, session_ca_dir / "rootCA.pem")
    profile = home / "profile"
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"],
        env={**os.environ, "HOME": str(home)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert process.poll() is None, "chromium exited"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as listing:
            pages = [t for t in json.load(listing) if t["type"] == "page"]
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            devtools = DevTools(ws)
            devtools.call("Page.enable")
            yield devtools
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_chromium_loads_the_demo_over_h2_and_its_websocket_echoes(
    harness: Harness, chromium: DevTools
) -> None:
    proxy = harness.start_proxy()
    url = f"https://localhost:{proxy.port}/"
    chromium.open(url)
    assert chromium.evaluate("document.querySelector('h1').textContent") == "HTTPS works"
    protocol = "performance.getEntriesByType('navigation')[0].nextHopProtocol"
    assert chromium.evaluate(protocol) == "h2"
    assert chromium.evaluate("document.getElementById('http').textContent") == "HTTP/2"
    log = chromium.wait_for(
        "document.getElementById('log').textContent.includes('echo: hello from the demo page')"
        " && document.getElementById('log').textContent"
    )
    assert "echo: hello from the demo page" in log
    # The WebSocket is still open, and it is an RFC 8441 stream of the page's h2 connection.
    tunnels = [s for s in h2_streams(harness, proxy) if s.tunnel is not None]
    assert len(tunnels) == 1
    chromium.evaluate("ws.send('second message'), true")
    chromium.wait_for("document.getElementById('log').textContent.includes('echo: second message')")


def test_chromium_loads_es_modules_over_h2(harness: Harness, chromium: DevTools) -> None:
    from aiohttp import web

    modules = {
        "/": ("text/html", '<!doctype html><title>m</title><script type="module" src="/main.js">'
                           "</script><p id=out>loading</p>"),
        "/main.js": ("text/javascript", "import {a} from './a.js'; import {b} from './b.js';"
                                        "import {c} from './c.js';"
                                        "document.getElementById('out').textContent = a + b + c;"),
        "/a.js": ("text/javascript", "export const a = 'A';"),
        "/b.js": ("text/javascript", "import {c} from './c.js'; export const b = 'B';"),
        "/c.js": ("text/javascript", "export const c = 'C';"),
    }  # fmt: skip

    async def handler(request: web.Request) -> web.Response:
        content_type, text = modules[request.path]
        return web.Response(text=text, content_type=content_type)

    async def serve() -> web.AppRunner:
        app = web.Application()
        for path in modules:
            app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = harness.loop.run(serve())
    try:
        proxy = harness.start_proxy(str(runner.addresses[0][1]))
        chromium.open(f"https://localhost:{proxy.port}/")
        assert chromium.wait_for("document.getElementById('out').textContent === 'ABC'")
        entries = chromium.evaluate(
            "performance.getEntriesByType('resource')"
            ".map(e => [new URL(e.name).pathname, e.nextHopProtocol])"
            ".filter(([path]) => path.endsWith('.js'))"
        )
        assert sorted(dict(entries)) == ["/a.js", "/b.js", "/c.js", "/main.js"]
        assert {protocol for _, protocol in entries} == {"h2"}
        protocol = "performance.getEntriesByType('navigation')[0].nextHopProtocol"
        assert chromium.evaluate(protocol) == "h2"
    finally:
        harness.loop.run(runner.cleanup())


# -- 9. graceful stop -----------------------------------------------------------------------------


class RawH2:
    """HTTP/2 frame by frame, for what the h2 library will not do as a client: it takes no
    frame after a GOAWAY, and a graceful GOAWAY is followed by the streams it lets finish."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = b""
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())

    def send(self, *frames: Frame) -> None:
        self.sock.sendall(b"".join(frame.serialize() for frame in frames))

    def headers(self, stream_id: int, fields: list[tuple[bytes, bytes]]) -> HeadersFrame:
        frame = HeadersFrame(stream_id, self.encoder.encode(fields))
        frame.flags.add("END_HEADERS")
        frame.flags.add("END_STREAM")
        return frame

    def next_frame(self, timeout: float) -> Frame | None:
        """The next frame, or None when the connection closed."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
                if len(self.buffer) >= 9 + length:
                    frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
                    self.buffer = self.buffer[9 + length :]
                    if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                        ack = SettingsFrame(0)
                        ack.flags.add("ACK")
                        self.send(ack)
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no frame within {timeout} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (ssl.SSLError, ConnectionError):
                data = b""
            if not data:
                return None
            self.buffer += data

    def decode(self, frame: HeadersFrame) -> dict[bytes, bytes]:
        return dict(self.decoder.decode(frame.data, raw=True))


def test_graceful_stop_lets_the_stream_in_flight_finish(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    authority = f"localhost:{proxy.port}".encode()
    with tls_socket(proxy.port, harness.ca_file) as sock:
        raw = RawH2(sock)

        def request(stream_id: int, path: bytes) -> None:
            fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority)]
            raw.send(raw.headers(stream_id, [*fields, (b":path", path)]))

        request(1, b"/slow?s=1.5")
        assert wait_for_streams(harness, proxy, 1)
        stopping = asyncio.run_coroutine_threadsafe(shutdown(proxy), harness.loop.loop)
        asked = time.monotonic()
        while not isinstance(frame := raw.next_frame(2), GoAwayFrame):
            assert frame is not None, "closed before a GOAWAY"
        assert time.monotonic() - asked < 0.5, "the GOAWAY went out at once"
        assert frame.error_code == ErrorCodes.NO_ERROR
        assert frame.last_stream_id == 1
        # A stream the client opens after the GOAWAY is refused (the client may retry it on
        # a new connection): the one in flight goes on.
        request(3, b"/headers/late")
        events: list[tuple[str, object]] = []
        while (frame := raw.next_frame(5)) is not None:
            if isinstance(frame, RstStreamFrame):
                events.append(("reset", (frame.stream_id, frame.error_code)))
            elif isinstance(frame, HeadersFrame):
                events.append(("headers", (frame.stream_id, raw.decode(frame)[b":status"])))
            elif isinstance(frame, DataFrame) and frame.data:
                events.append(("data", (frame.stream_id, frame.data, "END_STREAM" in frame.flags)))
            elif isinstance(frame, GoAwayFrame):
                events.append(("goaway", (frame.last_stream_id, frame.error_code)))
        closed_after = time.monotonic() - asked
        assert events[0] == ("reset", (3, ErrorCodes.REFUSED_STREAM))
        assert events[1:3] == [("headers", (1, b"200")), ("data", (1, b"slow", True))]
        # Then h2's own GOAWAY, as the connection closes: the stream done, not the drain
        # timeout (10 s) over.
        assert events[3:] == [("goaway", (1, ErrorCodes.NO_ERROR))]
        assert closed_after < 3
    stopping.result(5)
    assert connection_count(harness, proxy) == 0


def wait_for_streams(h: Harness, proxy: RunningServer, count: int, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(h2_streams(h, proxy)) == count:
            return True
        time.sleep(0.02)
    return False


# -- 10. flow control end to end ---------------------------------------------------------------


def test_slow_reader_gets_a_big_download_while_devtls_buffers_little(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    size = 20 * MiB
    step = 16 * 1024
    settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: step}
    with EventClient(harness, proxy.port, settings=settings, auto_ack=False) as client:
        stream_id = client.request(b"GET", f"/bytes/{size}".encode())
        body = bytearray()
        unacked = 0
        buffered: list[int] = []
        updates = 0

        def devtls_side() -> tuple[int, int, bool]:
            """What devtls holds for the client (the stream's queue, the connection's send
            buffer), what it has read from the upstream, and whether it stopped reading."""

            async def measure() -> tuple[int, int, bool]:
                [connection] = [c for c in proxy.state.connections if isinstance(c, H2Connection)]
                [stream] = connection.streams.values()
                transport = connection.transport
                held = stream.out_size + (transport.get_write_buffer_size() if transport else 0)
                return held, stream.exchange.response_bytes, stream.upstream_paused

            held, read, paused = harness.loop.run(measure())
            buffered.append(held)
            return held, read, paused

        ended = False
        stalled = False
        while not ended:
            if not client.pending:
                client.read(10)
                assert not client.closed
            events, client.pending = client.pending, []
            for event in events:
                if isinstance(event, h2.events.DataReceived):
                    body += event.data or b""
                    unacked += event.flow_controlled_length or 0
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            if not stalled and len(body) >= step:
                # A reader that stops for a while: the window stays shut, the upstream is
                # not read, and what devtls holds stays put.
                stalled = True
                time.sleep(0.5)
                first = devtls_side()
                time.sleep(0.3)
                assert devtls_side() == first, "nothing moved while the window was shut"
                held, read, paused = first
                assert held < 256 * 1024
                assert paused, "the upstream is not read"
                assert read < 1 * MiB, "of 20 MiB, little was read from the upstream"
            if unacked >= step and not ended:
                client.h2.increment_flow_control_window(unacked, stream_id)
                client.h2.increment_flow_control_window(unacked)
                client.flush()
                unacked = 0
                updates += 1
                if updates % 100 == 0:
                    devtls_side()
        assert len(body) == size
        assert body == pattern_bytes(size)
    assert updates > 1000  # it was read in small steps
    assert len(buffered) > 10
    assert max(buffered) < 512 * 1024, buffered


def test_upload_to_a_slow_upstream_holds_back_window_updates(harness: Harness) -> None:
    size = 8 * MiB
    data = pattern_bytes(size)
    go = threading.Event()
    result: dict[str, Any] = {}

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def slow_upstream() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            go.wait(10)  # not a byte is read before the test says so
            parser = h11.Connection(h11.SERVER)
            digest = hashlib.sha256()
            received = 0
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    parser.receive_data(conn.recv(65536))
                    time.sleep(0.0005)
                elif isinstance(event, h11.Data):
                    digest.update(event.data)
                    received += len(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
            result["sha256"], result["size"] = digest.hexdigest(), received
            body = json.dumps(result).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=slow_upstream, daemon=True)
    thread.start()
    try:
        proxy = harness.start_proxy(str(listener.getsockname()[1]))
        with EventClient(harness, proxy.port) as client:
            client.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
            stream_id = client.request(
                b"PUT", b"/upload", [(b"content-length", str(size).encode())], end=False
            )
            sent = 0

            def send_what_fits() -> None:
                nonlocal sent
                while sent < size:
                    window = client.h2.local_flow_control_window(stream_id)
                    piece = min(window, client.h2.max_outbound_frame_size, size - sent)
                    if piece <= 0:
                        break
                    client.h2.send_data(stream_id, data[sent : sent + piece])
                    sent += piece
                client.flush()

            # The upstream reads nothing: once the kernel's buffers and devtls's are full the
            # client's window stays at 0.
            deadline = time.monotonic() + 5
            shut_since = None
            while time.monotonic() < deadline:
                send_what_fits()
                if client.h2.local_flow_control_window(stream_id) == 0:
                    shut_since = shut_since or time.monotonic()
                    if time.monotonic() - shut_since > 0.5:
                        break
                else:
                    shut_since = None
                client.read(0.05)
            assert shut_since is not None, "the window closed"
            assert sent < size, "before the end of the body"
            held_at = sent
            # devtls holds back the WINDOW_UPDATE for what it could not pass on: the stream
            # is paused by its upstream connection's full send buffer.
            [stream] = h2_streams(harness, proxy)
            assert stream.paused
            assert stream.unacked > 0
            # The upstream reads now, and the rest of the body goes as it does.
            go.set()
            deadline = time.monotonic() + 15
            while sent < size and time.monotonic() < deadline:
                send_what_fits()
                client.read(0.05)
            assert sent == size
            client.h2.end_stream(stream_id)
            client.flush()
            response = client.response(stream_id, timeout=15)
        assert response.status == 200
        assert json.loads(response.body) == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": size,
        }
        assert held_at < size - MiB
    finally:
        go.set()
        listener.close()
        thread.join(10)
