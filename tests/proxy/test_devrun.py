"""``devtls run`` with real processes: the router it starts, the child, its signals, curl.

Each test has its own runtime folder (tests/conftest.py), so the router ``devtls run`` starts
in the background is the test's own: it listens on a free port (DEVTLS_RUN_LISTEN) with the
session's CA (CAROOT), and is stopped at teardown.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devtls.control_client import ControlClient, NotRunning
from devtls.runtime import PID_FILE
from tests.conftest import require_tool, run, wait_for

# A dev server that reads PORT and HOST (python -m http.server does not); DELAY seconds of
# booting first. GET /exit/N exits with status N, and SIGINT is reported and exits 7.
APP = textwrap.dedent(
    """
    import http.server, os, signal, sys, time
    open(os.environ["PID_FILE"], "w").write(str(os.getpid()))
    def interrupted(*_):
        print("child: SIGINT", flush=True)
        os._exit(7)
    signal.signal(signal.SIGINT, interrupted)
    time.sleep(float(os.environ.get("DELAY", "0")))
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/exit/"):
                os._exit(int(self.path[6:]))
            body = (f"port={os.environ['PORT']} host={self.headers['Host']} "
                    f"url={os.environ['DEVTLS_URL']}\\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
    """
)


@dataclass
class Running:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    url: str = ""

    @property
    def port(self) -> int:
        match = re.search(r":(\d+)/$", self.url)
        assert match, self.url
        return int(match.group(1))

    @property
    def host(self) -> str:
        return self.url.split("/")[2].rpartition(":")[0]

    def output(self) -> str:
        return "\n".join(self.lines)


def _collect(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def devtls_run(
    caroot: Path, cwd: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Running]:
    """``devtls run ARGS`` in its own session; yields once it printed its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devtls", "run", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "CAROOT": str(caroot),
            "DEVTLS_RUN_LISTEN": "127.0.0.1:0",
            "PID_FILE": str(cwd / "child.pid"),
            **(env or {}),
        },
        start_new_session=True,
    )
    running = Running(process)
    reader = threading.Thread(target=_collect, args=(process, running.lines), daemon=True)
    reader.start()
    children: list[int] = []
    try:

        def url() -> bool:
            for line in running.lines:
                match = re.search(r"(https://\S+/)$", line)
                if match and "➜" in line:
                    running.url = match.group(1)
                    return True
            return process.poll() is not None

        assert wait_for(url, 30), running.output()
        yield running
    finally:
        with contextlib.suppress(OSError, ValueError):
            children.append(int((cwd / "child.pid").read_text()))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                kill_group(process.pid)
                process.wait(10)
        for child in children:
            kill_group(child)
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()


@pytest.fixture(autouse=True)
def background_router(runtime_dir: Path) -> Iterator[None]:
    """The router a test's devtls run started is stopped with the test."""
    yield
    pid_file = runtime_dir / "devtls" / PID_FILE
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 15)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    return True


@pytest.fixture
def app(tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "app.py").write_text(APP)
    return folder


def curl(
    caroot: Path, running: Running, path: str = "/", *extra: str, host: str | None = None
) -> tuple[int, str, str]:
    """(status, headers, body) of a GET through the router."""
    host = host or running.host
    result = run(
        require_tool("curl"), "-sS", "-i", "--cacert", caroot / "rootCA.pem", "--resolve",
        f"{host}:{running.port}:127.0.0.1", *extra, f"https://{host}:{running.port}{path}",
    )  # fmt: skip
    # Text mode: the \r\n of the head are \n here.
    head, _, body = result.stdout.partition("\n\n")
    status = int(head.split()[1])
    return status, head, body


def routes() -> list[dict[str, object]]:
    try:
        with ControlClient.connect() as client:
            return list(client.routes()["routes"])
    except NotRunning:
        return []


def route_names() -> set[str]:
    return {str(r["route"]) for r in routes()}


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and not _zombie(pid)


def child_pid(folder: Path) -> int:
    assert wait_for(lambda: (folder / "child.pid").exists(), 10)
    return int((folder / "child.pid").read_text())


