"""Server CPU spent on bare ClientHellos that each ask for a new name (a minting flood).

Usage: python scripts/bench/hello_flood.py [--hellos 5000] [--limit mint_per_minute=60] [--same-name]

Starts ``devtls serve`` (catch-all upstream, so every name may be minted) with a throwaway CA,
sends N ClientHellos with distinct random SNI names over loopback and closes each connection at
once, then prints the server's CPU seconds for them (Linux: from /proc) and how long a normal
handshake took right after. ``--same-name`` sends one name the default certificate covers, for
the floor: what the handshakes cost with no minting at all. Nothing here is a test: compare runs
on one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLACEHOLDER = "p" * 12 + ".test"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def base_hello() -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=PLACEHOLDER)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hellos", type=int, default=5000)
    parser.add_argument("--limit", action="append", default=[])
    parser.add_argument("--same-name", action="store_true")
    args = parser.parse_args()
    if not Path("/proc/self/stat").exists():
        print("needs Linux (/proc)")
        return 1
    hello = base_hello()
    port = free_port()
    with tempfile.TemporaryDirectory() as caroot:
        limits = [f"--limit={item}" for item in args.limit]
        if args.same_name:
            limits += ["--name", "localhost", "--name", PLACEHOLDER]
        command = [sys.executable, "-m", "devtls", "serve", "--listen", f"127.0.0.1:{port}"]
        server = subprocess.Popen(
            [*command, "--quiet", *limits, "1"],
            env={**os.environ, "CAROOT": caroot},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert server.stdout is not None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "->" not in server.stdout.readline():
                pass
            before = cpu_seconds(server.pid)
            started = time.perf_counter()
            for _ in range(args.hellos):
                name = PLACEHOLDER if args.same_name else secrets.token_hex(6) + ".test"
                with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                    raw.sendall(hello.replace(PLACEHOLDER.encode(), name.encode()))
            sent = time.perf_counter() - started
            # Let the server finish what the flood started (mints in its threads).
            time.sleep(1.0)
            spent = cpu_seconds(server.pid) - before
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            tick = time.perf_counter()
            with (
                socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
                context.wrap_socket(raw, server_hostname="localhost"),
            ):
                pass
            handshake = time.perf_counter() - tick
        finally:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=30)
    kind = "one covered name" if args.same_name else "a new name each"
    print(f"{args.hellos} bare ClientHellos ({kind}) sent in {sent:.1f} s")
    print(f"server CPU for them:             {spent:7.2f} s")
    print(f"a normal handshake right after:  {handshake * 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
