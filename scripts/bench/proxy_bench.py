"""devtls serve against nginx, Caddy, hitch and local-ssl-proxy, in one run, as ratios to nginx.

Usage: python scripts/bench/proxy_bench.py [--install] [--seconds 5] [--only devtls,nginx]
                                           [--baseline [NAME=]PATH/TO/OTHER/devtls]...

--install puts the peers in place first (Debian: nginx-light, haproxy, caddy, hitch, wrk;
npm: local-ssl-proxy). Everything listens on 127.0.0.1; every load loop stops after --seconds.
All proxies serve the same RSA-2048 leaf (from a throwaway devtls CA) in front of the same
upstream: nginx answering a 2-byte body, a 16 KiB file and a 100 MB file, and a websocket
echo server. The figures:

  req/s, p50, p99   keep-alive requests (wrk -t1 -c50) for the 2-byte body
  CPU us/req        the proxy's own CPU time per request in that run (/proc/PID/stat)
  new conn/s        requests with "Connection: close": a full TLS handshake each
  CPU us/hs         the proxy's CPU time per full handshake (openssl s_time -new, one request each)
  resumed/s         reconnects resuming the TLS session (openssl s_time -reuse), one at a time
  CPU us/resumed    the proxy's CPU time per resumed reconnect (one request each)
  16KiB/s           keep-alive requests for the 16 KiB file
  WS rt/s           websocket echo round trips (20 connections, Python client)
  MB/s              one 100 MB download with curl, over HTTP/1.1
  KiB/idle conn     memory per idle TLS connection, 1,000 held open

"devtls-base" is another devtls executable (--baseline: an older build, or the pure-Python
build, in a venv of its own), measured in the same run to show what a change did; more than one
is named by NAME= (devtls-NAME). "devtls-w2" is devtls serve --workers 2 (two processes on one port, SO_REUSEPORT); its CPU
and memory figures are those of both processes together.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

UPSTREAM_HTTP = 18080
UPSTREAM_WS = 18081
PORTS = {
    "nginx": 19443,
    "haproxy": 19448,
    "caddy": 19444,
    "hitch": 19445,
    "local-ssl-proxy": 19446,
    "devtls": 19447,
    "devtls-w2": 19449,
    "devtls-base": 19450,
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    figures: dict[str, float] = field(default_factory=dict)
    protocol: str = "?"


def negotiated(port: int) -> str:
    """The TLS version a default client gets: every peer must be compared on the same one."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port)) as raw, context.wrap_socket(raw) as tls:
        return tls.version() or "?"