def devtls(*args: str, caroot: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A devtls command; ``cwd`` outside any git worktree (a branch would name the app)."""
    env = {**os.environ, "CAROOT": str(caroot), "DEVTLS_RUN_LISTEN": "127.0.0.1:0"}
    return run(sys.executable, "-m", "devtls", *args, check=False, env=env, cwd=cwd or caroot)


# -- the tests ---------------------------------------------------------------------------------


def test_the_app_is_served_at_its_name_after_a_starting_page(
    session_ca_dir: Path, app: Path
) -> None:
    with devtls_run(
        session_ca_dir, app, "--", sys.executable, "app.py", env={"DELAY": "3"}
    ) as running:
        assert running.host == "shop.localhost"  # the folder's name
        assert f"  devtls  shop  (running: {sys.executable} app.py)" in running.lines
        assert "router started in the background" in running.output()
        # The dev server is booting: a page that reloads itself, not a 502.
        status, head, body = curl(session_ca_dir, running)
        assert status == 503, body
        assert "retry-after: 1" in head.lower()
        assert "cache-control: no-store" in head.lower()
        assert '<meta http-equiv="refresh" content="1">' in body
        assert "starting shop" in body
        # Once it listens, requests go through, with the upstream's own Host.
        assert wait_for(lambda: curl(session_ca_dir, running)[0] == 200, 20)
        status, _, body = curl(session_ca_dir, running)
        port = re.search(r"port=(\d+)", body)
        assert port, body
        assert f"host=localhost:{port.group(1)} url={running.url}" in body
        assert wait_for(lambda: any(" shop ready in " in line for line in running.lines), 5)
        # The child's exit status is devtls run's, and its route goes with it.
        assert route_names() == {"shop.localhost"}
        with contextlib.suppress(AssertionError, ValueError, IndexError):
            curl(session_ca_dir, running, "/exit/3")
        assert running.process.wait(10) == 3
        assert route_names() == set()


def test_a_command_that_is_not_there_exits_127(session_ca_dir: Path, app: Path) -> None:
    result = devtls("run", "--", str(app / "no-such-program"), caroot=session_ca_dir)
    assert result.returncode == 127
    assert result.stderr.strip().splitlines()[-1].startswith("devtls: error: command not found:")
    assert route_names() == set()


def test_sigint_to_devtls_run_reaches_the_child(session_ca_dir: Path, app: Path) -> None:
    with devtls_run(session_ca_dir, app, "--name", "intr", "--", sys.executable, "app.py") as r:
        child_pid(app)
        assert wait_for(lambda: curl(session_ca_dir, r)[0] == 200, 20)
        r.process.send_signal(signal.SIGINT)
        assert r.process.wait(10) == 7
        assert wait_for(lambda: "child: SIGINT" in r.lines, 5), r.output()
        assert route_names() == set()


def test_sigterm_kills_the_child_and_devtls_run_says_so(session_ca_dir: Path, app: Path) -> None:
    with devtls_run(session_ca_dir, app, "--name", "term", "--", sys.executable, "app.py") as r:
        pid = child_pid(app)
        r.process.send_signal(signal.SIGTERM)
        assert r.process.wait(10) == 128 + signal.SIGTERM
        assert wait_for(lambda: not alive(pid), 5)


def test_two_runs_at_once_and_sigkill_of_one(session_ca_dir: Path, tmp_path: Path) -> None:
    folders = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "app.py").write_text(APP)
        folders.append(folder)
    with (
        devtls_run(session_ca_dir, folders[0], "--", sys.executable, "app.py") as one,
        devtls_run(session_ca_dir, folders[1], "--", sys.executable, "app.py") as two,
    ):
        assert one.port == two.port  # one router for both
        listing = {str(r["route"]): r["held_by"] for r in routes()}
        assert listing == {"one.localhost": one.process.pid, "two.localhost": two.process.pid}
        listed = devtls("routes", caroot=session_ca_dir).stdout
        assert "one.localhost" in listed
        assert "two.localhost" in listed
        first_child = child_pid(folders[0])
        assert wait_for(lambda: curl(session_ca_dir, one)[0] == 200, 20)
        # Killed outright: the router notices, and the child does not outlive it.
        one.process.kill()
        assert wait_for(lambda: route_names() == {"two.localhost"}, 5), routes()
        assert wait_for(lambda: not alive(first_child), 5)
        assert wait_for(lambda: curl(session_ca_dir, two)[0] == 200, 20)
        status, _, body = curl(session_ca_dir, two, host="one.localhost")
        assert status == 404
        assert "no route for host 'one.localhost" in body


def test_a_name_in_use_is_refused_with_its_holder_unless_forced(
    session_ca_dir: Path, app: Path
) -> None:
    with devtls_run(session_ca_dir, app, "--name", "dup", "--", sys.executable, "app.py") as r:
        again = devtls(
            "run", "--name", "dup", "--", sys.executable, "-c", "", caroot=session_ca_dir
        )
        assert again.returncode == 1
        assert again.stderr.strip() == (
            f"devtls: error: dup.localhost is already served by process {r.process.pid}; stop "
            "it, choose another name with --name, or take it over with --force"
        )
        forced = devtls(
            "run", "--name", "dup", "--force", "--", sys.executable, "-c", "import sys; sys.exit(4)",
            caroot=session_ca_dir,
        )  # fmt: skip
        assert forced.returncode == 4
        assert "https://dup.localhost:" in forced.stdout
        # The route taken over went with its new holder; the first one is not given back.
        assert route_names() == set()
        assert r.process.poll() is None


def test_the_router_started_on_demand_lists_the_apps_and_stops(
    session_ca_dir: Path, app: Path, runtime_dir: Path
) -> None:
    folder = runtime_dir / "devtls"
    with devtls_run(session_ca_dir, app, "--name", "list", "--", sys.executable, "app.py") as r:
        pid = int((folder / PID_FILE).read_text())
        assert alive(pid)
        # An unknown name under .localhost gets a certificate, and a browser a page of links.
        status, head, body = curl(
            session_ca_dir, r, "/", "-H", "Accept: text/html", host="nothing.localhost"
        )
        assert status == 404
        assert "content-type: text/html" in head.lower()
        assert f'<a href="https://list.localhost:{r.port}/">' in body
        # curl gets the same as text.
        status, head, body = curl(session_ca_dir, r, host="nothing.localhost")
        assert status == 404
        assert "list.localhost -> http://localhost:" in body
    stopped = devtls("stop", caroot=session_ca_dir)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"stopped the router (pid {pid})\n"
    assert wait_for(lambda: not alive(pid), 10)
    assert not (folder / PID_FILE).exists()


def test_a_taken_port_for_the_router_is_one_line_saying_what_to_do(
    session_ca_dir: Path, app: Path
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "CAROOT": str(session_ca_dir),
            "DEVTLS_RUN_LISTEN": f"127.0.0.1:{port}",
        }
        result = run(
            sys.executable, "-m", "devtls", "run", "--", sys.executable, "-c", "",
            check=False, env=env, cwd=app,
        )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"devtls: error: the router did not start: cannot listen on 127.0.0.1:{port}: the "
        "address is already in use; free the port, or set DEVTLS_RUN_LISTEN=127.0.0.1:PORT"
    ), lines


def test_a_running_router_is_used_and_its_port_named(session_ca_dir: Path, app: Path) -> None:
    from tests.proxy.test_serve_cli import free_port, serving

    port = free_port()
    with serving(
        "--listen", f"127.0.0.1:{port}", "--route", "other.test=1", caroot=session_ca_dir
    ) as (router, _):
        with devtls_run(session_ca_dir, app, "--name", "mine", "--", sys.executable, "app.py") as r:
            assert r.url == f"https://mine.localhost:{port}/"
            assert "router started" not in r.output()
            assert wait_for(lambda: curl(session_ca_dir, r)[0] == 200, 20)
        assert router.poll() is None


UVICORN_APP = """async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"%s"})
"""


def test_uvicorn_with_reload(session_ca_dir: Path, app: Path) -> None:
    pytest.importorskip("uvicorn", reason="uvicorn is in the test extras")
    (app / "main.py").write_text(UVICORN_APP % "version 1")
    command = [sys.executable, "-m", "uvicorn", "main:app", "--reload"]
    with devtls_run(session_ca_dir, app, "--name", "py", "--", *command) as r:
        assert "--port" in r.output()  # uvicorn ignores PORT: it is given --port
        assert wait_for(lambda: curl(session_ca_dir, r)[0] == 200, 30), r.output()
        assert curl(session_ca_dir, r)[2] == "version 1"
        # uvicorn's StatReload takes the files' first mtimes on its first scan, which on a
        # loaded machine can come after an early edit: the edit is written again until seen.
        edited = [0.0]

        def reloaded() -> bool:
            if time.monotonic() - edited[0] > 3:
                (app / "main.py").write_text(UVICORN_APP % "version 2")
                edited[0] = time.monotonic()
            return curl(session_ca_dir, r)[2] == "version 2"

        assert wait_for(reloaded, 40), r.output()
        r.process.send_signal(signal.SIGINT)
        assert r.process.wait(15) in (0, 130), r.output()
        assert route_names() == set()


# -- Vite and webpack-dev-server through devtls run, in Chromium: HMR over wss ------------------

DEV_SERVER_ENV = {"BROWSER": "none", "NO_COLOR": "1", "FORCE_COLOR": "0"}


def test_vite_through_devtls_run_hot_updates_over_wss(session_ca_dir: Path, tmp_path: Path) -> None:
    from tests.proxy.cdp import chromium_page
    from tests.proxy.test_devservers import VITE_MESSAGE, hot_update, node_bin, vite_project

    vite = node_bin("vite")
    project = vite_project(tmp_path / "app")
    with (
        devtls_run(session_ca_dir, project, "--", str(vite), env=DEV_SERVER_ENV) as r,
        chromium_page(tmp_path / "home", session_ca_dir / "rootCA.pem") as page,
    ):
        assert r.host == "app.localhost"
        assert "--strictPort --host 127.0.0.1)" in r.output()
        assert wait_for(lambda: curl(session_ca_dir, r)[0] == 200, 60), r.output()
        hot_update(
            page, r.host, r.port, project / "src/message.js", VITE_MESSAGE, "[vite] connected."
        )
        assert any("[vite] hot updated: /src/message.js" in line for line in page.console())


def test_next_dev_through_devtls_run_hot_updates_over_wss(
    session_ca_dir: Path, tmp_path: Path
) -> None:
    """Next.js checks the Origin of its HMR socket and trusts localhost only: devtls run's
    route names localhost:PORT, so the rewritten Origin passes with no next.config.js."""
    from tests.proxy.cdp import chromium_page
    from tests.proxy.test_devservers import (
        NEXT_MESSAGE,
        came_as_turbopack_update,
        hot_update,
        next_project,
        node_bin,
    )

    with (
        next_project() as app,
        devtls_run(
            session_ca_dir, app, "--name", "nextapp", "--", str(node_bin("next")), "dev",
            env=DEV_SERVER_ENV,
        ) as r,
        chromium_page(tmp_path / "home", session_ca_dir / "rootCA.pem") as page,
    ):  # fmt: skip
        assert r.host.endswith("nextapp.localhost")
        # The first compile takes seconds, more on a busy machine.
        assert wait_for(lambda: curl(session_ca_dir, r)[0] == 200, 90), r.output()
        hot_update(page, r.host, r.port, app / "app/message.js", NEXT_MESSAGE, "[HMR] connected")
        came_as_turbopack_update(page, app / "app/message.js")
        assert "Blocked cross-origin request" not in r.output()


def test_webpack_dev_server_through_npm_run_dev_hot_updates_over_wss(
    session_ca_dir: Path, tmp_path: Path
) -> None:
    from tests.proxy.cdp import chromium_page
    from tests.proxy.test_devservers import WEBPACK_MESSAGE, hot_update, node_bin, webpack_project

    node_bin("webpack")
    npm = require_tool("npm")
    # No devServer setting at all: the socket URL comes from devtls run's flags.
    project = webpack_project(tmp_path / "web", "")
    (project / "package.json").write_text(
        '{"name": "@acme/web", "private": true, "scripts": {"dev": "webpack serve --no-color"}}'
    )
    with (
        devtls_run(session_ca_dir, project, "--", npm, "run", "dev", env=DEV_SERVER_ENV) as r,
        chromium_page(tmp_path / "home", session_ca_dir / "rootCA.pem") as page,
    ):
        assert r.host == "web.localhost"
        assert "dev -- --port" in r.output()
        assert wait_for(lambda: curl(session_ca_dir, r)[0] == 200, 60), r.output()
        hot_update(
            page, r.host, r.port, project / "src/message.js", WEBPACK_MESSAGE,
            "[webpack-dev-server] Server started: Hot Module Replacement enabled",
        )  # fmt: skip
        assert any("[HMR] Updated modules:" in line for line in page.console()), page.console()


FOREGROUND_APP = """import os, signal, sys, time
print("foreground=" + str(os.tcgetpgrp(0) == os.getpgrp()), flush=True)
def interrupted(*_):
    print("child: SIGINT", flush=True)
    os._exit(7)
signal.signal(signal.SIGINT, interrupted)
time.sleep(30)
"""


def test_in_a_terminal_the_child_is_the_foreground_job_and_gets_ctrl_c(
    session_ca_dir: Path, app: Path
) -> None:
    import fcntl
    import pty
    import termios

    (app / "fg.py").write_text(FOREGROUND_APP)
    master, slave = pty.openpty()

    def controlling_terminal() -> None:  # pragma: no cover - runs in the child
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {**os.environ, "CAROOT": str(session_ca_dir), "DEVTLS_RUN_LISTEN": "127.0.0.1:0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "devtls", "run", "--name", "tty", "--", sys.executable, "fg.py"],
        cwd=app, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
        preexec_fn=controlling_terminal,
    )  # fmt: skip
    os.close(slave)
    seen = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(master, 4096):
                seen.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: b"foreground=" in seen, 30), seen.decode(errors="replace")
        assert b"foreground=True" in seen
        os.write(master, b"\x03")  # Ctrl-C: the terminal signals its foreground job
        assert process.wait(10) == 7
        assert b"child: SIGINT" in seen
    finally:
        if process.poll() is None:
            kill_group(process.pid)
            process.wait(10)
        os.close(master)
        reader.join(5)
