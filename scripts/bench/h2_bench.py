"""HTTP/2 through devtls serve, Caddy and nginx, in one run, as ratios to Caddy.

Usage: python scripts/bench/h2_bench.py [--install] [--runs 3] [--seconds 5]
                                        [--only devtls,caddy] [--bench page,h2load]

--install puts the tools in place first (Debian: nghttp2-client, caddy, nginx-light, chromium,
libnss3-tools). Everything listens on 127.0.0.1; every wait and load loop is bounded. All
proxies serve the same RSA-2048 leaf for localhost and 127.0.0.1 (from a throwaway devtls CA),
as proxy_bench.py does. The peers:

  devtls      devtls serve UPSTREAM: ALPN h2 and http/1.1
  devtls-h1   devtls serve --http1-only UPSTREAM (skipped for a devtls without the flag)
  caddy       reverse_proxy, h1 and h2 (h3 off: the browser runs with --disable-quic)
  nginx       listen ... ssl + http2 (1 worker, as in proxy_bench.py)
  direct      the upstream itself over plain HTTP/1.1 (page load only)

Page load (what a developer feels): an asyncio upstream (in this script) serves a page whose
entry module imports 1,000 ES modules in all, in waves (a 10-ary tree, 4 levels deep: 1, 10,
100, 889), each answered 2 ms after it is asked for. Headless Chromium, a new profile each run,
trusts the leaf's CA for real (an NSS database in a temporary HOME, no certificate flags) and
is driven over the DevTools protocol. The figures:

  ALPN          what the peer picks when offered h2,http/1.1 (Python ssl probe)
  browser       nextHopProtocol of the 1,000 modules (resource timing)
  median ms     performance.now() when the entry module runs, i.e. when all 1,000 have run:
                navigation start to done, median of --runs cold loads (after one warm-up load)
  CPU ms/load   the proxy's own CPU time (/proc/PID/stat) during one page load, median

h2load (throughput): h2load -c 10 -m 10 -D --seconds (after a 1 s warm-up run) offering only
h2, for the 2-byte body of the nginx upstream of proxy_bench.py. A peer that does not pick h2
shows "no h2". The figures:

  h2load        the application protocol h2load reports
  req/s         requests per second, median of --runs
  CPU us/req    the proxy's own CPU time per request in that run, median of --runs

Ratios are to Caddy measured in the same run; the targets for devtls (with h2) are a page load
at most 1.0x Caddy's and nginx's, and at least 1.0x Caddy's req/s at no more CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import (
    UPSTREAM_HTTP,
    cpu_seconds,
    sh,
    start_upstream,
    stop,
    wait_port,
)

UPSTREAM_PAGE = 18090
PORTS = {"devtls": 19541, "devtls-h1": 19542, "caddy": 19543, "nginx": 19544}
MODULES = 1000
FANOUT = 10
MODULE_DELAY = 0.002
PAGE_TIMEOUT = 60.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
APT_PACKAGES = ["nghttp2-client", "caddy", "nginx-light", "chromium", "libnss3-tools"]

Start = Callable[[int], subprocess.Popen[bytes]]


# The page upstream ---------------------------------------------------------------------------


def children(module: int) -> range:
    """The modules ``module`` imports: a complete 10-ary tree numbered breadth first."""
    return range(FANOUT * module + 1, min(FANOUT * module + FANOUT + 1, MODULES))


def module_source(module: int) -> bytes:
    lines = [f'import "/m/{child}.js";' for child in children(module)]
    lines.append("globalThis.__count = (globalThis.__count || 0) + 1;")
    if module == 0:  # the entry runs after every module it imports, directly or not
        lines.append('window.__done = performance.now(); document.title = "done";')
    lines.append(f"export const m{module} = {module};")
    return "\n".join(lines).encode() + b"\n"


PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>loading</title>
<script>performance.setResourceTimingBufferSize(5000);</script>
<script type="module" src="/m/0.js"></script></head><body>1,000 modules</body></html>
"""


