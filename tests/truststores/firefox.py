"""Headless Firefox driven over WebDriver BiDi: which page a fresh profile really shows for a URL."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import websockets

from tests.conftest import require_tool

LISTENING = re.compile(r"WebDriver BiDi listening on (ws://[\w.:\[\]]+)")


class BiDi:
    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.next_id = 0

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        await self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        for _ in range(1000):  # events may come first; bounded
            message = json.loads(await asyncio.wait_for(self.socket.recv(), 60))
            if message.get("id") == self.next_id:
                return message  # type: ignore[no-any-return]
        raise AssertionError(f"no answer to {method}")


async def _visit(ws_url: str, url: str) -> dict[str, str]:
    async with websockets.connect(f"{ws_url}/session", open_timeout=30) as socket:
        bidi = BiDi(socket)
        # acceptInsecureCerts false: a certificate error shows Firefox's error page, as for a user.
        new = await bidi.call(
            "session.new", {"capabilities": {"alwaysMatch": {"acceptInsecureCerts": False}}}
        )
        assert new["type"] == "success", new
        tree = await bidi.call("browsingContext.getTree", {})
        context = tree["result"]["contexts"][0]["context"]
        navigation = await bidi.call(
            "browsingContext.navigate", {"context": context, "url": url, "wait": "complete"}
        )
        page = await bidi.call(
            "script.evaluate",
            {
                "target": {"context": context},
                "expression": "JSON.stringify([document.documentURI, document.title,"
                " document.body ? document.body.innerText : ''])",
                "awaitPromise": False,
            },
        )
        uri, title, text = json.loads(page["result"]["result"]["value"])
        await bidi.call("session.end", {})
        return {
            "navigation": navigation["type"],
            "error": str(navigation.get("message", "")),
            "uri": uri,
            "title": title,
            "text": text,
        }


def firefox_visit(url: str, profile: Path, home: Path) -> dict[str, str]:
    """Start firefox-esr on ``profile`` (an empty folder makes a new profile), load ``url``, and
    say what it shows: the document's URI (``about:certerror?...`` for a certificate error),
    its title and text."""
    firefox = require_tool("firefox-esr")
    profile.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [firefox, "--headless", "--no-remote", "-profile", str(profile),
         "--remote-debugging-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "MOZ_CRASHREPORTER_DISABLE": "1"},
    )  # fmt: skip
    found: list[str] = []
    assert process.stderr is not None
    stderr = process.stderr

    def read() -> None:
        for line in stderr:
            match = LISTENING.search(line)
            if match and not found:
                found.append(match.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        from tests.conftest import wait_for

        assert wait_for(lambda: bool(found), 60), "Firefox did not start its BiDi agent"
        return asyncio.run(asyncio.wait_for(_visit(found[0], url), 120))
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        reader.join(10)
        stderr.close()