def sh(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def install() -> None:
    sh("apt-get", "update", "-qq")
    result = sh(
        "apt-get", "install", "-y", "-qq", "nginx-light", "haproxy", "caddy", "hitch", "wrk"
    )
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
    if shutil.which("npm"):
        sh("npm", "install", "-g", "--silent", "local-ssl-proxy")


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for child in Path("/proc").iterdir():
        if child.name.isdigit():
            try:
                stat = (child / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) in pids:
                pids.append(int(child.name))
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0
    for each in process_tree(pid):
        try:
            stat = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(stat[11]) + int(stat[12])
    return total / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    total = 0
    for each in process_tree(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def wrk(url: str, seconds: int, *extra: str) -> tuple[float, float, float, int]:
    out = sh("wrk", "-t1", "-c50", f"-d{seconds}s", "--latency", *extra, url).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]

    def percentile(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return rate, percentile("50"), percentile("99"), total


def s_time(port: int, seconds: int, mode: str) -> tuple[int, float]:
    """Connections made by ``openssl s_time`` (``-new`` or ``-reuse``), one GET / each, and
    the wall time they took."""
    out = sh("openssl", "s_time", "-connect", f"127.0.0.1:{port}", mode, "-time", str(seconds),
             "-www", "/").stdout  # fmt: skip
    match = re.search(r"(\d+) connections in ([\d.]+) real seconds", out)
    return (int(match.group(1)), float(match.group(2))) if match else (0, 1.0)


async def ws_round_trips(port: int, seconds: int) -> float:
    import websockets

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    count = 0
    deadline = time.monotonic() + seconds

    async def one() -> None:
        nonlocal count
        async with websockets.connect(f"wss://127.0.0.1:{port}/", ssl=context) as ws:
            while time.monotonic() < deadline:
                await ws.send("x" * 32)
                await ws.recv()
                count += 1

    await asyncio.gather(*(one() for _ in range(20)))
    return count / seconds


def idle_memory(port: int, pid: int, count: int = 1000) -> float:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    before = rss_kib(pid)
    held = []
    try:
        for _ in range(count):
            raw = socket.create_connection(("127.0.0.1", port))
            held.append(context.wrap_socket(raw, server_hostname="localhost"))
        time.sleep(1)
        after = rss_kib(pid)
    finally:
        for tls in held:
            tls.close()
    return (after - before) / count


def start_upstream(work: Path) -> list[subprocess.Popen[bytes]]:
    work.chmod(0o755)  # nginx workers run as nobody and must read the files
    (work / "www").mkdir()
    (work / "www" / "16k").write_bytes(b"x" * 16384)
    with (work / "www" / "100m").open("wb") as big:
        big.truncate(100 * 1024 * 1024)
    conf = work / "upstream.conf"
    conf.write_text(f"""
worker_processes 1; pid {work}/upstream.pid; error_log {work}/upstream.err; daemon off;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on;
  server {{ listen 127.0.0.1:{UPSTREAM_HTTP}; root {work}/www;
    location = / {{ return 200 "ok"; }} }} }}
""")
    nginx = subprocess.Popen(["nginx", "-c", str(conf)])
    ws = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import asyncio, websockets
async def echo(c):
    async for m in c: await c.send(m)
async def main():
    async with websockets.serve(echo, "127.0.0.1", {UPSTREAM_WS}): await asyncio.Future()
asyncio.run(main())
""",
        ]
    )
    wait_port(UPSTREAM_HTTP)
    wait_port(UPSTREAM_WS)
    return [nginx, ws]


def peers(
    work: Path, cert: Path, key: Path, devtls: list[str], baselines: dict[str, str] | None = None
) -> dict[str, Callable[[bool], subprocess.Popen[bytes]]]:
    """How to start each proxy in front of the HTTP (or, for ws=True, the websocket) upstream."""

    def nginx(ws: bool) -> subprocess.Popen[bytes]:
        upstream = UPSTREAM_WS if ws else UPSTREAM_HTTP
        conf = work / "nginx.conf"
        conf.write_text(f"""
worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx.err; daemon off;
events {{ worker_connections 8192; }}
http {{ access_log off;
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{ listen 127.0.0.1:{PORTS["nginx"]} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:S:10m;
    location / {{ proxy_pass http://app; proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_buffering off; }} }} }}
""")
        return subprocess.Popen(["nginx", "-c", str(conf)])

    def haproxy(ws: bool) -> subprocess.Popen[bytes]:
        upstream = UPSTREAM_WS if ws else UPSTREAM_HTTP
        conf = work / "haproxy.cfg"
        conf.write_text(f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option forwardfor
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 60s
frontend tls
  bind 127.0.0.1:{PORTS["haproxy"]} ssl crt {combined_pem()}
  http-request set-header X-Forwarded-Proto https
  default_backend app
backend app
  server app 127.0.0.1:{upstream}
""")
        return subprocess.Popen(["haproxy", "-f", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip

    def combined_pem() -> Path:
        pem = work / "combined.pem"
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        return pem

    def caddy(ws: bool) -> subprocess.Popen[bytes]:
        upstream = UPSTREAM_WS if ws else UPSTREAM_HTTP
        conf = work / "Caddyfile"
        conf.write_text(f"""{{
  admin off
  auto_https off
}}
https://127.0.0.1:{PORTS["caddy"]} {{
  tls {cert} {key}
  reverse_proxy 127.0.0.1:{upstream}
}}
""")
        return subprocess.Popen(
            ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def hitch(ws: bool) -> subprocess.Popen[bytes]:
        upstream = UPSTREAM_WS if ws else UPSTREAM_HTTP
        pem = combined_pem()
        return subprocess.Popen(
            [
                "hitch",
                "--frontend",
                f"[127.0.0.1]:{PORTS['hitch']}",
                "--backend",
                f"[127.0.0.1]:{upstream}",
                "--workers",
                "1",
                "--user",
                "nobody",
                str(pem),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def local_ssl_proxy(ws: bool) -> subprocess.Popen[bytes]:
        upstream = UPSTREAM_WS if ws else UPSTREAM_HTTP
        return subprocess.Popen(
            [
                "local-ssl-proxy",
                "--source",
                str(PORTS["local-ssl-proxy"]),
                "--target",
                str(upstream),
                "--cert",
                str(cert),
                "--key",
                str(key),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def devtls_serve(
        ws: bool, name: str = "devtls", *extra: str, command: list[str] = devtls
    ) -> subprocess.Popen[bytes]:
        upstream = UPSTREAM_WS if ws else UPSTREAM_HTTP
        return subprocess.Popen(
            [*command, "serve", str(upstream), "--quiet", "--listen", f"127.0.0.1:{PORTS[name]}",
             "--cert", str(cert), "--key", str(key), *extra],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def devtls_baseline(name: str, executable: str) -> Callable[[bool], subprocess.Popen[bytes]]:
        return lambda ws: devtls_serve(ws, name, command=[executable])

    def devtls_two_workers(ws: bool) -> subprocess.Popen[bytes]:
        return devtls_serve(ws, "devtls-w2", "--workers", "2")

    available: dict[str, tuple[Callable[[bool], subprocess.Popen[bytes]], str]] = {
        "nginx": (nginx, "nginx"),
        "haproxy": (haproxy, "haproxy"),
        "caddy": (caddy, "caddy"),
        "hitch": (hitch, "hitch"),
        "local-ssl-proxy": (local_ssl_proxy, "local-ssl-proxy"),
        "devtls": (devtls_serve, devtls[0]),
        "devtls-w2": (devtls_two_workers, devtls[0]),
    }
    for name, executable in (baselines or {}).items():
        available[name] = (devtls_baseline(name, executable), executable)
    return {name: start for name, (start, binary) in available.items() if shutil.which(binary)}


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def measure(name: str, start: Callable[[bool], subprocess.Popen[bytes]], seconds: int) -> Result:
    port = PORTS[name]
    base = f"https://127.0.0.1:{port}"
    result = Result()
    proxy = start(False)
    try:
        wait_port(port)
        result.protocol = negotiated(port)
        wrk(base + "/", 1)  # warm-up
        cpu = cpu_seconds(proxy.pid)
        rate, p50, p99, total = wrk(base + "/", seconds)
        used = cpu_seconds(proxy.pid) - cpu
        result.figures.update({"req/s": rate, "p50 ms": p50, "p99 ms": p99,
                               "CPU us/req": used / total * 1e6})  # fmt: skip
        result.figures["new conn/s"] = wrk(base + "/", seconds, "-H", "Connection: close")[0]
        cpu = cpu_seconds(proxy.pid)
        handshakes, _ = s_time(port, seconds, "-new")
        used = cpu_seconds(proxy.pid) - cpu
        result.figures["CPU us/hs"] = used / handshakes * 1e6 if handshakes else float("nan")
        cpu = cpu_seconds(proxy.pid)
        resumed, took = s_time(port, seconds, "-reuse")
        used = cpu_seconds(proxy.pid) - cpu
        result.figures["resumed/s"] = resumed / took
        result.figures["CPU us/resumed"] = used / resumed * 1e6 if resumed else float("nan")
        result.figures["16KiB/s"] = wrk(base + "/16k", seconds)[0]
        # HTTP/1.1 for all: curl would take h2 where a peer offers it (devtls, Caddy).
        download = sh("curl", "-sk", "--http1.1", "-o", "/dev/null", "-w",
                      "%{http_code} %{speed_download}", base + "/100m").stdout.split()  # fmt: skip
        ok = len(download) == 2 and download[0] == "200"
        result.figures["MB/s"] = float(download[1]) / 1e6 if ok else float("nan")
        result.figures["KiB/idle conn"] = idle_memory(port, proxy.pid)
    finally:
        stop(proxy)
    proxy = start(True)
    try:
        wait_port(port)
        result.figures["WS rt/s"] = asyncio.run(ws_round_trips(port, seconds))
    except Exception as exc:
        print(f"{name}: websocket run failed: {exc}", file=sys.stderr)
    finally:
        stop(proxy)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", default="")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="another devtls executable, measured as devtls-base (NAME=PATH: as devtls-NAME)",
    )
    args = parser.parse_args()
    if args.install:
        install()
    for tool in ("nginx", "wrk", "curl"):
        if not shutil.which(tool):
            print(f"{tool} is missing: run with --install", file=sys.stderr)
            return 1
    devtls = [shutil.which("devtls") or str(Path(sys.executable).parent / "devtls")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "CAROOT": str(work / "ca")}
        cert, key = work / "leaf.pem", work / "leaf-key.pem"
        subprocess.run([*devtls, "cert", "--cert-file", str(cert), "--key-file", str(key),
                        "localhost", "127.0.0.1"], env=env, check=True, capture_output=True)  # fmt: skip
        os.environ["CAROOT"] = str(work / "ca")
        upstream = start_upstream(work)
        results: dict[str, Result] = {}
        try:
            baselines = {}
            for number, given in enumerate(args.baseline):
                label, sep, executable = given.rpartition("=")
                name = f"devtls-{label}" if sep else "devtls-base"
                PORTS.setdefault(name, PORTS["devtls-base"] + 1 + number)
                baselines[name] = executable
            for name, start in peers(work, cert, key, devtls, baselines).items():
                if args.only and name not in args.only.split(","):
                    continue
                print(f"measuring {name} ...", file=sys.stderr)
                results[name] = measure(name, start, args.seconds)
        finally:
            for process in upstream:
                stop(process)
    columns = ["req/s", "p50 ms", "p99 ms", "CPU us/req", "new conn/s", "CPU us/hs", "resumed/s",
               "CPU us/resumed", "16KiB/s", "WS rt/s", "MB/s", "KiB/idle conn"]  # fmt: skip
    print(f"{'proxy, TLS':24}" + "".join(f"{c:>15}" for c in columns))
    reference = results.get("nginx")
    for name, result in results.items():
        cells = []
        for column in columns:
            value = result.figures.get(column, float("nan"))
            ratio = ""
            if reference is not None and reference.figures.get(column):
                ratio = f" ({value / reference.figures[column]:.2f}x)"
            cells.append(f"{value:.0f}{ratio}" if value >= 10 else f"{value:.2f}{ratio}")
        print(f"{name + ' ' + result.protocol:24}" + "".join(f"{c:>15}" for c in cells))
    print("(ratios are to nginx with 1 worker, measured in this same run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
