"""Headless Chromium driven over the Chrome DevTools protocol: a page, its console, its sockets.

Small on purpose: one page, blocking calls, every wait bounded. Chromium trusts the test CA
through an NSS database in its own HOME (``trust_in_nss``), as a browser of a user who ran
``devtls install`` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.conftest import require_tool, wait_for
from tests.proxy.test_browser import CHROMIUM_FLAGS, trust_in_nss

Event = dict[str, Any]


class Page:
    """One tab: ``call`` a protocol method; the events that came meanwhile are kept."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.events: list[Event] = []
        self._next_id = 0

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        self.connection.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = json.loads(self.connection.recv(timeout=left))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)
        raise TimeoutError(f"{method} got no answer in {timeout} s")

    def pump(self, seconds: float) -> None:
        """Take the events that come within ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.events.append(json.loads(self.connection.recv(timeout=left)))
            except TimeoutError:
                return

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def until(self, predicate: Callable[[], bool], seconds: float = 30) -> bool:
        """Whether ``predicate`` became true within ``seconds``, events taken meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.pump(0.1)
        return predicate()

    def console(self) -> list[str]:
        """The page's console lines so far."""
        lines = []
        for event in self.events:
            if event.get("method") == "Runtime.consoleAPICalled":
                args = event["params"].get("args", [])
                lines.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
        return lines

    def websocket_frames(self, limit: int = 40) -> list[str]:
        """The last ``limit`` WebSocket frames the page got (at most 300 characters each)."""
        frames = [
            str(e["params"]["response"].get("payloadData", ""))[:300]
            for e in self.events
            if e.get("method") == "Network.webSocketFrameReceived"
        ]
        return frames[-limit:]

    def websockets(self) -> list[str]:
        """The URLs of the WebSockets the page opened."""
        return [
            e["params"]["url"] for e in self.events if e.get("method") == "Network.webSocketCreated"
        ]


@contextmanager
def chromium_page(home: Path, ca_file: Path, *, resolve: tuple[str, ...] = ()) -> Iterator[Page]:
    """A headless Chromium trusting ``ca_file``, with ``resolve`` names mapped to 127.0.0.1."""
    chromium = require_tool("chromium")
    home.mkdir(parents=True, exist_ok=True)
    trust_in_nss(home, ca_file)
    profile = home / "profile"
    rules = ", ".join(f"MAP {name} 127.0.0.1" for name in resolve)
    args = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0"]
    if rules:
        args.append(f"--host-resolver-rules={rules}")
    process = subprocess.Popen(
        [*args, "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(home)},
    )
    try:
        port_file = profile / "DevToolsActivePort"
        if not wait_for(lambda: port_file.is_file() and port_file.read_text().strip() != "", 30):
            raise RuntimeError("Chromium did not open its DevTools port")
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        target = next(t for t in targets if t.get("type") == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            page = Page(ws)
            for domain in ("Runtime", "Page", "Network"):
                page.call(f"{domain}.enable")
            yield page
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
