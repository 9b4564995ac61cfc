"""Real dev servers behind ``devtls serve``, in headless Chromium: the README's recipes.

Vite, webpack-dev-server, Next.js and Angular (the versions pinned in
tests/devservers/package.json, which scripts/test.sh installs with ``npm ci``) serve a page at
``https://app.test:PORT`` through devtls; the test edits a module and the update must arrive
over the page's wss:// socket as hot module replacement: the page changes without loading
again (Angular hot-replaces a template; an edit of a TypeScript module reloads the page, over
the same socket). Each recipe is run both ways: ``--host-header upstream`` with no dev-server
setting for the host, and the browser's Host with the dev server's allowed-hosts line. Without
either, the dev server refuses the name (Next.js: the Origin of its HMR socket), which is why
the recipes exist.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_tool, run, wait_for
from tests.proxy.cdp import Page, chromium_page
from tests.proxy.test_serve_cli import free_port, serving

DEVSERVERS = Path(__file__).parent.parent / "devservers"
NAME = "app.test"

# A page whose text comes from a module that accepts its own updates; sessionStorage counts
# the page's loads, so a full reload (what a dev server falls back to when HMR fails) shows.
INDEX_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>hmr</title></head>
<body><p id="app">loading</p><script type="module" src="/src/main.js"></script></body></html>
"""
COUNT_LOADS = "sessionStorage.loads = String(Number(sessionStorage.loads || 0) + 1);\n"
VITE_MAIN = COUNT_LOADS + "import './message.js';\n"
VITE_MESSAGE = """document.getElementById('app').textContent = 'version {n}';
if (import.meta.hot) import.meta.hot.accept();
"""
WEBPACK_INDEX_HTML = INDEX_HTML.replace('type="module" src="/src/main.js"', 'src="/main.js"')
WEBPACK_MAIN = (
    COUNT_LOADS
    + """import { message } from './message.js';
const render = () => { document.getElementById('app').textContent = message; };
render();
if (module.hot) module.hot.accept('./message.js', render);
"""
)
WEBPACK_MESSAGE = "export const message = 'version {n}';\n"

# The README's lines, exactly.
VITE_ALLOWED_HOSTS = """import { defineConfig } from 'vite'

export default defineConfig({
  server: { allowedHosts: ['app.test'] },
})
"""
WEBPACK_CONFIG = """module.exports = {{
  mode: 'development',
  devServer: {{
{lines}  }},
}};
"""
WEBPACK_SOCKET_LINE = "    client: { webSocketURL: 'auto://0.0.0.0:0/ws' },\n"
WEBPACK_ALLOWED_LINE = "    allowedHosts: ['app.test'],\n"


