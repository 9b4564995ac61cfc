"""Instructions per request and per reconnect, devtls against nginx, counted by callgrind.

Usage: python scripts/bench/instructions.py [--only devtls,nginx] [--kind keepalive,resumed]
                                            [--counts 300,900]

Each proxy runs under ``valgrind --tool=callgrind`` (devtls serve, and nginx with one process)
in front of the same nginx upstream, with the same RSA-2048 leaf, twice: once for the first
count of requests (or reconnects), once for the second; the difference of the two totals,
divided by the difference of the counts, is what one more costs, start-up and shut-down cancelled
out. Instructions are counted in the proxy's own user space only (not the kernel's, not the
client's), and they do not depend on what else the machine is doing: a noisy machine still gives
the same figures, where seconds would not. The split by shared object shows where they go
(libpython: the interpreter; libcrypto/libssl: OpenSSL).

  keepalive   one TLS connection, that many GET / requests on it, one at a time
  resumed     that many connections, each resuming the last one's TLS session (a TLS 1.3
              ticket), one GET / with "Connection: close" each

Needs valgrind and nginx (Debian: valgrind, nginx-light). Slow: valgrind runs code about 50
times slower; the defaults take a few minutes. Keep the counts under 1,000: past that many
requests on one connection, the nginx measured here closed it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import proxy_bench

PORT = 19460


def client(port: int, count: int, kind: str) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if kind == "keepalive":
        with context.wrap_socket(
            socket.create_connection(("127.0.0.1", port)), server_hostname="localhost"
        ) as tls:
            reader = tls.makefile("rb")
            for _ in range(count):
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                if not reader.readline().startswith(b"HTTP/1.1 200"):
                    raise RuntimeError("no 200")
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)
        return
    session = None
    for _ in range(count):
        with context.wrap_socket(
            socket.create_connection(("127.0.0.1", port)),
            server_hostname="localhost",
            session=session,
        ) as tls:
            if session is not None and not tls.session_reused:
                raise RuntimeError("the TLS session was not resumed")
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = b""
            while True:
                try:
                    chunk = tls.recv(65536)
                except ssl.SSLZeroReturnError:
                    break
                if not chunk:
                    break
                answer += chunk
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError("no 200")
            session = tls.session


def nginx_command(work: Path, cert: Path, key: Path) -> list[str]:
    conf = work / "nginx-proxy.conf"
    conf.write_text(f"""
worker_processes 1; master_process off; daemon off;
pid {work}/nginx-proxy.pid; error_log {work}/nginx-proxy.err;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream app {{ server 127.0.0.1:{proxy_bench.UPSTREAM_HTTP}; keepalive 64; }}
  server {{ listen 127.0.0.1:{PORT} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:S:10m;
    location / {{ proxy_pass http://app; proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https; proxy_buffering off; }} }} }}
""")
    return ["nginx", "-c", str(conf)]


def counted(command: list[str], out: Path, count: int, kind: str) -> int:
    """Total instructions of ``command`` serving ``count`` requests or reconnects."""
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        proxy_bench.wait_port(PORT, timeout=120)
        client(PORT, count, kind)
    finally:
        # nginx stops on SIGTERM (or SIGQUIT), devtls drains on SIGINT; both then exit.
        process.send_signal(signal.SIGTERM if command[0] == "nginx" else signal.SIGINT)
        _, err = process.communicate(timeout=300)
    match = re.search(rb"Collected : (\d+)", err)
    if not match:
        raise RuntimeError(f"callgrind printed no total: {err[-500:]!r}")
    return int(match.group(1))


def by_object(out: Path) -> dict[str, int]:
    """Instructions by shared object, from one callgrind output."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    totals: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([0-9,]+) \([ 0-9.]+%\)\s+(?!=>)(.*)$", line)
        if not match or "PROGRAM TOTALS" in line:
            continue
        where = re.search(r"\[([^\]]*)\]\s*$", match.group(2))
        name = where.group(1).split("/")[-1].split()[0] if where else "?"
        if ".cpython-" in name:
            name = name.split(".cpython-")[0] + " (extension)"
        totals[name] = totals.get(name, 0) + int(match.group(1).replace(",", ""))
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="devtls,nginx")
    parser.add_argument("--kind", default="keepalive,resumed")
    parser.add_argument("--counts", default="300,900")
    args = parser.parse_args()
    first, second = (int(n) for n in args.counts.split(","))
    for tool in ("valgrind", "callgrind_annotate", "nginx"):
        if not shutil.which(tool):
            print(f"{tool} is missing (Debian: apt-get install valgrind nginx-light)")
            return 1
    devtls = shutil.which("devtls") or str(Path(sys.executable).parent / "devtls")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cert, key = work / "leaf.pem", work / "leaf-key.pem"
        env = {**os.environ, "CAROOT": str(work / "ca")}
        subprocess.run([devtls, "cert", "--cert-file", str(cert), "--key-file", str(key),
                        "localhost", "127.0.0.1"], env=env, check=True, capture_output=True)  # fmt: skip
        os.environ["CAROOT"] = str(work / "ca")
        commands = {
            "devtls": [devtls, "serve", str(proxy_bench.UPSTREAM_HTTP), "--quiet",
                       "--listen", f"127.0.0.1:{PORT}", "--cert", str(cert), "--key", str(key)],
            "nginx": nginx_command(work, cert, key),
        }  # fmt: skip
        upstream = proxy_bench.start_upstream(work)
        try:
            for kind in args.kind.split(","):
                per: dict[str, int] = {}
                for name in args.only.split(","):
                    outs = [work / f"{name}.{kind}.{n}.out" for n in (first, second)]
                    totals = [
                        counted(commands[name], o, n, kind)
                        for o, n in zip(outs, (first, second), strict=True)
                    ]
                    per[name] = (totals[1] - totals[0]) // (second - first)
                    a, b = by_object(outs[0]), by_object(outs[1])
                    split = {k: (b.get(k, 0) - a.get(k, 0)) // (second - first) for k in a | b}
                    print(f"{kind:9} {name:7} {per[name]:>11,} instructions each")
                    for obj, value in sorted(split.items(), key=lambda kv: -kv[1])[:6]:
                        if value > 0:
                            print(f"{'':18}{value:>11,}  {obj}")
                if "nginx" in per and "devtls" in per:
                    print(f"{kind:9} devtls/nginx {per['devtls'] / per['nginx']:.2f}x")
        finally:
            for process in upstream:
                proxy_bench.stop(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
