"""`devtls serve` as a user runs it: a real process, its banner, signals and exit codes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_tool, run, wait_for
from tests.routerprocess import http_upstream


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SlowHandler(BaseHTTPRequestHandler):
    """/slow answers after 1.5 s, /sleep/SECONDS after that long (``started`` is set when such
    a request came), anything else at once."""

    started = threading.Event()

    def do_GET(self) -> None:
        body = b"hello from upstream"
        if self.path.startswith("/sleep/"):
            SlowHandler.started.set()
            time.sleep(float(self.path.rsplit("/", 1)[1]))
            body = b"slept"
        elif self.path.startswith("/slow"):
            time.sleep(1.5)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream_port() -> Iterator[int]:
    with http_upstream(SlowHandler) as port:
        yield port


@contextmanager
def serving(
    *args: str, caroot: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    env = {**os.environ, "CAROOT": str(caroot), **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "devtls", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "->" in line or "demo page" in line:
            break
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        process.stdout.close()


def test_banner_request_and_sigterm_exit_0(session_ca_dir: Path, upstream_port: int) -> None:
    port = free_port()
    with serving(str(upstream_port), "--listen", f"127.0.0.1:{port}", caroot=session_ca_dir) as (
        process,
        lines,
    ):
        assert lines[-1] == f"devtls: https://localhost:{port} -> http://localhost:{upstream_port}"
        curl = require_tool("curl")
        out = run(
            curl, "-sS", "--cacert", session_ca_dir / "rootCA.pem", f"https://localhost:{port}/"
        )
        assert out.stdout == "hello from upstream"
        # A request in flight when the signal comes is still answered.
        slow = subprocess.Popen(
            [
                curl,
                "-sS",
                "--cacert",
                str(session_ca_dir / "rootCA.pem"),
                f"https://localhost:{port}/slow",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 10
        assert slow.communicate(timeout=10)[0] == "hello from upstream"
    assert process.returncode == 0


def test_the_tcp_banner_names_the_upstream_as_tcp_not_http(session_ca_dir: Path) -> None:
    port = free_port()
    args = ("--tcp", "5432", "--listen", f"127.0.0.1:{port}")
    with serving(*args, caroot=session_ca_dir) as (process, lines):
        assert lines[-1] == f"devtls: tcp+tls://localhost:{port} -> tcp://localhost:5432"
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0


def test_sigint_exits_0(session_ca_dir: Path) -> None:
    port = free_port()
    with serving("--listen", f"127.0.0.1:{port}", caroot=session_ca_dir) as (process, lines):
        assert lines[-1] == f"devtls: serving the demo page at https://localhost:{port}/"
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0


def listening_addresses(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_default_listen_address_is_loopback_only(session_ca_dir: Path, upstream_port: int) -> None:
    if listening_addresses(8443):
        message = "port 8443 is taken on this machine"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with serving(str(upstream_port), caroot=session_ca_dir) as (process, lines):
        assert lines[-1].startswith("devtls: https://localhost:8443 ->")
        assert listening_addresses(8443) == {"0100007F"}  # 127.0.0.1, nothing else
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


@pytest.mark.parametrize(
    "extra",
    [
        [],
        pytest.param(
            ["--workers", "2"],
            marks=pytest.mark.skipif(sys.platform != "linux", reason="--workers is Linux only"),
        ),
    ],
)
def test_port_in_use_is_one_line_exit_1(session_ca_dir: Path, extra: list[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "devtls",
                "serve",
                "3000",
                "--listen",
                f"127.0.0.1:{port}",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "CAROOT": str(session_ca_dir)},
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "already in use" in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--route", "nohost"], "HOST[/PATH]=UPSTREAM"),
        (["--listen", "8443"], "has no port"),
        (["ftp://x"], "not supported"),
        (["--limit", "nope=1"], "known NAME"),
    ],
)
def test_bad_settings_are_one_line_exit_2(
    session_ca_dir: Path, args: list[str], words: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtls", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "CAROOT": str(session_ca_dir)},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr


def test_sigterm_with_an_open_websocket_exits_at_once(session_ca_dir: Path) -> None:
    import asyncio
    import ssl

    import websockets

    port = free_port()
    with serving("--listen", f"127.0.0.1:{port}", caroot=session_ca_dir) as (process, _lines):
        context = ssl.create_default_context(cafile=str(session_ca_dir / "rootCA.pem"))

        async def hold_socket() -> float:
            async with websockets.connect(f"wss://localhost:{port}/ws", ssl=context) as ws:
                await ws.send("hi")
                await ws.recv()
                process.send_signal(signal.SIGTERM)
                started = time.monotonic()
                with contextlib.suppress(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                return time.monotonic() - started

        closed_after = asyncio.run(hold_socket())
        assert process.wait(10) == 0
        # Well below the 10 s drain timeout: tunnels are not waited for.
        assert closed_after < 5


@pytest.mark.parametrize("choice", ["", "asyncio"])
def test_event_loop_is_uvloop_unless_asked_for_asyncio(
    monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    import asyncio

    from devtls.proxy.server import new_event_loop

    monkeypatch.setenv("DEVTLS_EVENT_LOOP", choice)
    loop = new_event_loop()
    try:
        kind = type(loop).__module__.split(".")[0]
    finally:
        loop.close()
    if choice == "asyncio" or sys.platform == "win32":
        assert kind == "asyncio"
    else:
        # uvloop is a dependency wherever it builds; CI must have it.
        assert kind == "uvloop"
    assert isinstance(loop, asyncio.AbstractEventLoop)


def child_pids(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == parent:
                    found.append(int(entry.name))
    return found


def established_on(port: int, pid: int) -> int:
    """How many established TCP connections to local ``port`` process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