class PageUpstream(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, one request at a time per connection; modules 2 ms late."""

    routes: ClassVar[dict[str, tuple[bytes, bytes]]] = {
        "/": (b"text/html; charset=utf-8", PAGE),
        **{f"/m/{i}.js": (b"text/javascript", module_source(i)) for i in range(MODULES)},
    }

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.next_request()

    def next_request(self) -> None:
        if self.waiting or self.transport is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > 65536:
                self.transport.close()
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        parts = lines[0].split(" ")
        if len(parts) != 3 or "transfer-encoding" in headers:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return
        length = int(headers.get("content-length") or 0)
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        keep = parts[2] == "HTTP/1.1" and "close" not in headers.get("connection", "")
        path = parts[1].split("?", 1)[0]
        self.waiting = True
        if path.startswith("/m/"):
            asyncio.get_running_loop().call_later(MODULE_DELAY, self.answer, path, keep)
        else:
            self.answer(path, keep)

    def answer(self, path: str, keep: bool) -> None:
        self.waiting = False
        if self.transport is None or self.transport.is_closing():
            return
        kind, body = self.routes.get(path, (b"text/plain", b"not found\n"))
        status = b"200 OK" if path in self.routes else b"404 Not Found"
        self.transport.write(
            b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-store\r\n%s\r\n%s"
            % (status, kind, len(body), b"" if keep else b"Connection: close\r\n", body)
        )
        if keep:
            self.next_request()
        else:
            self.transport.close()


def serve_page(port: int) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(PageUpstream, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


def start_page_upstream() -> subprocess.Popen[bytes]:
    upstream = subprocess.Popen([sys.executable, __file__, "--serve-page", str(UPSTREAM_PAGE)])
    wait_port(UPSTREAM_PAGE)
    return upstream


# The peers ------------------------------------------------------------------------------------


def install() -> None:
    sh("apt-get", "update", "-qq")
    result = sh("apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=600", *APT_PACKAGES)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)


def make_leaf(work: Path, devtls: list[str]) -> tuple[Path, Path, Path]:
    """One RSA-2048 leaf for localhost and 127.0.0.1 from a throwaway CA: cert, key, CA cert."""
    cert, key = work / "leaf.pem", work / "leaf-key.pem"
    env = {**os.environ, "CAROOT": str(work / "ca")}
    subprocess.run([*devtls, "cert", "--cert-file", str(cert), "--key-file", str(key),
                    "localhost", "127.0.0.1"], env=env, check=True, capture_output=True)  # fmt: skip
    return cert, key, work / "ca" / "rootCA.pem"


def nginx_version() -> tuple[int, ...]:
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", sh("nginx", "-v").stderr)
    return tuple(int(part) for part in match.groups()) if match else (0,)


def devtls_has(devtls: list[str], option: str) -> bool:
    return option in sh(*devtls, "serve", "--help", env={**os.environ, "COLUMNS": "200"}).stdout


def peers(work: Path, cert: Path, key: Path, devtls: list[str]) -> dict[str, Start]:
    """How to start each proxy in front of an upstream port; those whose program is missing
    (or, for devtls-h1, whose flag is) are left out."""
    # "http2 on;" is nginx 1.25.1+; before it (Debian 12 has 1.22) http2 is a listen parameter.
    # nginx ends an h2 connection after keepalive_requests (1,000): h2load would stop there and
    # the browser would open a second connection for its last modules. 100 streams at once
    # (h2load -c 10 -m 10) need more than proxy_bench.py's 64 idle upstream connections.
    http2_on = nginx_version() >= (1, 25, 1)

    def nginx(upstream: int) -> subprocess.Popen[bytes]:
        conf = work / f"nginx-{upstream}.conf"
        listen = f"listen 127.0.0.1:{PORTS['nginx']} ssl{'' if http2_on else ' http2'};"
        conf.write_text(f"""
worker_processes 1; pid {work}/nginx-{upstream}.pid; error_log {work}/nginx.err; daemon off;
events {{ worker_connections 8192; }}
http {{ access_log off;
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 256; }}
  server {{ {listen} {"http2 on;" if http2_on else ""} keepalive_requests 100000000;
    ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:S:10m;
    location / {{ proxy_pass http://app; proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_buffering off; }} }} }}
""")
        return subprocess.Popen(["nginx", "-c", str(conf)])

    def caddy(upstream: int) -> subprocess.Popen[bytes]:
        conf = work / f"Caddyfile-{upstream}"
        conf.write_text(f"""{{
  admin off
  auto_https off
  servers {{
    protocols h1 h2
  }}
}}
https://127.0.0.1:{PORTS["caddy"]} {{
  tls {cert} {key}
  reverse_proxy 127.0.0.1:{upstream}
}}
""")
        env = {
            **os.environ,
            "XDG_DATA_HOME": str(work / "xdg"),
            "XDG_CONFIG_HOME": str(work / "xdg"),
        }
        return subprocess.Popen(
            ["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    def devtls_serve(upstream: int, name: str = "devtls", *extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*devtls, "serve", str(upstream), "--quiet", "--listen", f"127.0.0.1:{PORTS[name]}",
             "--cert", str(cert), "--key", str(key), *extra],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def devtls_http1(upstream: int) -> subprocess.Popen[bytes]:
        return devtls_serve(upstream, "devtls-h1", "--http1-only")

    available: dict[str, tuple[Start, bool]] = {
        "devtls": (devtls_serve, True),
        "devtls-h1": (devtls_http1, devtls_has(devtls, "--http1-only")),
        "caddy": (caddy, shutil.which("caddy") is not None),
        "nginx": (nginx, shutil.which("nginx") is not None),
    }
    if not available["devtls-h1"][1]:
        print("devtls-h1: skipped, `devtls serve --help` lists no --http1-only", file=sys.stderr)
    return {name: start for name, (start, present) in available.items() if present}


def alpn(port: int) -> str:
    """The protocol the peer picks when a client offers h2 and http/1.1."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            return tls.selected_alpn_protocol() or "none"
    except OSError as exc:
        return f"error: {exc}"


def start_all(
    starts: dict[str, Start], upstream: int, alpns: dict[str, str]
) -> dict[str, subprocess.Popen[bytes]]:
    """Start every peer in front of ``upstream``; note in ``alpns`` what each picks."""
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, start in starts.items():
            running[name] = start(upstream)
            wait_port(PORTS[name])
            alpns.setdefault(name, alpn(PORTS[name]))
    except BaseException:
        stop_all(running)
        raise
    return running


def stop_all(running: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in running.values():
        stop(process)


# Page load in Chromium -------------------------------------------------------------------------


@dataclass
class Load:
    ms: float = float("nan")
    protocol: str = "?"
    error: str = ""
    cpu_ms: float = float("nan")


def trust_home(work: Path, ca: Path) -> Path:
    """A HOME whose NSS database (the one Chromium reads on Linux) trusts ``ca``."""
    home = work / "home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-n", "devtls", "-t", "C,,",
                    "-i", str(ca)], check=True, capture_output=True)  # fmt: skip
    return home


class Cdp:
    """Just enough of the Chrome DevTools Protocol: one call at a time, events ignored."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.last_id = 0

    async def call(self, method: str, timeout: float = 30, **params: object) -> dict[str, Any]:
        self.last_id += 1
        ident = self.last_id
        await self.websocket.send(json.dumps({"id": ident, "method": method, "params": params}))

        async def answer() -> dict[str, Any]:
            while True:
                message = json.loads(await self.websocket.recv())
                if message.get("id") == ident:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return cast(dict[str, Any], message["result"])

        return await asyncio.wait_for(answer(), timeout)

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page; a RuntimeError if it threw or the page
        had no context yet."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(str(result["exceptionDetails"].get("text")))
        return result["result"].get("value")


RESULTS_JS = """(() => {
  const modules = performance.getEntriesByType("resource").filter(e => e.name.includes("/m/"));
  const protocols = {};
  for (const e of modules) protocols[e.nextHopProtocol] = (protocols[e.nextHopProtocol] || 0) + 1;
  return {done: window.__done, count: globalThis.__count, modules: modules.length, protocols};
})()"""


def devtools_target(profile: Path, browser: subprocess.Popen[bytes]) -> str:
    """The websocket address of the browser's first page, once DevTools listens."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise RuntimeError(f"chromium exited with {browser.returncode}")
        active = profile / "DevToolsActivePort"
        if active.exists() and active.read_text().strip():
            port = active.read_text().split()[0]
            with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        time.sleep(0.05)
    raise RuntimeError("chromium's DevTools did not come up")


async def drive(target: str, url: str) -> Load:
    import websockets

    async with websockets.connect(target, max_size=None, proxy=None) as ws:
        cdp = Cdp(ws)
        navigation = await cdp.call("Page.navigate", url=url)
        if navigation.get("errorText"):
            return Load(error=str(navigation["errorText"]))
        deadline = time.monotonic() + PAGE_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):  # the old document's context may be gone
                if await cdp.evaluate("typeof window.__done === 'number'"):
                    break
            await asyncio.sleep(0.02)
        else:
            state = "?"
            with contextlib.suppress(RuntimeError):
                state = await cdp.evaluate("`${document.title}, ${globalThis.__count} modules ran`")
            return Load(error=f"not done after {PAGE_TIMEOUT:.0f} s ({state})")
        found = await cdp.evaluate(RESULTS_JS)
    assert isinstance(found, dict)
    if found["count"] != MODULES or found["modules"] != MODULES:
        return Load(error=f"{found['count']} modules ran, {found['modules']} timed")
    seen = sorted(found["protocols"].items(), key=lambda item: -item[1])
    protocol = seen[0][0] if len(seen) == 1 else " ".join(f"{p}:{n}" for p, n in seen)
    return Load(ms=float(found["done"]), protocol=protocol)


def page_load(url: str, home: Path, work: Path, proxy: subprocess.Popen[bytes] | None) -> Load:
    """One cold load of ``url`` in a new Chromium with a new profile."""
    profile = Path(tempfile.mkdtemp(dir=work, prefix="profile-"))
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(profile / "config"),
           "XDG_CACHE_HOME": str(profile / "cache")}  # fmt: skip
    with (work / "chromium.log").open("ab") as log:
        browser = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=log, stderr=log, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        target = devtools_target(profile, browser)
        cpu = cpu_seconds(proxy.pid) if proxy else 0.0
        load = asyncio.run(drive(target, url))
        if proxy:
            load.cpu_ms = (cpu_seconds(proxy.pid) - cpu) * 1000
        return load
    except Exception as exc:
        return Load(error=f"{type(exc).__name__}: {exc}")
    finally:
        stop(browser)
        with contextlib.suppress(ProcessLookupError):  # its helpers, in the session it leads
            os.killpg(browser.pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)


