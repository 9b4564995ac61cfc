"""devtls serve with real clients (curl, httpx, websockets) and real upstreams."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import ssl
from pathlib import Path

import httpx
import pytest
import websockets
from aiohttp import web

from tests.conftest import require_tool, run
from tests.proxy.conftest import Harness, pattern_bytes


def text_handler(text: str):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text)

    return handler


async def start_text_app(
    *, text: str, ssl_context: ssl.SSLContext | None = None, unix_path: Path | None = None
) -> web.AppRunner:
    """An aiohttp app answering ``text`` on /, over TLS, plain TCP or a unix socket."""
    app = web.Application()
    app.router.add_get("/", text_handler(text))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if unix_path is not None:
        await web.UnixSite(runner, str(unix_path)).start()
    else:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    return runner


def curl(h: Harness, url: str, *args: str) -> str:
    binary = require_tool("curl")
    return run(binary, "-sS", "--fail-with-body", "--cacert", h.ca_file, *args, url).stdout


def client(h: Harness) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(h.ca_file)), timeout=30)


def test_curl_gets_the_upstream_with_forwarded_headers(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    out = curl(
        harness, f"https://localhost:{proxy.port}/headers/x?q=1", "-H", "X-Forwarded-For: 10.9.8.7"
    )
    record = json.loads(out)
    headers = {k.lower(): v for k, v in record["headers"]}
    assert record["path"] == "/headers/x?q=1"
    assert headers["host"] == f"localhost:{proxy.port}"
    assert headers["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == f"localhost:{proxy.port}"
    assert headers["x-forwarded-port"] == str(proxy.port)
    assert headers["forwarded"] == f'for=127.0.0.1;host="localhost:{proxy.port}";proto=https'


def test_hop_by_hop_headers_are_not_forwarded(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    out = curl(
        harness,
        f"https://127.0.0.1:{proxy.port}/headers",
        "--http1.1",  # HTTP/2 has no Connection field (test_h2 has its own rules)
        "-H", "Connection: keep-alive, X-Secret-Hop",
        "-H", "X-Secret-Hop: 1",
        "-H", "Keep-Alive: timeout=5",
        "-H", "TE: trailers",
        "-H", "Proxy-Connection: keep-alive",
        "-H", "X-Kept: yes",
    )  # fmt: skip
    names = {k.lower() for k, _ in json.loads(out)["headers"]}
    assert "x-kept" in names
    for hop in ("x-secret-hop", "keep-alive", "te", "proxy-connection"):
        assert hop not in names


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, 50 * 1024 * 1024])
def test_bodies_both_ways_keep_their_checksums(harness: Harness, size: int) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    data = pattern_bytes(size)
    with client(harness) as http:
        up = http.post(f"https://localhost:{proxy.port}/sha256", content=data)
        assert up.status_code == 200
        assert up.json() == {"sha256": hashlib.sha256(data).hexdigest(), "size": size}
        down = http.get(f"https://localhost:{proxy.port}/bytes/{size}")
        assert down.status_code == 200
        assert hashlib.sha256(down.content).digest() == hashlib.sha256(data).digest()
        assert down.headers["content-length"] == str(size)


def test_chunked_both_ways(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    data = pattern_bytes(3 * 1024 * 1024 + 7)

    def pieces():
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    with client(harness) as http:
        up = http.post(f"https://localhost:{proxy.port}/sha256", content=pieces())
        assert up.json()["sha256"] == hashlib.sha256(data).hexdigest()
        down = http.get(f"https://localhost:{proxy.port}/bytes/{len(data)}?chunked=1")
        assert down.headers["transfer-encoding"] == "chunked"
        assert down.content == data


@pytest.mark.parametrize(
    ("protocol", "continue_line"),
    [("--http1.1", "HTTP/1.1 100 Continue"), ("--http2", "HTTP/2 100")],
)
def test_expect_100_continue(
    harness: Harness, tmp_path: Path, protocol: str, continue_line: str
) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    body = tmp_path / "body"
    body.write_bytes(pattern_bytes(2 * 1024 * 1024))
    binary = require_tool("curl")
    result = run(
        binary, "-sS", "-v", protocol, "--cacert", harness.ca_file, "--expect100-timeout", "60",
        "-H", "Expect: 100-continue", "--data-binary", f"@{body}",
        f"https://localhost:{proxy.port}/sha256",
    )  # fmt: skip
    assert f"< {continue_line}" in result.stderr
    assert json.loads(result.stdout)["sha256"] == hashlib.sha256(body.read_bytes()).hexdigest()


def test_head_204_304_framing_and_keep_alive(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    base = f"https://localhost:{proxy.port}"
    with client(harness) as http:
        head = http.head(f"{base}/bytes/1000")
        assert head.status_code == 200
        assert head.headers["content-length"] == "1000"
        assert head.content == b""
        assert http.get(f"{base}/status/204").status_code == 204
        assert http.get(f"{base}/status/304").status_code == 304
        # The connection survived all of that: the next answer is right.
        assert http.get(f"{base}/").text == "root"


def test_many_requests_on_one_connection(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    with socket.create_connection(("127.0.0.1", proxy.port)) as raw:
        context = ssl.create_default_context(cafile=str(harness.ca_file))
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            for i in range(200):
                tls.sendall(f"GET /headers/{i} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                response = read_response(tls)
                assert f"/headers/{i}".encode() in response


def test_pipelined_requests_are_answered_in_order(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    with socket.create_connection(("127.0.0.1", proxy.port)) as raw:
        context = ssl.create_default_context(cafile=str(harness.ca_file))
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"".join(
                f"GET /headers/{i} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode() for i in range(20)
            ))  # fmt: skip
            for i in range(20):
                assert f'"/headers/{i}"'.encode() in read_response(tls)


@pytest.mark.parametrize("sni", ["localhost", None])
def test_http10_request_without_host_gets_one_upstream(harness: Harness, sni: str | None) -> None:
    # HTTP/1.1 upstreams (nginx, for one) answer a request without Host with 400.
    proxy = harness.start_proxy(str(harness.upstream.port))
    context = ssl.create_default_context(cafile=str(harness.ca_file))
    context.check_hostname = sni is not None
    raw = socket.create_connection(("127.0.0.1", proxy.port))
    with context.wrap_socket(raw, server_hostname=sni) as tls:
        tls.sendall(b"GET /headers/old HTTP/1.0\r\n\r\n")
        record = json.loads(read_response(tls).partition(b"\r\n\r\n")[2])
    hosts = [v for k, v in record["headers"] if k.lower() == "host"]
    assert hosts == [sni or f"localhost:{harness.upstream.port}"]


def read_response(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(
        line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    ))  # fmt: skip
    while len(body) < length:
        body += tls.recv(65536)
    return head + b"\r\n\r\n" + body


def test_server_sent_events_arrive_before_the_upstream_finishes(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    with (
        client(harness) as http,
        http.stream("GET", f"https://localhost:{proxy.port}/sse") as response,
    ):
        lines = response.iter_lines()
        assert next(lines) == "data: first"
        # Only now may the upstream send the rest: the first event was not held back.
        harness.release_sse()
        rest = [line for line in lines if line]
    assert rest == ["data: second"]


def test_websocket_text_binary_and_close_codes(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.ws_port))
    context = ssl.create_default_context(cafile=str(harness.ca_file))

    async def talk() -> tuple[str, bytes, int | None]:
        async with websockets.connect(
            f"wss://localhost:{proxy.port}/", ssl=context, max_size=None
        ) as ws:
            await ws.send("hello")
            text = await ws.recv()
            big = pattern_bytes(1024 * 1024)
            await ws.send(big)
            binary = await ws.recv()
            await ws.close(code=4001, reason="bye")
            return str(text), bytes(binary), ws.close_code

    text, binary, code = asyncio.run(talk())
    assert text == "hello"
    assert binary == pattern_bytes(1024 * 1024)
    assert code == 4001


def test_long_lived_websocket_like_hmr(harness: Harness) -> None:
    """Vite/webpack keep one socket open for the whole session and get pushed messages."""
    proxy = harness.start_proxy(
        str(harness.upstream.ws_port), limits=("idle_timeout=1", "upstream_timeout=1")
    )
    context = ssl.create_default_context(cafile=str(harness.ca_file))

    async def talk() -> list[str]:
        async with websockets.connect(f"wss://localhost:{proxy.port}/", ssl=context) as ws:
            received = []
            for i in range(3):
                await asyncio.sleep(1.2)  # longer than both timeouts: tunnels do not time out
                await ws.send(f"update {i}")
                received.append(str(await ws.recv()))
            return received

    assert asyncio.run(talk()) == ["update 0", "update 1", "update 2"]


def test_routes_by_host_and_path(harness: Harness, tmp_path: Path) -> None:
    app_port = harness.upstream.port
    proxy = harness.start_proxy(
        routes=(
            f"api.test/headers/v2=http://127.0.0.1:{app_port}/headers/rewritten",
            f"api.test={app_port}",
            f"*.apps.test={app_port}",
        ),
    )
    base = [
        "--resolve",
        f"api.test:{proxy.port}:127.0.0.1",
        "--resolve",
        f"one.apps.test:{proxy.port}:127.0.0.1",
    ]
    out = json.loads(curl(harness, f"https://api.test:{proxy.port}/headers/v2/x", *base))
    assert out["path"] == "/headers/rewritten/x"
    out = json.loads(curl(harness, f"https://api.test:{proxy.port}/headers/v1", *base))
    assert out["path"] == "/headers/v1"
    out = json.loads(curl(harness, f"https://one.apps.test:{proxy.port}/headers/w", *base))
    assert out["path"] == "/headers/w"
    binary = require_tool("curl")
    miss = run(binary, "-sS", "--cacert", harness.ca_file, "-H", "Host: other.test",
               f"https://localhost:{proxy.port}/", "-w", "%{http_code}")  # fmt: skip
    assert miss.stdout.endswith("404")
    assert "api.test" in miss.stdout
    assert "no route for host" in miss.stdout


def test_certificate_minted_on_demand_for_a_catch_all(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    out = curl(harness, f"https://fresh.example.test:{proxy.port}/",
               "--resolve", f"fresh.example.test:{proxy.port}:127.0.0.1")  # fmt: skip
    assert out == "root"


def test_unix_socket_upstream(harness: Harness, tmp_path: Path) -> None:
    socket_path = tmp_path / "app.sock"
    runner = harness.loop.run(start_text_app(text="over unix", unix_path=socket_path))
    try:
        proxy = harness.start_proxy(f"unix:{socket_path}")
        assert curl(harness, f"https://localhost:{proxy.port}/") == "over unix"
    finally:
        harness.loop.run(runner.cleanup())


def test_https_upstream_verified_against_the_devtls_root(harness: Harness, local_ca) -> None:
    leaf = local_ca.issue("localhost", key_type="ecdsa")
    runner = harness.loop.run(start_text_app(text="tls", ssl_context=leaf.server_context()))
    try:
        port = runner.addresses[0][1]
        proxy = harness.start_proxy(f"https://localhost:{port}")
        assert curl(harness, f"https://localhost:{proxy.port}/") == "tls"
    finally:
        harness.loop.run(runner.cleanup())


def test_untrusted_https_upstream_is_a_clear_502(harness: Harness, devtls_cert) -> None:
    # The plugin's CA is not the one the forwarder trusts.
    stranger = devtls_cert("localhost")
    runner = harness.loop.run(start_text_app(text="nope", ssl_context=stranger.server_context()))
    try:
        proxy = harness.start_proxy(f"https://localhost:{runner.addresses[0][1]}")
        binary = require_tool("curl")
        out = run(binary, "-sS", "--cacert", harness.ca_file, f"https://localhost:{proxy.port}/",
                  "-w", "%{http_code}").stdout  # fmt: skip
        assert out.endswith("502")
        assert "not trusted" in out
    finally:
        harness.loop.run(runner.cleanup())


def test_upstream_down_is_a_502_and_serving_goes_on(harness: Harness) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    proxy = harness.start_proxy(str(dead_port), routes=(f"alive.test={harness.upstream.port}",))
    binary = require_tool("curl")
    out = run(binary, "-sS", "--cacert", harness.ca_file, f"https://localhost:{proxy.port}/",
              "-w", "%{http_code}").stdout  # fmt: skip
    assert out.endswith("502")
    assert f"nothing is listening on 127.0.0.1:{dead_port}" in out
    assert "is your dev server running?" in out
    alive = curl(harness, f"https://alive.test:{proxy.port}/",
                 "--resolve", f"alive.test:{proxy.port}:127.0.0.1")  # fmt: skip
    assert alive == "root"


def test_upstream_timeout_is_a_504(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port), limits=("upstream_timeout=0.5",))
    binary = require_tool("curl")
    out = run(binary, "-sS", "--cacert", harness.ca_file, f"https://localhost:{proxy.port}/slow?s=3",
              "-w", "%{http_code}").stdout  # fmt: skip
    assert out.endswith("504")
    assert "did not answer within 0.5 s" in out


def test_redirect_listener(harness: Harness) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        http_port = probe.getsockname()[1]
    proxy = harness.start_proxy(str(harness.upstream.port), redirect_http=f"127.0.0.1:{http_port}")
    binary = require_tool("curl")
    get = run(binary, "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
              f"http://localhost:{http_port}/a/b?c=d").stdout  # fmt: skip
    assert get == f"301 https://localhost:{proxy.port}/a/b?c=d"
    post = run(binary, "-sS", "-o", "/dev/null", "-X", "POST", "-w", "%{http_code}",
               f"http://localhost:{http_port}/form").stdout  # fmt: skip
    assert post == "308"
    followed = run(binary, "-sS", "-L", "--cacert", harness.ca_file,
                   f"http://localhost:{http_port}/").stdout  # fmt: skip
    assert followed == "root"


def test_plain_http_on_the_tls_port_is_redirected(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    binary = require_tool("curl")
    out = run(binary, "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
              f"http://localhost:{proxy.port}/x").stdout  # fmt: skip
    assert out == f"301 https://localhost:{proxy.port}/x"


def test_tcp_mode_with_a_line_protocol_and_half_close(harness: Harness) -> None:
    async def start_line_server() -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            lines = []
            while line := await reader.readline():  # until the client half-closes
                lines.append(line)
                writer.write(b"echo " + line)
                await writer.drain()
            writer.write(b"bye after %d lines\n" % len(lines))
            await writer.drain()
            writer.close()

        return await asyncio.start_server(handle, "127.0.0.1", 0)

    server = harness.loop.run(start_line_server())
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = harness.start_proxy(str(port), tcp=True)
        context = ssl.create_default_context(cafile=str(harness.ca_file))

        async def talk() -> bytes:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", proxy.port, ssl=context, server_hostname="localhost"
            )
            writer.write(b"one\ntwo\n")
            await writer.drain()
            first = await reader.readexactly(len(b"echo one\necho two\n"))
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()
            return first

        assert asyncio.run(talk()) == b"echo one\necho two\n"
        # Half-close: the client shuts its TCP write side (no close_notify, as raw TCP
        # clients do); the upstream sees EOF, and its last words still reach the client.
        data = half_close_exchange(proxy.port, context, b"a\nb\nc\n")
        assert data == b"echo a\necho b\necho c\nbye after 3 lines\n"
    finally:
        server.close()


def half_close_exchange(port: int, context: ssl.SSLContext, payload: bytes) -> bytes:
    """TLS over memory BIOs, so the TCP write side can be shut while TLS reading goes on."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        tls.write(payload)
        raw.sendall(outgoing.read())
        raw.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := raw.recv(65536):
            incoming.write(chunk)
            try:
                while piece := tls.read(65536):
                    received += piece
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                pass
    return received