def exited(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="--workers is Linux only")


@linux_only
def test_workers_share_the_port_and_stop_together(session_ca_dir: Path, upstream_port: int) -> None:
    args = (str(upstream_port), "--listen", "127.0.0.1:0", "--workers", "3", "--quiet")
    with serving(*args, caroot=session_ca_dir) as (process, lines):
        port = int(lines[-1].split("localhost:")[1].split()[0])
        assert wait_for(lambda: len(child_pids(process.pid)) == 2)
        workers = [process.pid, *child_pids(process.pid)]
        context = ssl.create_default_context(cafile=str(session_ca_dir / "rootCA.pem"))
        held = []
        try:
            for _ in range(30):
                tls = context.wrap_socket(
                    socket.create_connection(("127.0.0.1", port)), server_hostname="localhost"
                )
                held.append(tls)
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                answer = b""
                while not answer.endswith(b"hello from upstream"):
                    piece = tls.recv(65536)
                    assert piece, answer
                    answer += piece
            # The kernel spread the 30 connections over the three processes.
            assert all(established_on(port, pid) > 0 for pid in workers)
        finally:
            for tls in held:
                tls.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        assert not [pid for pid in workers[1:] if Path(f"/proc/{pid}").exists()]


@linux_only
def test_workers_stop_when_their_parent_is_killed(session_ca_dir: Path) -> None:
    with serving("--listen", "127.0.0.1:0", "--workers", "2", caroot=session_ca_dir) as (
        process,
        _,
    ):
        assert wait_for(lambda: len(child_pids(process.pid)) == 1)
        (worker,) = child_pids(process.pid)
        process.kill()
        process.wait(10)
        # Re-parented, it stops within the orphan check and a drain (a zombie if its new
        # parent does not reap, as in some containers).
        assert wait_for(lambda: exited(worker), 15)


def get_with_session(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None
) -> ssl.SSLSocket:
    tls = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port)), server_hostname="localhost", session=session
    )
    tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    while tls.recv(65536):  # to the end: the session ticket comes after the handshake
        pass
    return tls


@linux_only
def test_sessions_resume_on_every_worker(session_ca_dir: Path, upstream_port: int) -> None:
    args = (str(upstream_port), "--listen", "127.0.0.1:0", "--workers", "3", "--quiet")
    with serving(*args, caroot=session_ca_dir) as (process, lines):
        port = int(lines[-1].split("localhost:")[1].split()[0])
        context = ssl.create_default_context(cafile=str(session_ca_dir / "rootCA.pem"))
        first = get_with_session(port, context, None)
        session = first.session
        first.close()
        resumed = []
        for _ in range(12):  # with three workers, some of these reach another worker
            tls = get_with_session(port, context, session)
            resumed.append(tls.session_reused)
            tls.close()
        assert all(resumed)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0