def node_bin(name: str) -> Path:
    """A dev server's command from tests/devservers; in CI its absence fails the test."""
    require_tool("node")
    path = DEVSERVERS / "node_modules" / ".bin" / name
    if not path.exists():
        message = f"{name} is not installed (scripts/test.sh runs npm ci in tests/devservers)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def project(folder: Path, files: dict[str, str]) -> Path:
    """A user's project: these files, and the pinned packages as its node_modules."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / "node_modules").symlink_to(DEVSERVERS / "node_modules", target_is_directory=True)
    return folder


@contextmanager
def dev_server(command: list[str | Path], cwd: Path, port: int) -> Iterator[list[str]]:
    """A dev server on ``localhost:port``, its output collected; stopped with its children."""
    log = cwd / "devserver.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(c) for c in command],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "BROWSER": "none",
                "NO_COLOR": "1",
                "FORCE_COLOR": "0",
                "NEXT_TELEMETRY_DISABLED": "1",
            },
            start_new_session=True,
        )
    try:

        def listening() -> bool:
            for host in ("127.0.0.1", "::1"):
                try:
                    socket.create_connection((host, port), timeout=1).close()
                    return True
                except OSError:
                    pass
            return process.poll() is not None

        assert wait_for(listening, 60), log.read_text()
        assert process.poll() is None, log.read_text()
        yield [log.read_text()]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@contextmanager
def devtls_in_front(
    session_ca_dir: Path, port: int, *extra: str, name: str = NAME
) -> Iterator[int]:
    """``devtls serve --route NAME=PORT`` on a free loopback port; yields that port."""
    with serving(
        "--listen", "127.0.0.1:0", "--route", f"{name}={port}", *extra, caroot=session_ca_dir
    ) as (process, lines):
        assert process.poll() is None, lines
        match = re.search(rf"https://{re.escape(name)}:(\d+)", "\n".join(lines))
        assert match, lines
        yield int(match.group(1))


def hot_update(
    page: Page,
    name: str,
    port: int,
    message_file: Path,
    message: str,
    connected: str,
    *,
    loads: str = "1",
) -> None:
    """Load ``https://name:port/``, edit ``message_file``, see the page change, not reload.

    ``loads="2"``: the dev server answers the edit by reloading the page (live reload).
    """
    page.call("Page.navigate", url=f"https://{name}:{port}/")
    text = "document.getElementById('app') && document.getElementById('app').textContent"
    assert page.until(lambda: page.evaluate(text) == "version 1"), page.console()
    # The edit must come once the dev server's socket is open, or it is no update.
    assert page.until(lambda: any(connected in line for line in page.console())), page.console()
    sockets = page.websockets()
    assert sockets, "the page opened no WebSocket"
    assert all(s.startswith(f"wss://{name}:{port}/") for s in sockets), sockets
    # A watcher that started moments ago can miss one write (Turbopack and watchpack compare
    # modification times at a coarse grain), so the same edit is made again, at most twice, with
    # a later mtime. Each write is the same content: whatever reaches the page is that update,
    # carried over devtls's wss.
    updated = False
    for attempt in range(3):
        message_file.write_text(message.format(n=2))
        later = time.time() + attempt
        os.utime(message_file, (later, later))
        updated = page.until(lambda: page.evaluate(text) == "version 2", seconds=12)
        if updated:
            break
    assert updated, diagnosis(page, message_file)
    assert page.evaluate("sessionStorage.loads") == loads, diagnosis(page, message_file)


def came_as_turbopack_update(page: Page, message_file: Path) -> None:
    """The update came over the page's wss as Turbopack's own message. (Next's "[Fast Refresh]
    done" line is no signal: it is printed only when the "building" message, which the server
    defers and may drop for a fast rebuild, came first.)"""
    frames = page.websocket_frames(limit=1000)
    updates = [f for f in frames if f.startswith('{"type":"turbopack-message"')]
    assert updates, diagnosis(page, message_file)


def diagnosis(page: Page, message_file: Path) -> str:
    """What to look at when an update did not come: the console, the frames, the server's log."""
    logs = [p / "devserver.log" for p in message_file.parents if (p / "devserver.log").exists()]
    log = logs[0].read_text()[-4000:] if logs else "(no dev server log)"
    frames = "\n".join(page.websocket_frames())
    return f"console: {page.console()}\nframes received:\n{frames}\ndev server log:\n{log}"


def curl_status(session_ca_dir: Path, port: int, path: str = "/") -> tuple[str, str]:
    curl = require_tool("curl")
    result = run(
        curl, "-sS", "--cacert", session_ca_dir / "rootCA.pem", "--resolve",
        f"{NAME}:{port}:127.0.0.1", "-w", "\n%{http_code}", f"https://{NAME}:{port}{path}",
    )  # fmt: skip
    body, _, status = result.stdout.rpartition("\n")
    return status, body


# -- Vite ------------------------------------------------------------------------------------


def vite_project(folder: Path, *, config: str | None = None) -> Path:
    files = {"index.html": INDEX_HTML, "src/main.js": VITE_MAIN}
    files["src/message.js"] = VITE_MESSAGE.format(n=1)
    if config is not None:
        files["vite.config.js"] = config
    return project(folder, files)


# Each way: the name, devtls's flags, and the dev server's settings. NAME.localhost (what
# `devtls run` serves) passes the dev servers' checks by itself; the Host rewrite is what
# keeps webpack-dev-server's Origin check passing for it.
UPSTREAM_HOST = ["--host-header", "upstream"]
WAYS = ["host-header-upstream", "allowed-hosts", "localhost-name"]