def page_bench(
    starts: dict[str, Start], work: Path, home: Path, runs: int, direct: bool, alpns: dict[str, str]
) -> dict[str, list[Load]]:
    upstream = start_page_upstream()
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        running = start_all(starts, UPSTREAM_PAGE, alpns)
        urls = {name: f"https://127.0.0.1:{PORTS[name]}/" for name in running}
        if direct:
            urls["direct"] = f"http://127.0.0.1:{UPSTREAM_PAGE}/"
        names = list(urls)
        loads: dict[str, list[Load]] = {name: [] for name in names}
        for round_ in range(
            runs + 1 if names else 0
        ):  # round 0 warms up the proxies and the page cache
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                load = page_load(urls[name], home, work, running.get(name))
                print(f"page {name} run {round_ or 'warm-up'}: "
                      f"{load.error or f'{load.ms:.0f} ms {load.protocol}'}", file=sys.stderr)  # fmt: skip
                if round_:
                    loads[name].append(load)
        return loads
    finally:
        stop_all(running)
        stop(upstream)


# h2load ----------------------------------------------------------------------------------------


@dataclass
class Throughput:
    protocol: str = "?"
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    error: str = ""


def h2load(url: str, seconds: int) -> tuple[str, float, int, str]:
    """One h2load run offering only h2: the protocol, req/s, requests that succeeded, and the
    reason when there were none."""
    usage = sh("h2load", "--help").stdout
    alpn_option = "--alpn-list" if "--alpn-list" in usage else "--npn-list"
    length = ["-D", str(seconds)] if "--duration" in usage else ["-n", str(20000 * seconds)]
    try:
        done = sh("h2load", "-c", "10", "-m", "10", *length, f"{alpn_option}=h2", url,
                  timeout=seconds + 60)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "?", 0.0, 0, "h2load did not finish"
    out = done.stdout + done.stderr
    protocol = re.search(r"Application protocol: (\S+)", out)
    rate = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    succeeded = re.search(r"(\d+) succeeded", out)
    name = protocol.group(1) if protocol else "no h2"
    if rate and succeeded and int(succeeded.group(1)) > 0:
        return name, float(rate.group(1)), int(succeeded.group(1)), ""
    lines = [line for line in out.splitlines() if re.search(r"(?i)fail|error|refused", line)]
    if "No supported protocol was negotiated" in out:
        lines.insert(0, "ALPN: the peer picked nothing of h2")
    return name, 0.0, 0, lines[0].strip() if lines else f"h2load exited with {done.returncode}"


