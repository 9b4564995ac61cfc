"""A dev server that can be restarted: an aiohttp app in its own process, for the soak.

Usage: python -m tests.proxy.soak_upstream PORT

It prints "ready" once it listens. The soak kills it (SIGKILL, as a crashing or reloading dev
server goes: open connections are reset or closed by the kernel) and starts a new one on the
same port.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys

from aiohttp import WSMsgType, web


def pattern(size: int) -> bytes:
    block = hashlib.sha256(b"devtls soak").digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def make_app() -> web.Application:
    async def headers(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path_qs})

    async def download(request: web.Request) -> web.Response:
        return web.Response(body=pattern(int(request.match_info["size"])))

    async def sha256(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        async for piece in request.content.iter_any():
            digest.update(piece)
        return web.json_response({"sha256": digest.hexdigest()})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            if message.type is WSMsgType.TEXT:
                await socket.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await socket.send_bytes(message.data)
        return socket

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/headers{tail:.*}", headers)
    app.router.add_get("/bytes/{size}", download)
    app.router.add_post("/sha256", sha256)
    app.router.add_get("/ws", ws)
    return app


async def main(port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    # reuse_address: a restarted server binds while the old one's sockets are in TIME_WAIT.
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True, backlog=1024)
    await site.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