@pytest.mark.parametrize(
    ("name", "devtls_args", "config"),
    [
        (NAME, UPSTREAM_HOST, None),
        (NAME, [], VITE_ALLOWED_HOSTS),
        ("app.localhost", UPSTREAM_HOST, None),
    ],
    ids=WAYS,
)
def test_vite_hmr_over_wss(
    session_ca_dir: Path, tmp_path: Path, name: str, devtls_args: list[str], config: str | None
) -> None:
    vite = node_bin("vite")
    app = vite_project(tmp_path / "app", config=config)
    port = free_port()
    with (
        dev_server([vite, "--port", str(port), "--strictPort"], app, port),
        devtls_in_front(session_ca_dir, port, *devtls_args, name=name) as front,
        chromium_page(tmp_path / "home", session_ca_dir / "rootCA.pem", resolve=(NAME,)) as page,
    ):
        hot_update(page, name, front, app / "src/message.js", VITE_MESSAGE, "[vite] connected.")
        assert any("[vite] hot updated: /src/message.js" in line for line in page.console())


def test_vite_refuses_the_name_without_either(session_ca_dir: Path, tmp_path: Path) -> None:
    vite = node_bin("vite")
    app = vite_project(tmp_path / "app")
    port = free_port()
    with dev_server([vite, "--port", str(port), "--strictPort"], app, port):
        with devtls_in_front(session_ca_dir, port) as front:
            status, body = curl_status(session_ca_dir, front)
            assert status == "403"
            assert f'This host ("{NAME}") is not allowed' in body
        # The same dev server, through devtls with the rewrite: the page.
        with devtls_in_front(session_ca_dir, port, "--host-header", "upstream") as front:
            status, body = curl_status(session_ca_dir, front)
            assert status == "200"
            assert "/@vite/client" in body


# -- webpack-dev-server ------------------------------------------------------------------------


def webpack_project(folder: Path, lines: str) -> Path:
    files = {
        "public/index.html": WEBPACK_INDEX_HTML,
        "src/index.js": WEBPACK_MAIN,
        "src/message.js": WEBPACK_MESSAGE.format(n=1),
        "webpack.config.js": WEBPACK_CONFIG.format(lines=lines),
    }
    return project(folder, files)


def webpack_serve(port: int) -> list[str | Path]:
    return [node_bin("webpack"), "serve", "--port", str(port), "--no-color"]


@pytest.mark.parametrize(
    ("name", "devtls_args", "lines"),
    [
        (NAME, UPSTREAM_HOST, WEBPACK_SOCKET_LINE),
        (NAME, [], WEBPACK_ALLOWED_LINE + WEBPACK_SOCKET_LINE),
        ("app.localhost", UPSTREAM_HOST, WEBPACK_SOCKET_LINE),
    ],
    ids=WAYS,
)
def test_webpack_dev_server_hmr_over_wss(
    session_ca_dir: Path, tmp_path: Path, name: str, devtls_args: list[str], lines: str
) -> None:
    app = webpack_project(tmp_path / "app", lines)
    port = free_port()
    with (
        dev_server(webpack_serve(port), app, port),
        devtls_in_front(session_ca_dir, port, *devtls_args, name=name) as front,
        chromium_page(tmp_path / "home", session_ca_dir / "rootCA.pem", resolve=(NAME,)) as page,
    ):
        hot_update(
            page, name, front, app / "src/message.js", WEBPACK_MESSAGE,
            "[webpack-dev-server] Server started: Hot Module Replacement enabled",
        )  # fmt: skip
        assert any("[HMR] Updated modules:" in line for line in page.console()), page.console()


def test_webpack_dev_server_refuses_the_name_without_either(
    session_ca_dir: Path, tmp_path: Path
) -> None:
    app = webpack_project(tmp_path / "app", WEBPACK_SOCKET_LINE)
    port = free_port()
    with dev_server(webpack_serve(port), app, port):
        with devtls_in_front(session_ca_dir, port) as front:
            status, body = curl_status(session_ca_dir, front)
            assert (status, body) == ("403", "Invalid Host header")
        with devtls_in_front(session_ca_dir, port, "--host-header", "upstream") as front:
            assert wait_for(lambda: curl_status(session_ca_dir, front)[0] == "200", 30)