def h2load_bench(
    starts: dict[str, Start], work: Path, runs: int, seconds: int, alpns: dict[str, str]
) -> dict[str, Throughput]:
    upstream = start_upstream(work)  # proxy_bench.py's: nginx answering "ok" on UPSTREAM_HTTP
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        running = start_all(starts, UPSTREAM_HTTP, alpns)
        results = {name: Throughput() for name in running}
        for name, result in results.items():  # warm-up, and who speaks h2 at all
            result.protocol, _, _, result.error = h2load(f"https://127.0.0.1:{PORTS[name]}/", 1)
            if result.error:
                print(f"h2load {name}: {result.error}", file=sys.stderr)
        names = [name for name, result in results.items() if not result.error]
        for round_ in range(runs if names else 0):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                proxy, result = running[name], results[name]
                cpu = cpu_seconds(proxy.pid)
                protocol, rate, total, error = h2load(f"https://127.0.0.1:{PORTS[name]}/", seconds)
                used = cpu_seconds(proxy.pid) - cpu
                print(f"h2load {name} run {round_ + 1}: "
                      f"{error or f'{rate:.0f} req/s {protocol}'}", file=sys.stderr)  # fmt: skip
                if total:
                    result.rates.append(rate)
                    result.cpu_us.append(used / total * 1e6)
        return results
    finally:
        stop_all(running)
        for process in upstream:
            stop(process)


