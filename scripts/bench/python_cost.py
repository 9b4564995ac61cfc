"""The forwarder's own Python cost, with no sockets: what optimising devtls itself can win.

Usage: python scripts/bench/python_cost.py [--requests 50000] [--connections 2000]

Per request: a client connection and a pooled upstream connection on fake transports; each
round feeds one keep-alive request and its response through them. Per HTTP/2 stream: the same
over one HTTP/2 connection, a new stream each round (the HEADERS encoded beforehand, by the h2
library as a client), with the part the h2 library costs by itself measured apart. Per connection: a TLS
handshake over memory BIOs, one request, close; once on a bare ``ssl.SSLObject`` (what OpenSSL
costs anyway) and once through devtls's TLS layer and forwarder, with a leaf from a throwaway
CA. Nothing here is a test: compare runs on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for tests/proxy/fakes.py

from devtls.ca import LocalCA
from devtls.proxy import upstream as upstream_module
from devtls.proxy.certs import CertificateSource
from devtls.proxy.h1 import H1Connection
from devtls.proxy.h2 import H2Connection
from devtls.proxy.state import ServerState
from devtls.proxy.tls import TLSServerProtocol
from devtls.proxy.upstream import UpstreamConnection
from tests.proxy.fakes import FakeTransport, client_connection, make_state, pooled_upstream

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost:8443\r\n\r\n"
H2_REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"localhost:8443"),
    (b":path", b"/"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
    (b"accept", b"*/*"),
]
H2_RESPONSE = [
    (b":status", b"200"),
    (b"server", b"nginx/1.22.1"),
    (b"date", b"Mon, 30 Nov 2026 19:00:00 GMT"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"2"),
]
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 19:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
)


def server_with_pooled_upstream() -> tuple[ServerState, UpstreamConnection]:
    state, _ = make_state()
    return state, pooled_upstream(state)


async def per_request(rounds: int) -> float:
    state, upstream = server_with_pooled_upstream()
    client, transport = client_connection(state)
    started = time.perf_counter()
    for _ in range(rounds):
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)
    elapsed = time.perf_counter() - started
    if not transport.out[-1].endswith(b"ok"):
        raise RuntimeError(f"unexpected answer: {transport.out[-3:]!r}")
    return elapsed / rounds


def h2_pair(*, validate: bool = True) -> tuple[Any, Any]:
    import h2.config
    import h2.connection

    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.initiate_connection()
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=validate,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    return client, server


def h2_requests(client: Any, rounds: int) -> list[bytes]:
    """Each round's HEADERS frame, encoded beforehand (the client's cost is not counted)."""
    frames = []
    for i in range(rounds):
        stream_id = 1 + 2 * i
        client.send_headers(stream_id, H2_REQUEST, end_stream=True)
        frames.append(client.data_to_send())
        del client.streams[stream_id]
    return frames


async def per_h2_request(rounds: int) -> float:
    state, upstream = server_with_pooled_upstream()
    client, _ = h2_pair()
    transport = FakeTransport()
    connection = H2Connection(state)
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(client.data_to_send())
    client.receive_data(transport.take())
    connection.data_received(client.data_to_send())
    frames = h2_requests(client, rounds)
    connection.h2.outbound_flow_control_window = 1 << 40  # the client's reading is not counted
    started = time.perf_counter()
    for frame in frames:
        connection.data_received(frame)
        upstream.data_received(RESPONSE)
        await asyncio.sleep(0)  # the flush runs once per turn of the loop
    elapsed = time.perf_counter() - started
    if not transport.out or connection.streams:
        raise RuntimeError("the streams were not answered")
    return elapsed / rounds


def h2_library_alone(rounds: int) -> float:
    """What the h2 library costs for the same exchange, without devtls around it."""
    client, server = h2_pair()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    server.data_to_send()
    frames = h2_requests(client, rounds)
    server.outbound_flow_control_window = 1 << 40
    started = time.perf_counter()
    for i, frame in enumerate(frames):
        server.receive_data(frame)
        stream_id = 1 + 2 * i
        server.send_headers(stream_id, H2_RESPONSE)
        server.send_data(stream_id, b"ok", end_stream=True)
        server.data_to_send()
    return (time.perf_counter() - started) / rounds


async def per_connection(
    rounds: int, context: ssl.SSLContext, *, forwarder: bool, resume: bool = False
) -> float:
    """Server-side seconds per connection (the client's own work is not counted).

    With ``resume``, every connection but the first resumes the session of the one before
    (a TLS 1.3 ticket, as ``openssl s_time -reuse`` does).
    """
    loop = asyncio.get_running_loop()
    state, upstream = server_with_pooled_upstream()
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    client_time = 0.0
    session: ssl.SSLSession | None = None
    started = time.perf_counter()
    for _ in range(rounds):
        c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tick = time.perf_counter()
        client = client_context.wrap_bio(
            c_in, c_out, server_hostname="localhost", session=session if resume else None
        )
        _step(client.do_handshake)
        hello = c_out.read()
        client_time += time.perf_counter() - tick
        if forwarder:
            transport = FakeTransport()
            protocol = TLSServerProtocol(
                loop, context, lambda _alpn: H1Connection(state), handshake_timeout=10
            )
            protocol.connection_made(transport)  # type: ignore[arg-type]
            protocol.data_received(hello)
            flight = b"".join(transport.out)
            transport.out.clear()
        else:
            s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            server = context.wrap_bio(s_in, s_out, server_side=True)
            s_in.write(hello)
            _step(server.do_handshake)
            flight = s_out.read()
        tick = time.perf_counter()
        c_in.write(flight)
        client.do_handshake()
        client.write(REQUEST)
        finished = c_out.read()
        client_time += time.perf_counter() - tick
        if forwarder:
            protocol.data_received(finished)
            upstream.data_received(RESPONSE)
            protocol.close()
            protocol.connection_lost(None)
            answer = b"".join(transport.out)
        else:
            s_in.write(finished)
            server.do_handshake()
            server.read(65536)
            server.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            _step(server.unwrap)
            answer = s_out.read()
        tick = time.perf_counter()
        c_in.write(answer)
        if not _read_all(client).endswith(b"ok"):
            raise RuntimeError("no answer over TLS")
        if resume and session is not None and not client.session_reused:
            raise RuntimeError("the session was not resumed")
        session = client.session
        client_time += time.perf_counter() - tick
    return (time.perf_counter() - started - client_time) / rounds


def _step(operation: Any) -> None:
    with contextlib.suppress(ssl.SSLWantReadError):
        operation()


def _read_all(tls: ssl.SSLObject) -> bytes:
    data = b""
    try:
        while chunk := tls.read(65536):
            data += chunk
    except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
        pass
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument(
        "--only",
        choices=["resumed", "bare-resumed"],
        help="measure only this (e.g. under valgrind --tool=callgrind, which counts instructions)",
    )
    parser.add_argument(
        "--leaf-dir",
        type=Path,
        help="keep the RSA leaf here and reuse it: a new key costs a random number of instructions",
    )
    args = parser.parse_args()
    # One pooled upstream connection serves every round: it must not age out of the pool when
    # the rounds run slowly (under valgrind, 50 times slower).
    idle_seconds = upstream_module.UPSTREAM_IDLE_SECONDS
    upstream_module.UPSTREAM_IDLE_SECONDS = float("inf")
    try:
        return measure(args)
    finally:
        upstream_module.UPSTREAM_IDLE_SECONDS = idle_seconds


def measure(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.leaf_dir or Path(tmp)
        cert, key = folder / "leaf.pem", folder / "leaf-key.pem"
        if not cert.exists():
            LocalCA.generate().issue("localhost", key_type="rsa").write_pem(cert, key)
        context = CertificateSource(names=(), ca=None, cert_file=cert, key_file=key).default_context
        if args.only is not None:
            resumed = asyncio.run(
                per_connection(
                    args.connections, context, forwarder=args.only == "resumed", resume=True
                )
            )
            print(f"per resumed TLS connection ({args.only}): {resumed * 1e6:7.1f} us")
            return 0
        request = asyncio.run(per_request(args.requests))
        h2_request = asyncio.run(per_h2_request(args.requests))
        h2_alone = h2_library_alone(args.requests)
        bare = asyncio.run(per_connection(args.connections, context, forwarder=False))
        full = asyncio.run(per_connection(args.connections, context, forwarder=True))
        bare_resumed = asyncio.run(
            per_connection(args.connections, context, forwarder=False, resume=True)
        )
        resumed = asyncio.run(
            per_connection(args.connections, context, forwarder=True, resume=True)
        )
    print(f"per keep-alive request, devtls's Python:       {request * 1e6:7.1f} us")
    print(f"per HTTP/2 stream, devtls's Python:             {h2_request * 1e6:7.1f} us")
    print(f"  of which the h2 library alone:                {h2_alone * 1e6:7.1f} us")
    print(f"per TLS connection, bare ssl.SSLObject:         {bare * 1e6:7.1f} us")
    print(f"per TLS connection, through devtls:             {full * 1e6:7.1f} us")
    print(f"  devtls's share of a connection:               {(full - bare) * 1e6:7.1f} us")
    print(f"per resumed TLS connection, bare ssl.SSLObject: {bare_resumed * 1e6:7.1f} us")
    print(f"per resumed TLS connection, through devtls:     {resumed * 1e6:7.1f} us")
    print(
        f"  devtls's share of a resumed connection:       {(resumed - bare_resumed) * 1e6:7.1f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