def test_webpack_dev_server_sockets_dial_its_own_port_without_the_line(
    session_ca_dir: Path, tmp_path: Path
) -> None:
    """Why the recipe has ``client.webSocketURL``: the bundle names the dev server's port."""
    app = webpack_project(tmp_path / "app", "")
    port = free_port()
    with (
        dev_server(webpack_serve(port), app, port),
        devtls_in_front(session_ca_dir, port, "--host-header", "upstream") as front,
    ):
        assert wait_for(lambda: curl_status(session_ca_dir, front, "/main.js")[0] == "200", 30)
        bundle = curl_status(session_ca_dir, front, "/main.js")[1]
        assert f"port={port}" in bundle


# -- Next.js ---------------------------------------------------------------------------------

# Fast Refresh replaces a module that exports only components; the load counter sits in a
# module of its own, which an edit of the message does not run again.
NEXT_LAYOUT = """import Count from './count.js';

export default function RootLayout({ children }) {
  return <html><body><Count />{children}</body></html>;
}
"""
NEXT_COUNT = (
    "'use client';\nif (typeof window !== 'undefined') "
    + COUNT_LOADS.replace("\n", "")
    + "\nexport default function Count() { return null; }\n"
)
NEXT_PAGE = """import Message from './message.js';

export default function Page() { return <Message />; }
"""
# "version N" once hydrated: an edit that comes before React has taken the page over is
# not a Fast Refresh of it.
NEXT_MESSAGE = """'use client';
import {{ useEffect, useState }} from 'react';

export default function Message() {{
  const [hydrated, setHydrated] = useState(false);
  useEffect(() => setHydrated(true), []);
  return <p id="app">{{hydrated ? 'version {n}' : 'loading'}}</p>;
}}
"""
# What Next.js's own warning tells users to write, and the README shows.
NEXT_ALLOWED_DEV_ORIGINS = """module.exports = {
  allowedDevOrigins: ['app.test'],
}
"""


@contextmanager
def next_project(*, config: str | None = None) -> Iterator[Path]:
    """A Next.js app in a folder of tests/devservers, removed after.

    Turbopack compiles nothing outside the project's root (the folder of the nearest lockfile),
    so a ``node_modules`` symlink out of a temporary folder is not enough: the app lives under
    tests/devservers and finds the pinned packages there.
    """
    node_bin("next")
    folder = Path(tempfile.mkdtemp(prefix="next-app-", dir=DEVSERVERS))
    try:
        files = {
            "app/layout.js": NEXT_LAYOUT,
            "app/count.js": NEXT_COUNT,
            "app/page.js": NEXT_PAGE,
            "app/message.js": NEXT_MESSAGE.format(n=1),
        }
        if config is not None:
            files["next.config.js"] = config
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def next_dev(port: int) -> list[str | Path]:
    return [node_bin("next"), "dev", "--port", str(port)]


def next_page_compiled(session_ca_dir: Path, port: int) -> bool:
    """Whether the page is there: the first compile takes seconds, more on a busy machine."""
    return wait_for(lambda: curl_status(session_ca_dir, port)[0] == "200", 90)


@pytest.mark.parametrize(
    ("devtls_args", "config"),
    [(UPSTREAM_HOST, None), ([], NEXT_ALLOWED_DEV_ORIGINS)],
    ids=WAYS[:2],
)
def test_next_dev_hmr_over_wss(
    session_ca_dir: Path, tmp_path: Path, devtls_args: list[str], config: str | None
) -> None:
    port = free_port()
    with (
        next_project(config=config) as app,
        dev_server(next_dev(port), app, port),
        devtls_in_front(session_ca_dir, port, *devtls_args) as front,
        chromium_page(tmp_path / "home", session_ca_dir / "rootCA.pem", resolve=(NAME,)) as page,
    ):
        assert next_page_compiled(session_ca_dir, front), (app / "devserver.log").read_text()
        hot_update(page, NAME, front, app / "app/message.js", NEXT_MESSAGE, "[HMR] connected")
        came_as_turbopack_update(page, app / "app/message.js")