def test_access_log_lines_and_quiet(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    curl(harness, f"https://localhost:{proxy.port}/headers/log")
    line = next(entry for entry in harness.log if "/headers/log" in entry)
    assert line.startswith('127.0.0.1 "GET localhost:')
    assert " 200 " in line
    assert line.endswith("ms")
    harness.log.clear()
    quiet = harness.start_proxy(str(harness.upstream.port), quiet=True)
    curl(harness, f"https://localhost:{quiet.port}/headers/quiet")
    assert not [entry for entry in harness.log if "quiet" in entry]


def test_demo_page_and_its_websocket(harness: Harness) -> None:
    proxy = harness.start_proxy()
    page = curl(harness, f"https://localhost:{proxy.port}/")
    assert "HTTPS works" in page
    assert "TLSv1.3" in page
    context = ssl.create_default_context(cafile=str(harness.ca_file))

    async def talk() -> str:
        async with websockets.connect(f"wss://localhost:{proxy.port}/ws", ssl=context) as ws:
            await ws.send("ping from test")
            return str(await ws.recv())

    assert asyncio.run(talk()) == "ping from test"


def test_tls_profile_with_openssl(harness: Harness) -> None:
    """TLS 1.2 and 1.3 only, AEAD suites only (Mozilla intermediate)."""
    proxy = harness.start_proxy(str(harness.upstream.port))
    openssl = require_tool("openssl")
    target = ["-connect", f"127.0.0.1:{proxy.port}", "-servername", "localhost"]

    def handshake(*args: str) -> bool:
        result = run(openssl, "s_client", *target, *args, input="", check=False)
        return "Cipher is (NONE)" not in result.stdout and result.returncode == 0

    assert handshake("-tls1_3")
    assert handshake("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert handshake("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305")
    assert not handshake("-tls1_1", "-cipher", "ALL:@SECLEVEL=0")
    assert not handshake("-tls1", "-cipher", "ALL:@SECLEVEL=0")
    for cbc in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256"):
        assert not handshake("-tls1_2", "-cipher", cbc), cbc
    # errors="replace": after an h2 handshake s_client may print the server's SETTINGS frame.
    alpn = run(openssl, "s_client", *target, "-alpn", "h2,http/1.1", input="", errors="replace")
    assert "ALPN protocol: h2" in alpn.stdout


def test_no_sni_gets_the_default_certificate(harness: Harness) -> None:
    proxy = harness.start_proxy(str(harness.upstream.port))
    context = ssl.create_default_context(cafile=str(harness.ca_file))
    context.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", proxy.port)) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert b"root" in read_response(tls)


def test_user_certificate_files_are_served(harness: Harness, tmp_path: Path, local_ca) -> None:
    leaf = local_ca.issue("files.test", key_type="ecdsa")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    leaf.write_pem(cert, key)
    # A chain file: the leaf followed by the CA, sent whole.
    cert.write_bytes(leaf.cert_pem() + local_ca.cert_pem())
    proxy = harness.start_proxy(str(harness.upstream.port), cert_file=cert, key_file=key)
    out = curl(
        harness,
        f"https://files.test:{proxy.port}/",
        "--resolve",
        f"files.test:{proxy.port}:127.0.0.1",
    )
    assert out == "root"
    openssl = require_tool("openssl")
    shown = run(openssl, "s_client", "-connect", f"127.0.0.1:{proxy.port}", "-servername", "files.test",
                "-showcerts", input="").stdout  # fmt: skip
    assert shown.count("BEGIN CERTIFICATE") == 2
