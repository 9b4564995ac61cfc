"""A real browser: headless Chromium opens the demo page and its wss:// echo works."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import require_tool, run
from tests.proxy.conftest import Harness

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def dump_dom(url: str, home: Path) -> str:
    chromium = require_tool("chromium")
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={home / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True, text=True, timeout=90, check=False,
        env={**os.environ, "HOME": str(home)},
    )  # fmt: skip
    return result.stdout


def trust_in_nss(home: Path, ca_file: Path) -> None:
    """What a browser's NSS database looks like once the devtls root is trusted in it."""
    certutil = require_tool("certutil")
    # Chromium reads ~/.pki/nssdb, and from version 146 ~/.local/share/pki/nssdb.
    for db in (home / ".pki" / "nssdb", home / ".local" / "share" / "pki" / "nssdb"):
        db.mkdir(parents=True)
        run(certutil, "-N", "-d", f"sql:{db}", "--empty-password")
        run(certutil, "-A", "-d", f"sql:{db}", "-t", "C,,", "-n", "devtls test root", "-i", ca_file)


def test_chromium_trusts_the_demo_page_and_its_websocket(harness: Harness, tmp_path: Path) -> None:
    proxy = harness.start_proxy()
    url = f"https://localhost:{proxy.port}/"
    untrusting = tmp_path / "untrusting"
    untrusting.mkdir()
    # Negative control: without the root in its NSS database Chromium shows no page.
    assert "HTTPS works" not in dump_dom(url, untrusting)
    trusting = tmp_path / "trusting"
    trusting.mkdir()
    trust_in_nss(trusting, harness.ca_file)
    dom = dump_dom(url, trusting)
    assert "HTTPS works" in dom
    assert "TLSv1.3" in dom
    assert "echo: hello from the demo page" in dom