def websocket_handshake(session_ca_dir: Path, port: int, path: str) -> str:
    """The status line a WebSocket handshake from the page's own origin is answered with."""
    context = ssl.create_default_context(cafile=session_ca_dir / "rootCA.pem")
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=NAME) as tls,
    ):
        tls.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {NAME}:{port}\r\nOrigin: https://{NAME}:{port}\r\n"
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n" not in answer and len(answer) < 4096:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.partition(b"\r\n")[0].decode("latin-1")


def test_next_dev_refuses_the_hmr_socket_without_either(
    session_ca_dir: Path, tmp_path: Path
) -> None:
    """Next.js serves the page to any Host; its check is on the Origin of its dev resources."""
    port = free_port()
    with next_project() as app, dev_server(next_dev(port), app, port):
        with devtls_in_front(session_ca_dir, port) as front:
            assert next_page_compiled(session_ca_dir, front), (app / "devserver.log").read_text()
            # Next.js ends the refused handshake's connection without an answer.
            status = websocket_handshake(session_ca_dir, front, "/_next/hmr?id=x")
            assert status == "HTTP/1.1 502 Bad Gateway"
            log = (app / "devserver.log").read_text()
            refused = (
                f'Blocked cross-origin request to Next.js dev resource /_next/hmr from "{NAME}"'
            )
            assert refused in log
            assert NEXT_ALLOWED_DEV_ORIGINS.rstrip() in log  # its advice is the README's line
        # The same dev server, through devtls with the rewrite: the socket opens.
        with devtls_in_front(session_ca_dir, port, *UPSTREAM_HOST) as front:
            status = websocket_handshake(session_ca_dir, front, "/_next/hmr?id=x")
            assert status == "HTTP/1.1 101 Switching Protocols"


# -- Angular ---------------------------------------------------------------------------------

