"""The built-in demo app: a page that shows the TLS connection, and a WebSocket echo.

It runs as a plain-HTTP server on a loopback port chosen by the OS, and ``devtls serve``
forwards to it like to any upstream, so the demo exercises the real https -> http and
wss -> ws path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import struct

from devtls.proxy import http1
from devtls.proxy.http1 import RequestHead
from devtls.proxy.responder import ListenerState, Reply, Responder

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
# The demo echoes messages a person types; anything bigger is not a demo any more.
MAX_FRAME = 1024 * 1024

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>devtls: it works</title>
<style>
 body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 3rem auto; }}
 .ok {{ color: #0a7a28; }} code {{ background: #f3f3f3; padding: 0 .3em; }}
 td {{ padding: .2em 1em .2em 0; }}
 #log {{ white-space: pre-wrap; background: #f7f7f7; padding: .5em; }}
</style></head>
<body>
<h1 class="ok">HTTPS works</h1>
<p>Your browser loaded this page over HTTPS without a warning, so it trusts the devtls CA.
If you had to click through a warning, run <code>devtls install</code> and restart the browser.</p>
<table>
<tr><td>Host</td><td><code>{host}</code></td></tr>
<tr><td>HTTP version</td><td><code id="http">{http}</code></td></tr>
<tr><td>TLS version</td><td><code>{version}</code></td></tr>
<tr><td>Cipher</td><td><code>{cipher}</code></td></tr>
<tr><td>Your address</td><td><code>{client}</code></td></tr>
</table>
<h2>WebSocket echo (wss://)</h2>
<p><input id="msg" value="hello" aria-label="message"> <button id="send">Send</button>
 <span id="state">connecting&hellip;</span></p>
<div id="log"></div>
<script>
const log = (t) => {{ document.getElementById("log").textContent += t + "\\n"; }};
const state = document.getElementById("state");
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(scheme + location.host + "/ws");
ws.onopen = () => {{
  state.textContent = "connected"; state.className = "ok";
  ws.send("hello from the demo page");
}};
ws.onmessage = (e) => log("echo: " + e.data);
ws.onclose = (e) => {{ state.textContent = "closed (" + e.code + ")"; state.className = ""; }};
document.getElementById("send").onclick = () => ws.send(document.getElementById("msg").value);
</script>
</body></html>
"""


def websocket_accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())  # noqa: S324 - RFC 6455


def answer(head: RequestHead) -> Reply:
    """The demo's reply to one request: the page, the WebSocket echo at /ws, or a 404."""
    headers = {name.lower(): value for name, value in head.headers}
    path = head.path
    if path == b"/ws" and (head.upgrade or b"").lower() == b"websocket":
        key = headers.get(b"sec-websocket-key")
        if key is None:
            return Reply(http1.simple_response(400, b"missing Sec-WebSocket-Key\n"), close=False)
        switching = http1.encode_head(
            b"HTTP/1.1 101 Switching Protocols",
            [
                (b"Upgrade", b"websocket"),
                (b"Connection", b"Upgrade"),
                (b"Sec-WebSocket-Accept", websocket_accept(key)),
            ],
        )
        return Reply(switching, switch=lambda transport: WebSocketEcho(transport).feed)
    close = not head.keep_alive
    if path in (b"/", b"/index.html") and head.method in (b"GET", b"HEAD"):
        page = _PAGE.format(
            host=_text(head.host),
            http=_text(headers.get(b"x-devtls-http-version", b"?")),
            version=_text(headers.get(b"x-devtls-tls-version", b"?")),
            cipher=_text(headers.get(b"x-devtls-tls-cipher", b"?")),
            client=_text(headers.get(b"x-forwarded-for", b"?")),
        ).encode()
        response = http1.simple_response(
            200,
            page,
            content_type=b"text/html; charset=utf-8",
            head_only=head.method == b"HEAD",
            close=close,
        )
        return Reply(response, close=close)
    return Reply(http1.simple_response(404, b"not found\n", close=close), close=close)


def _text(value: bytes) -> str:
    return html.escape(value.decode("latin-1"))


class WebSocketEcho:
    """RFC 6455 frames from a client, echoed back (pings answered, close returned)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while (frame := self._next_frame()) is not None:
            fin_opcode, payload = frame
            opcode = fin_opcode & 0x0F
            if opcode == 0x8:  # close: echo the status code back, then close
                self.transport.write(_frame(0x88, payload[:2]))
                self.transport.close()
                return
            if opcode == 0x9:  # ping
                self.transport.write(_frame(0x8A, payload))
            elif opcode in (0x0, 0x1, 0x2):
                self.transport.write(_frame(fin_opcode, payload))

    def _next_frame(self) -> tuple[int, bytes] | None:
        buffer = self.buffer
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        length = second & 0x7F
        offset = 2
        if length == 126:
            if len(buffer) < 4:
                return None
            length = struct.unpack_from("!H", buffer, 2)[0]
            offset = 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            length = struct.unpack_from("!Q", buffer, 2)[0]
            offset = 10
        if length > MAX_FRAME or not second & 0x80:
            # Too big for a demo, or an unmasked client frame (RFC 6455 5.1): close 1009/1002.
            code = 1009 if length > MAX_FRAME else 1002
            self.transport.write(_frame(0x88, struct.pack("!H", code)))
            self.transport.close()
            self.buffer.clear()
            return None
        if len(buffer) < offset + 4 + length:
            return None
        mask = buffer[offset : offset + 4]
        start = offset + 4
        payload = bytes(buffer[start : start + length])
        del buffer[: start + length]
        return first, _unmask(payload, bytes(mask))


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


def _frame(fin_opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", fin_opcode, length)
    elif length < 65536:
        header = struct.pack("!BBH", fin_opcode, 126, length)
    else:
        header = struct.pack("!BBQ", fin_opcode, 127, length)
    return header + payload


async def start_demo_server(listener: ListenerState) -> tuple[asyncio.Server, int]:
    """The demo app on 127.0.0.1 at a port the OS picks, with the listener's limits."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Responder(listener, answer), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port
