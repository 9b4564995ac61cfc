"""Real servers for forwarder tests: an aiohttp app, a websockets echo, devtls itself.

Everything runs on one asyncio loop in a background thread, on 127.0.0.1 ports the OS picks,
so tests can use blocking clients (curl, httpx) against it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
from aiohttp import web

from devtls.config import ServeConfig, ServeOptions, build_config
from devtls.proxy.background import LoopThread, start_server
from devtls.proxy.server import RunningServer, shutdown

__all__ = ["Harness", "LoopThread", "Upstream", "pattern_bytes"]


def pattern_bytes(size: int) -> bytes:
    block = hashlib.sha256(b"devtls").digest() * 2048  # 64 KiB, not compressible by accident
    return (block * (size // len(block) + 1))[:size]


@dataclass
class Upstream:
    port: int
    ws_port: int
    sse_gate: asyncio.Event
    seen: list[dict[str, Any]] = field(default_factory=list)


def make_app(upstream_state: dict[str, Any]) -> web.Application:
    async def headers(request: web.Request) -> web.Response:
        record = {
            "method": request.method,
            "path": request.path_qs,
            "headers": [[k, v] for k, v in request.headers.items()],
        }
        upstream_state["seen"].append(record)
        return web.json_response(record)

    async def sha256(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for piece in request.content.iter_any():
            digest.update(piece)
            size += len(piece)
        return web.json_response({"sha256": digest.hexdigest(), "size": size})

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        chunked = request.query.get("chunked") == "1"
        response = web.StreamResponse()
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = size
        await response.prepare(request)
        data = pattern_bytes(size)
        for offset in range(0, size, 256 * 1024):
            await response.write(data[offset : offset + 256 * 1024])
        await response.write_eof()
        return response

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        gate: asyncio.Event = upstream_state["sse_gate"]
        try:
            await asyncio.wait_for(gate.wait(), 10)
            await response.write(b"data: second\n\n")
        except asyncio.TimeoutError:
            await response.write(b"data: timeout\n\n")
        await response.write_eof()
        return response

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, body=None if code in (204, 304) else b"x")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(text="slow")

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/headers{tail:.*}", headers)
    app.router.add_post("/sha256", sha256)
    app.router.add_put("/sha256", sha256)
    app.router.add_get("/bytes/{size}", download)
    app.router.add_get("/sse", sse)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/slow", slow)

    async def root(request: web.Request) -> web.Response:
        return web.Response(text="root")

    app.router.add_get("/", root)
    return app


async def ws_echo(connection: websockets.ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


@dataclass
class Harness:
    loop: LoopThread
    upstream: Upstream
    ca_file: Path
    caroot: Path
    runners: list[Any] = field(default_factory=list)
    proxies: list[RunningServer] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def start_proxy(self, *args: str, **options: Any) -> RunningServer:
        """devtls serve with ServeOptions fields (listen defaults to a free loopback port)."""
        options.setdefault("listen", "127.0.0.1:0")
        if args:
            options["upstream"] = args[0]
        config = build_config(ServeOptions(**options), cwd=self.caroot)
        return self.start_config(config)

    def start_config(self, config: ServeConfig) -> RunningServer:
        running = start_server(self.loop, config, write_log=self.log.append)
        self.proxies.append(running)
        return running

    def release_sse(self) -> None:
        self.loop.call(self.upstream.sse_gate.set)


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


@pytest.fixture
def harness(
    loop_thread: LoopThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session_ca_dir: Path
) -> Iterator[Harness]:
    monkeypatch.setenv("CAROOT", str(session_ca_dir))
    state: dict[str, Any] = {"seen": []}

    async def boot() -> tuple[Upstream, list[Any]]:
        state["sse_gate"] = asyncio.Event()
        runner = web.AppRunner(make_app(state), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        ws_server = await websockets.serve(ws_echo, "127.0.0.1", 0, max_size=None)
        ws_port = next(iter(ws_server.sockets)).getsockname()[1]
        upstream = Upstream(port, ws_port, state["sse_gate"], state["seen"])
        return upstream, [runner, ws_server]

    upstream, runners = loop_thread.run(boot())
    h = Harness(loop_thread, upstream, session_ca_dir / "rootCA.pem", session_ca_dir, runners)
    yield h

    async def teardown() -> None:
        for proxy in h.proxies:
            await shutdown(proxy)
        runner, ws_server = h.runners
        ws_server.close()
        await ws_server.wait_closed()
        await runner.cleanup()

    loop_thread.run(teardown())