# A zoneless standalone app: the component shows the text of a module of its own.
NG_MAIN = (
    COUNT_LOADS
    + """import { Component, provideZonelessChangeDetection } from '@angular/core';
import { bootstrapApplication } from '@angular/platform-browser';
import { message } from './message';

@Component({ selector: 'app-root', template: '<p id="app">{{ message }}</p>' })
class App { message = message; }

bootstrapApplication(App, { providers: [provideZonelessChangeDetection()] });
"""
)
NG_MESSAGE = "export const message = 'version {n}';\n"
NG_INDEX_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>hmr</title><base href="/"></head>
<body><app-root></app-root></body></html>
"""
NG_TSCONFIG = """{
  "compilerOptions": {
    "target": "ES2022", "module": "preserve", "moduleResolution": "bundler",
    "strict": true, "skipLibCheck": true
  },
  "files": ["src/main.ts"]
}
"""
NG_JSON = """{{
  "version": 1,
  "cli": {{ "analytics": false }},
  "projects": {{ "app": {{
    "projectType": "application", "root": "", "sourceRoot": "src",
    "architect": {{
      "build": {{ "builder": "@angular/build:application", "options": {{
        "browser": "src/main.ts", "index": "src/index.html", "tsConfig": "tsconfig.json",
        "optimization": false
      }} }},
      "serve": {{ "builder": "@angular/build:dev-server", "options": {{
        "buildTarget": "app:build"{serve}
      }} }}
    }}
  }} }}
}}
"""
# The README's line, in the serve target's options.
NG_ALLOWED_HOSTS = '"allowedHosts": ["app.test"]'


NG_TEMPLATE_MAIN = NG_MAIN.replace(
    "template: '<p id=\"app\">{{ message }}</p>'", "templateUrl: './app.html'"
)
NG_TEMPLATE = '<p id="app">version {n}</p>\n'


def ng_project(folder: Path, *, allowed_hosts: bool = False, template_file: bool = False) -> Path:
    serve = ",\n        " + NG_ALLOWED_HOSTS if allowed_hosts else ""
    files = {
        "angular.json": NG_JSON.format(serve=serve),
        "tsconfig.json": NG_TSCONFIG,
        "src/index.html": NG_INDEX_HTML,
        "src/main.ts": NG_MAIN,
        "src/message.ts": NG_MESSAGE.format(n=1),
    }
    if template_file:
        files["src/main.ts"] = NG_TEMPLATE_MAIN
        files["src/app.html"] = NG_TEMPLATE.format(n=1)
    return project(folder, files)


def ng_serve(port: int) -> list[str | Path]:
    return [node_bin("ng"), "serve", "--port", str(port)]


@pytest.mark.parametrize(
    ("devtls_args", "allowed_hosts"), [(UPSTREAM_HOST, False), ([], True)], ids=WAYS[:2]
)
def test_ng_serve_hmr_over_wss(
    session_ca_dir: Path, tmp_path: Path, devtls_args: list[str], allowed_hosts: bool
) -> None:
    app = ng_project(tmp_path / "app", allowed_hosts=allowed_hosts)
    port = free_port()
    with (
        dev_server(ng_serve(port), app, port),
        devtls_in_front(session_ca_dir, port, *devtls_args) as front,
        chromium_page(tmp_path / "home", session_ca_dir / "rootCA.pem", resolve=(NAME,)) as page,
    ):
        assert wait_for(lambda: curl_status(session_ca_dir, front)[0] == "200", 90), (
            app / "devserver.log"
        ).read_text()
        # An edit of a module that is not a component's template or style is a full reload
        # over the socket: Angular hot-replaces templates and styles only.
        hot_update(
            page, NAME, front, app / "src/message.ts", NG_MESSAGE, "[vite] connected.", loads="2"
        )


def test_ng_serve_hot_replaces_a_template_over_wss(session_ca_dir: Path, tmp_path: Path) -> None:
    """What Angular replaces without a reload: a component's template (and styles)."""
    app = ng_project(tmp_path / "app", template_file=True)
    port = free_port()
    with (
        dev_server(ng_serve(port), app, port),
        devtls_in_front(session_ca_dir, port, *UPSTREAM_HOST) as front,
        chromium_page(tmp_path / "home", session_ca_dir / "rootCA.pem", resolve=(NAME,)) as page,
    ):
        assert wait_for(lambda: curl_status(session_ca_dir, front)[0] == "200", 90), (
            app / "devserver.log"
        ).read_text()
        hot_update(page, NAME, front, app / "src/app.html", NG_TEMPLATE, "[vite] connected.")


def test_ng_serve_refuses_the_name_without_either(session_ca_dir: Path, tmp_path: Path) -> None:
    app = ng_project(tmp_path / "app")
    port = free_port()
    with dev_server(ng_serve(port), app, port):
        with devtls_in_front(session_ca_dir, port) as front:
            status, body = curl_status(session_ca_dir, front)
            assert status == "403"
            assert f'This host ("{NAME}") is not allowed' in body
            assert NG_ALLOWED_HOSTS in body  # its advice is the README's line
        with devtls_in_front(session_ca_dir, port, *UPSTREAM_HOST) as front:
            assert wait_for(lambda: curl_status(session_ca_dir, front)[0] == "200", 90)


def test_the_readme_shows_these_recipes() -> None:
    """What the tests above run is what the README tells users, line for line."""
    readme = (Path(__file__).parent.parent.parent / "README.md").read_text()
    assert VITE_ALLOWED_HOSTS in readme
    assert NEXT_ALLOWED_DEV_ORIGINS in readme
    assert WEBPACK_CONFIG.format(lines=WEBPACK_SOCKET_LINE) in readme
    assert f"```js\n{WEBPACK_ALLOWED_LINE}```" in readme
    assert f"```json\n{NG_ALLOWED_HOSTS}\n```" in readme
    for port in (5173, 8080, 3000, 4200):
        assert f"devtls serve --route '{NAME}={port}' --host-header upstream" in readme
