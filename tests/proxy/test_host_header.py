"""The Host an upstream is sent: the browser's (the default), or with ``host_header =
"upstream"`` the upstream's own address, the browser's going in X-Forwarded-Host and
Forwarded; a WebSocket handshake's own Origin follows the Host."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import websockets

from devtls.config import Upstream, build_config, parse_route, parse_upstream
from devtls.errors import ConfigError
from devtls.proxy import forwarding
from devtls.serve_settings import ServeOptions
from tests.proxy.conftest import Harness
from tests.proxy.test_forwarding import curl
from tests.proxy.test_forwarding_rules import fields, forward, parse_request

GET = b"GET /x HTTP/1.1\r\nHost: app.test:8443\r\nOrigin: https://app.test:8443\r\n\r\n"
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: app.test:8443\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Origin: https://app.test:8443\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def sent(request: bytes, upstream: Upstream) -> dict[bytes, list[bytes]]:
    head, _, _ = parse_request(forward(request, upstream=upstream))
    names = (b"host", b"origin", b"x-forwarded-host", b"forwarded")
    return {name: fields(head, name) for name in names}


@pytest.mark.parametrize(
    ("upstream", "host"),
    [
        ("5173", b"localhost:5173"),
        ("127.0.0.1:8080", b"127.0.0.1:8080"),
        ("[::1]:3000", b"[::1]:3000"),
        ("http://dev.test", b"dev.test"),
        ("http://dev.test:81", b"dev.test:81"),
        ("https://dev.test", b"dev.test"),
        ("https://dev.test:8444/base", b"dev.test:8444"),
        ("unix:/tmp/app.sock", b"localhost"),
    ],
)
def test_the_upstream_is_sent_its_own_address(upstream: str, host: bytes) -> None:
    seen = sent(GET, parse_upstream(upstream, host_header="upstream"))
    assert seen[b"host"] == [host]
    assert seen[b"x-forwarded-host"] == [b"app.test:8443"]
    assert seen[b"forwarded"] == [b'for=127.0.0.1;host="app.test:8443";proto=https']
    # A plain request's Origin goes as it came (as http-proxy's changeOrigin leaves it):
    # Next.js compares it with X-Forwarded-Host.
    assert seen[b"origin"] == [b"https://app.test:8443"]


def test_by_default_the_browsers_host_is_passed() -> None:
    seen = sent(HANDSHAKE, parse_upstream("5173"))
    assert seen[b"host"] == [b"app.test:8443"]
    assert seen[b"x-forwarded-host"] == [b"app.test:8443"]
    assert seen[b"origin"] == [b"https://app.test:8443"]


@pytest.mark.parametrize(
    ("upstream", "origin"),
    [
        ("5173", b"http://localhost:5173"),
        ("[::1]:3000", b"http://[::1]:3000"),
        ("https://dev.test:8444", b"https://dev.test:8444"),
        ("unix:/tmp/app.sock", b"http://localhost"),
    ],
)
def test_a_handshakes_own_origin_follows_the_host(upstream: str, origin: bytes) -> None:
    seen = sent(HANDSHAKE, parse_upstream(upstream, host_header="upstream"))
    assert seen[b"origin"] == [origin]


@pytest.mark.parametrize(
    ("browser_host", "origin", "same"),
    [
        (b"app.test:8443", b"https://app.test:8443", True),
        (b"APP.test:8443", b"https://app.TEST:8443", True),
        (b"app.test", b"https://app.test", True),
        (b"app.test:443", b"https://app.test", True),
        (b"app.test:8443", b"http://app.test:8443", False),  # another scheme
        (b"app.test:8443", b"https://app.test:9443", False),  # another port
        (b"app.test:8443", b"https://evil.test", False),  # another site
        (b"app.test:8443", b"https://app.test:8443.evil.test", False),
        (b"app.test:8443", b"null", False),
    ],
)
def test_only_the_pages_own_origin_is_rewritten(
    browser_host: bytes, origin: bytes, same: bool
) -> None:
    upstream = parse_upstream("5173", host_header="upstream")
    rewritten = forwarding.upstream_origin(origin, browser_host, upstream)
    assert rewritten == (b"http://localhost:5173" if same else origin)


def test_a_foreign_origin_reaches_the_dev_server_as_it_came() -> None:
    request = HANDSHAKE.replace(b"Origin: https://app.test:8443", b"Origin: https://evil.test")
    seen = sent(request, parse_upstream("5173", host_header="upstream"))
    assert seen[b"origin"] == [b"https://evil.test"]
    assert seen[b"host"] == [b"localhost:5173"]


def test_the_flag_applies_to_upstream_and_routes(tmp_path: Path) -> None:
    config = build_config(
        ServeOptions(upstream="3000", routes=("a.test=3001",), host_header="upstream"),
        cwd=tmp_path,
    )
    assert config.upstream is not None
    assert config.upstream.host_header == "upstream"
    assert config.routes[0].upstream.host_header == "upstream"
    assert config.host_header == "upstream"
    default = build_config(ServeOptions(upstream="3000", routes=("a.test=3001",)), cwd=tmp_path)
    assert default.upstream is not None
    assert default.upstream.host_header == "client"
    assert default.routes[0].upstream.host_header == "client"


def test_a_toml_route_table_has_its_own_setting(tmp_path: Path) -> None:
    (tmp_path / "devtls.toml").write_text(
        'host_header = "upstream"\n'
        "routes = [\n"
        '  "a.test=3001",\n'
        '  { route = "b.test=3002", host_header = "client" },\n'
        '  { route = "c.test=3003" },\n'
        "]\n"
    )
    config = build_config(ServeOptions(), cwd=tmp_path)
    chosen = {r.host: r.upstream.host_header for r in config.routes}
    assert chosen == {"a.test": "upstream", "b.test": "client", "c.test": "upstream"}
    # The flag decides for the routes that do not say.
    config = build_config(ServeOptions(host_header="client"), cwd=tmp_path)
    chosen = {r.host: r.upstream.host_header for r in config.routes}
    assert chosen == {"a.test": "client", "b.test": "client", "c.test": "client"}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('host_header = "browser"\nupstream = 3000\n', "neither 'client' nor 'upstream'"),
        ('routes = [{ route = "a.test=1", host_header = "x" }]\n', "host_header 'x'"),
        ('routes = [{ route = "a.test=1", change_origin = true }]\n', "not a route table"),
        ('routes = [{ host_header = "upstream" }]\n', "not a route table"),
        ("host_header = true\n", "wrong type"),
    ],
)
def test_bad_values_are_one_clear_error(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "devtls.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        build_config(ServeOptions(), cwd=tmp_path)


def test_parse_route_takes_the_setting() -> None:
    assert parse_route("a.test=3000").upstream.host_header == "client"
    assert parse_route("a.test=3000", host_header="upstream").upstream.host_header == "upstream"
    with pytest.raises(ConfigError):
        parse_route("a.test=3000", host_header="yes")  # type: ignore[arg-type]


# -- with devtls serve and real clients and upstreams --------------------------------------


def curl_headers(h: Harness, port: int, *args: str) -> dict[str, str]:
    out = curl(
        h, f"https://app.test:{port}/headers", "--resolve", f"app.test:{port}:127.0.0.1", *args
    )
    return {k.lower(): v for k, v in json.loads(out)["headers"]}


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_curl_through_devtls_with_the_rewrite(harness: Harness, version: str) -> None:
    route = f"app.test={harness.upstream.port}"
    proxy = harness.start_proxy(routes=(route,), host_header="upstream")
    seen = curl_headers(harness, proxy.port, version, "-H", "Origin: https://app.test")
    assert seen["host"] == f"localhost:{harness.upstream.port}"
    assert seen["x-forwarded-host"] == f"app.test:{proxy.port}"
    assert f'host="app.test:{proxy.port}"' in seen["forwarded"]
    assert seen["origin"] == "https://app.test"
    default = harness.start_proxy(routes=(route,))
    assert curl_headers(harness, default.port, version)["host"] == f"app.test:{default.port}"


def test_a_websocket_handshake_through_devtls_with_the_rewrite(harness: Harness) -> None:
    handshakes: list[dict[str, str]] = []

    def record(connection: Any, request: Any) -> None:
        handshakes.append({k.lower(): v for k, v in request.headers.raw_items()})

    async def echo(connection: websockets.ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async def boot() -> Any:
        return await websockets.serve(echo, "127.0.0.1", 0, process_request=record)

    server = harness.loop.run(boot())
    port = next(iter(server.sockets)).getsockname()[1]
    proxy = harness.start_proxy(routes=(f"app.test={port}",), host_header="upstream")
    context = ssl.create_default_context(cafile=str(harness.ca_file))

    async def talk(origin: str) -> str:
        async with websockets.connect(
            f"wss://app.test:{proxy.port}/ws",
            ssl=context,
            host="127.0.0.1",
            port=proxy.port,
            origin=origin,  # type: ignore[arg-type]
        ) as ws:
            await ws.send("hmr")
            return str(await asyncio.wait_for(ws.recv(), 10))

    try:
        assert asyncio.run(talk(f"https://app.test:{proxy.port}")) == "hmr"
        assert asyncio.run(talk("https://evil.test")) == "hmr"
    finally:
        server.close()
        harness.loop.run(server.wait_closed())
    own, foreign = handshakes
    assert own["host"] == foreign["host"] == f"localhost:{port}"
    assert own["origin"] == f"http://localhost:{port}"
    assert foreign["origin"] == "https://evil.test"
    assert own["x-forwarded-host"] == f"app.test:{proxy.port}"


def test_the_readmes_devtls_toml_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent.parent / "README.md").read_text()
    example = readme.split("holds the same settings, with the long option names:\n\n```toml\n")[1]
    (tmp_path / "devtls.toml").write_text(example.split("```")[0])
    config = build_config(ServeOptions(), cwd=tmp_path)
    chosen = {str(r): r.upstream.host_header for r in config.routes}
    assert chosen == {
        "app.test -> http://localhost:5173": "client",
        "app.test/api -> http://localhost:8000": "client",
        "admin.test -> http://localhost:4200": "upstream",
    }