# Report ----------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference == reference and reference else "-"


def report_page(loads: dict[str, list[Load]], alpns: dict[str, str]) -> None:
    medians = {
        name: median([load.ms for load in each if not load.error]) for name, each in loads.items()
    }
    caddy, nginx = medians.get("caddy", float("nan")), medians.get("nginx", float("nan"))
    print(f"\nPage load: 1 page + {MODULES} ES modules, {MODULE_DELAY * 1000:.0f} ms each "
          f"upstream, cold headless Chromium")  # fmt: skip
    print(f"{'peer':11}{'ALPN':>10}{'browser':>11}{'median ms':>11}{'/caddy':>8}{'/nginx':>8}"
          f"{'CPU ms/load':>13}  runs ms")  # fmt: skip
    for name, each in loads.items():
        good = [load for load in each if not load.error]
        protocol = good[0].protocol if good else "-"
        cpu = median([load.cpu_ms for load in good if load.cpu_ms == load.cpu_ms])
        runs = " ".join(f"{load.ms:.0f}" if not load.error else "fail" for load in each)
        print(f"{name:11}{alpns.get(name, 'plain'):>10}{protocol:>11}{medians[name]:>11.0f}"
              f"{ratio(medians[name], caddy):>8}{ratio(medians[name], nginx):>8}"
              f"{f'{cpu:.1f}' if cpu == cpu else '-':>13}  {runs}")  # fmt: skip
        for load in each:
            if load.error:
                print(f"  {name}: {load.error}")
    if "devtls" in loads:
        seen = next((load.protocol for load in loads["devtls"] if not load.error), "?")
        note = "" if seen == "h2" else f" (devtls gave the browser {seen}, not h2)"
        print(f"devtls/caddy {ratio(medians['devtls'], caddy)}, devtls/nginx "
              f"{ratio(medians['devtls'], nginx)} (targets: at most 1.00x){note}")  # fmt: skip