WITHOUT_PACKAGE = """
import socket, sys
# As if the package were not installed: importing it raises ModuleNotFoundError.
sys.modules[sys.argv.pop(1)] = None
real_listen = socket.socket.listen
def listen(self, *args):
    print("LISTENED", file=sys.stderr)
    return real_listen(self, *args)
socket.socket.listen = listen
from devtls.cli import main
sys.argv = ["devtls", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("missing", ["acme", "josepy"])
def test_acme_without_the_extra_is_one_line_before_listening(tmp_path: Path, missing: str) -> None:
    port = free_port()
    caroot = tmp_path / "ca"
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PACKAGE, missing, "serve", "3000", "--acme",
         "--acme-agree-tos", "--acme-host", "a.test", "--acme-http", f"127.0.0.1:{free_port()}",
         "--listen", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "CAROOT": str(caroot), "DEVTLS_EVENT_LOOP": "asyncio"},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"devtls: error: --acme needs the {missing!r} package, which is not installed; "
        "run: pip install 'devtls[acme]'"
    ]
    assert result.stdout == ""
    assert not caroot.exists()  # not even a CA was created


# -- stopping: a second signal cuts the drain short; the last request ending ends the process --


@pytest.fixture
def sleepy_port() -> Iterator[int]:
    SlowHandler.started.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class InFlight(threading.Thread):
    """One request through devtls in a thread: the answer (or b"" if cut) and when it ended."""

    def __init__(self, port: int, caroot: Path, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.caroot, self.path = port, caroot, path
        self.answer = b""
        self.ended = 0.0

    def run(self) -> None:
        context = ssl.create_default_context(cafile=str(self.caroot / "rootCA.pem"))
        try:
            with context.wrap_socket(
                socket.create_connection(("127.0.0.1", self.port), timeout=30),
                server_hostname="localhost",
            ) as tls:
                tls.sendall(f"GET {self.path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                while True:
                    piece = tls.recv(65536)
                    if not piece:
                        break
                    self.answer += piece
                    if self.answer.endswith(b"slept"):
                        break
        except OSError:
            pass
        self.ended = time.monotonic()


def _listen_port(lines: list[str]) -> int:
    return int(lines[-1].split("localhost:")[1].split()[0])


def _started_request(port: int, caroot: Path, seconds: float) -> InFlight:
    request = InFlight(port, caroot, f"/sleep/{seconds}")
    request.start()
    assert SlowHandler.started.wait(10), "the request never reached the upstream"
    return request


loops = pytest.mark.parametrize("event_loop", ["", "asyncio"], ids=["default-loop", "asyncio"])
signal_pairs = pytest.mark.parametrize(
    ("first", "second"),
    [
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGINT, signal.SIGINT),
        (signal.SIGTERM, signal.SIGINT),
    ],
    ids=["term-term", "int-int", "term-int"],
)
# Far above every bound below: a drain ending by its timeout would fail the tests.
LONG_DRAIN = ("--limit", "drain_timeout=60", "--quiet")


@contextlib.contextmanager
def serving_sleepy(
    caroot: Path, sleepy_port: int, event_loop: str, workers: int
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """devtls serve in front of the sleepy upstream, with all its workers up."""
    if workers > 1 and sys.platform != "linux":
        pytest.skip("--workers is Linux only")
    args = (str(sleepy_port), "--listen", "127.0.0.1:0", "--workers", str(workers), *LONG_DRAIN)
    with serving(*args, caroot=caroot, env={"DEVTLS_EVENT_LOOP": event_loop}) as (process, lines):
        if workers > 1:
            assert wait_for(lambda: len(child_pids(process.pid)) == workers - 1)
        yield process, lines


@loops
@signal_pairs
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "workers"])
def test_second_signal_cuts_the_drain_short_and_exits_0(
    session_ca_dir: Path,
    sleepy_port: int,
    event_loop: str,
    first: signal.Signals,
    second: signal.Signals,
    workers: int,
) -> None:
    with serving_sleepy(session_ca_dir, sleepy_port, event_loop, workers) as (process, lines):
        family = [process.pid, *child_pids(process.pid)]
        request = _started_request(_listen_port(lines), session_ca_dir, 30)
        process.send_signal(first)
        time.sleep(0.5)
        assert process.poll() is None, "the first signal must drain, not stop at once"
        process.send_signal(second)
        sent = time.monotonic()
        assert process.wait(10) == 0  # not -15: killed by the signal
        assert time.monotonic() - sent < 3  # generous: it is well under a second
        request.join(10)
        assert b"slept" not in request.answer  # cut, not waited for
        assert wait_for(lambda: not [p for p in family[1:] if Path(f"/proc/{p}").exists()])


@loops
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "workers"])
def test_exits_soon_after_the_last_request_in_flight_ends(
    session_ca_dir: Path, sleepy_port: int, event_loop: str, workers: int
) -> None:
    with serving_sleepy(session_ca_dir, sleepy_port, event_loop, workers) as (process, lines):
        request = _started_request(_listen_port(lines), session_ca_dir, 1.0)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        exited = time.monotonic()
        request.join(10)
        assert request.answer.startswith(b"HTTP/1.1 200")
        assert request.answer.endswith(b"slept")
        # Nothing else (timers, pools, threads, other workers) keeps it alive: about 0.1 s.
        assert exited - request.ended < 1.5


STUCK_ACME_CALL = """
import asyncio, time
from devtls.proxy.acme import in_daemon_thread
from devtls.proxy.server import run_on_new_loop

async def main() -> int:
    assert await in_daemon_thread(lambda x: x + 1, 1) == 2
    try:
        await in_daemon_thread(lambda: 1 / 0)
    except ZeroDivisionError:
        pass
    # An ACME request stuck in a thread, as a stop signal cancels the manager's task.
    task = asyncio.ensure_future(in_daemon_thread(time.sleep, 120))
    await asyncio.sleep(0.1)
    task.cancel()
    return 0

raise SystemExit(run_on_new_loop(main()))
"""


def test_a_stuck_acme_request_does_not_hold_up_the_exit() -> None:
    # With asyncio.to_thread the loop's executor, then the interpreter, waited 120 s for it.
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", STUCK_ACME_CALL], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert time.monotonic() - started < 20
