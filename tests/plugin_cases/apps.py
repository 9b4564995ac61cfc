"""Apps and upstreams the plugin's test sessions put devtls_https in front of.

Copied into each pytester session as a module of its own (``import apps``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from websockets.sync.server import ServerConnection, serve


def wsgi_app(environ, start_response):
    body = json.dumps(
        {"path": environ["PATH_INFO"], "proto": environ.get("HTTP_X_FORWARDED_PROTO")}
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({"path": scope["path"], "asgi": scope["http_version"]}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def ws_upstream() -> Iterator[int]:
    """A plain-ws echo server (websockets' threaded one) on a free loopback port."""

    def echo(connection: ServerConnection) -> None:
        for message in connection:
            connection.send(message)

    with serve(echo, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        yield server.socket.getsockname()[1]
        server.shutdown()
        thread.join(10)