def report_h2load(results: dict[str, Throughput], alpns: dict[str, str], seconds: int) -> None:
    rates = {name: median(result.rates) for name, result in results.items()}
    cpus = {name: median(result.cpu_us) for name, result in results.items()}
    print(f"\nh2load -c 10 -m 10, {seconds} s, h2 only, 2-byte body from an nginx upstream")
    print(f"{'peer':11}{'ALPN':>10}{'h2load':>8}{'req/s':>10}{'/caddy':>8}{'CPU us/req':>12}"
          f"{'/caddy':>8}  runs req/s")  # fmt: skip
    caddy_rate, caddy_cpu = rates.get("caddy", float("nan")), cpus.get("caddy", float("nan"))
    for name, result in results.items():
        if not result.rates:
            print(f"{name:11}{alpns.get(name, '?'):>10}{'no h2':>8}  {result.error}")
            continue
        runs = " ".join(f"{rate:.0f}" for rate in result.rates)
        print(f"{name:11}{alpns.get(name, '?'):>10}{result.protocol:>8}{rates[name]:>10.0f}"
              f"{ratio(rates[name], caddy_rate):>8}{cpus[name]:>12.1f}"
              f"{ratio(cpus[name], caddy_cpu):>8}  {runs}")  # fmt: skip
    if "devtls" in results:
        if results["devtls"].rates:
            print(f"devtls/caddy req/s {ratio(rates['devtls'], caddy_rate)} (target: at least "
                  f"1.00x), CPU/req {ratio(cpus['devtls'], caddy_cpu)} (target: at most 1.00x)")  # fmt: skip
        else:
            print("devtls: no h2, so no h2load figures")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", default="", help="peers, e.g. devtls,caddy,nginx,direct")
    parser.add_argument("--bench", default="page,h2load", help="page, h2load or both")
    parser.add_argument("--serve-page", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_page:
        serve_page(args.serve_page)
        return 0
    if args.install:
        install()
    benches = set(args.bench.split(","))
    only = set(args.only.split(",")) if args.only else None
    if not benches <= {"page", "h2load"} or args.runs < 1 or args.seconds < 1:
        parser.error("--bench takes page and/or h2load; --runs and --seconds at least 1")
    if only and only - {*PORTS, "direct"}:
        parser.error(f"--only takes some of {', '.join([*PORTS, 'direct'])}")
    if os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f} before the start: something else "
              "runs, the figures will be noisy", file=sys.stderr)  # fmt: skip
    needed = {"page": ["certutil", CHROMIUM], "h2load": ["h2load", "nginx"]}
    if "page" in benches and importlib.util.find_spec("websockets") is None:
        print("the websockets package is missing: pip install -e '.[test]'", file=sys.stderr)
        return 1
    for bench in benches:
        for tool in needed.get(bench, []):
            if not shutil.which(tool):
                print(f"{tool} is missing: run with --install", file=sys.stderr)
                return 1
    sibling = Path(sys.executable).parent / "devtls"
    devtls = [str(sibling) if sibling.exists() else shutil.which("devtls") or "devtls"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx workers run as nobody
        cert, key, ca = make_leaf(work, devtls)
        starts = {name: start for name, start in peers(work, cert, key, devtls).items()
                  if only is None or name in only}  # fmt: skip
        alpns: dict[str, str] = {}
        loads: dict[str, list[Load]] = {}
        results: dict[str, Throughput] = {}
        if "page" in benches:
            home = trust_home(work, ca)
            direct = only is None or "direct" in only
            loads = page_bench(starts, work, home, args.runs, direct, alpns)
        if "h2load" in benches:
            h2_starts = {name: start for name, start in starts.items() if name != "devtls-h1"}
            results = h2load_bench(h2_starts, work, args.runs, args.seconds, alpns)
    print(f"{sh(*devtls, '--version').stdout.strip()}, nginx {'.'.join(map(str, nginx_version()))}, "
          f"caddy {sh('caddy', 'version').stdout.split(' ')[0].strip()}, "
          f"{sh('h2load', '--version').stdout.strip()}, "
          f"{sh(CHROMIUM, '--version').stdout.strip()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    if loads:
        report_page(loads, alpns)
    if results:
        report_h2load(results, alpns, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
