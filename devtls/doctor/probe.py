"""Real clients against a throwaway TLS server: does each runtime trust a devtls leaf?

The server listens on 127.0.0.1 only, for the length of the check, with a leaf minted in
memory (nothing is written to disk). The clients (node, curl, wget, the ``python3`` on PATH
with ssl, requests and httpx) run side by side with the user's environment, except the proxy
variables: the question is trust, not how to reach 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

# A client needs one connection (two if it retries); more than this is not one of ours.
MAX_CONNECTIONS = 32
MAX_HEAD = 64 * 1024
PROXY_VARIABLES = frozenset(
    name
    for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for name in (base, base.upper())
)

NODE_SCRIPT = """
const https = require('https');
https.get(process.argv[1], {timeout: %d}, (r) => { r.resume(); console.log('ok'); })
  .on('timeout', function () { console.log('timed out'); this.destroy(); process.exitCode = 1; })
  .on('error', (e) => { console.log(e.code || e.message); process.exitCode = 1; });
"""

PYTHON_SCRIPT = """
import json, ssl, sys, urllib.request
url, timeout = sys.argv[1], float(sys.argv[2])
def report(client, error=None, **extra):
    print(json.dumps({"client": client, "ok": error is None, "error": error, **extra}))
def reason(exc):
    todo, seen = [exc], 0
    while todo and seen < 20:
        error, seen = todo.pop(0), seen + 1
        if isinstance(error, ssl.SSLCertVerificationError):
            return error.verify_message or str(error)
        linked = (getattr(error, "reason", None), error.__cause__, error.__context__, *error.args)
        todo += [e for e in linked if isinstance(e, BaseException)]
    return f"{type(exc).__name__}: {exc}"[:300]
paths = ssl.get_default_verify_paths()
try:
    urllib.request.urlopen(url, timeout=timeout).read()
    report("python-ssl", cafile=paths.cafile or paths.openssl_cafile)
except Exception as exc:
    report("python-ssl", reason(exc), cafile=paths.cafile or paths.openssl_cafile)
for module in ("requests", "httpx"):
    try:
        lib = __import__(module)
    except Exception:
        report(module, "not installed", missing=True)
        continue
    try:
        import certifi
        where = certifi.where()
    except Exception:
        where = None
    try:
        lib.get(url, timeout=timeout)
        report(module, certifi=where, version=getattr(lib, "__version__", ""))
    except Exception as exc:
        report(module, reason(exc), certifi=where, version=getattr(lib, "__version__", ""))
"""


@dataclass(frozen=True)
class Outcome:
    client: str
    ok: bool
    detail: str
    extra: Mapping[str, object]


class ProbeServer:
    """Accepts TLS on 127.0.0.1 with ``context``, answers each request with a tiny 200."""

    def __init__(self, context: ssl.SSLContext, timeout: float) -> None:
        self.context = context
        self.timeout = timeout
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def __enter__(self) -> ProbeServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout)
        self.listener.close()

    def _accept(self) -> None:
        for _ in range(MAX_CONNECTIONS):
            while not self._stop.is_set():
                try:
                    raw, _ = self.listener.accept()
                    break
                except TimeoutError:
                    continue
                except OSError:
                    return
            else:
                return
            threading.Thread(target=self._answer, args=(raw,), daemon=True).start()

    def _answer(self, raw: socket.socket) -> None:
        raw.settimeout(self.timeout)
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < MAX_HEAD:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                tls.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n"
                    b"Connection: close\r\n\r\ndevtls doctor\n"
                )
        except (OSError, ssl.SSLError):
            pass  # a client that rejects the certificate closes the handshake


def client_commands(
    which: Mapping[str, str | None], url: str, timeout: float
) -> dict[str, list[str]]:
    """The command of each client that is installed."""
    commands: dict[str, list[str]] = {}
    if which.get("node"):
        commands["node"] = [str(which["node"]), "-e", NODE_SCRIPT % (timeout * 1000), url]
    if which.get("curl"):
        commands["curl"] = [
            str(which["curl"]),
            "-sS",
            "-o",
            os.devnull,
            "--max-time",
            f"{timeout:g}",
            url,
        ]
    if which.get("wget"):
        # --no-hsts: wget would otherwise write its HSTS database into HOME.
        commands["wget"] = [
            str(which["wget"]), "--no-verbose", "--no-hsts", "-O", os.devnull, "--tries=1",
            f"--timeout={timeout:g}", url,
        ]  # fmt: skip
    if which.get("python3"):
        commands["python"] = [str(which["python3"]), "-c", PYTHON_SCRIPT, url, f"{timeout:g}"]
    return commands


def run_clients(
    commands: Mapping[str, list[str]], env: Mapping[str, str], timeout: float
) -> dict[str, tuple[int, str]]:
    """Start every client at once; each gets ``timeout`` (and a second to start)."""
    clean = {k: v for k, v in env.items() if k not in PROXY_VARIABLES}
    clean["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ written into site-packages
    started: dict[str, subprocess.Popen[bytes]] = {}
    results: dict[str, tuple[int, str]] = {}
    for name, args in commands.items():
        try:
            started[name] = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=clean,
                cwd="/",
            )
        except OSError as exc:
            results[name] = (127, str(exc))
    deadline = time.monotonic() + timeout + 1.0
    for name, process in started.items():
        try:
            output, _ = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
            results[name] = (process.returncode, output.decode("utf-8", "replace"))
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            results[name] = (124, f"no answer within {timeout:g} s")
    return results


def python_outcomes(code: int, output: str) -> list[Outcome]:
    """The JSON lines of the python3 probe; anything else is one failed outcome."""
    outcomes: list[Outcome] = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("client"), str):
            detail = str(entry.get("error") or "")
            outcomes.append(Outcome(entry["client"], bool(entry.get("ok")), detail, entry))
    if not outcomes:
        # python3 did not get to run the probe at all (a broken shim, a too old Python).
        detail = output.strip()[-300:] or f"exit status {code}"
        outcomes.append(Outcome("python-ssl", False, detail, {"broken": True}))
    return outcomes
