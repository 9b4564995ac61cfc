"""Routes changed while the router runs: the control socket, reloads, leases, the uid check.

The router runs in the test loop's harness (tests/proxy/conftest.py) with its live side
(``serve_live``) on a runtime folder of the test's own; clients are the real blocking
ControlClient, TLS sockets, a WebSocket and an HTTP/2 connection that stay open throughout.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from devtls import control_protocol as cp
from devtls.ca import LocalCA
from devtls.config import ServeOptions, build_config
from devtls.control_client import ControlClient, NotRunning
from devtls.issue import issue_leaf
from devtls.proxy.live import LiveHandle, serve_live
from devtls.proxy.server import RunningServer
from devtls.runtime import CONTROL_SOCKET
from tests.conftest import IN_CI, wait_for
from tests.proxy.conftest import Harness
from tests.proxy.h2client import H2Client, request_fields

POLL = 0.05


def tls_get(
    h: Harness, port: int, host: str, path: str = "/", *, sni: str | None = None
) -> tuple[int, bytes, bytes]:
    """(status, body, the served certificate in DER) for a GET with Host ``host`` and SNI
    ``sni`` (``host`` unless given), the certificate verified for the SNI name."""
    context = ssl.create_default_context(cafile=str(h.ca_file))
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=sni or host) as tls,
    ):
        der = tls.getpeercert(binary_form=True) or b""
        tls.sendall(request.encode())
        data = b""
        while len(data) < 1 << 20:
            piece = tls.recv(65536)
            if not piece:
                break
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body, der


class Live:
    """A harness router with its live side; ``client()`` talks to its control socket."""

    def __init__(self, h: Harness, running: RunningServer, handle: LiveHandle, folder: Path):
        self.h = h
        self.running = running
        self.handle = handle
        self.folder = folder

    @property
    def port(self) -> int:
        return self.running.port

    def client(self) -> ControlClient:
        return ControlClient.connect(self.folder / CONTROL_SOCKET)

    def close(self) -> None:
        async def close() -> None:
            self.handle.close()

        self.h.loop.run(close())


@contextmanager
def live_router(
    h: Harness,
    folder: Path,
    *,
    cwd: Path | None = None,
    allowed_uid: int | None = None,
    **given: object,
) -> Iterator[Live]:
    given.setdefault("listen", "127.0.0.1:0")
    options = ServeOptions(**given)
    config = build_config(options, cwd=cwd or h.caroot)
    running = h.start_config(config)
    assert running.live is not None
    handle = h.loop.run(
        serve_live(
            running.live,
            config,
            options=options,
            on_stop=running.stop,
            write_log=h.log.append,
            folder=folder,
            allowed_uid=allowed_uid,
            cwd=cwd or h.caroot,
            poll_seconds=POLL,
        )
    )
    live = Live(h, running, handle, folder)
    try:
        yield live
    finally:
        live.close()


def test_a_route_added_live_serves_a_new_host_with_a_minted_certificate(
    harness: Harness, runtime_dir: Path
) -> None:
    with live_router(harness, runtime_dir, routes=[f"localhost={harness.upstream.port}"]) as live:
        assert tls_get(harness, live.port, "api.localhost", "/headers", sni="localhost")[0] == 404
        with live.client() as client:
            answer = client.add("api.localhost/headers", str(harness.upstream.port))
        assert answer["route"] == "api.localhost/headers"
        status, body, _ = tls_get(harness, live.port, "api.localhost", "/headers/x")
        assert status == 200
        assert json.loads(body)["path"] == "/headers/x"
        with live.client() as client:
            listing = client.routes()
            routes = {r["route"]: r for r in listing["routes"]}
            assert routes["api.localhost/headers"]["source"] == "control"
            assert routes["api.localhost/headers"]["answers"] is True
            assert routes["localhost"]["source"] == "command-line"
            client.remove("api.localhost/headers")
            with pytest.raises(cp.ControlError, match="comes from the command line"):
                client.remove("localhost")
        assert tls_get(harness, live.port, "api.localhost", "/headers", sni="localhost")[0] == 404
        assert "devtls: route added: api.localhost/headers -> " in "\n".join(harness.log)


def test_open_websocket_and_http2_connections_survive_adds_reloads_and_removes(
    harness: Harness, runtime_dir: Path, tmp_path: Path
) -> None:
    up = harness.upstream
    toml = tmp_path / "devtls.toml"
    toml.write_text(f'routes = ["localhost={up.ws_port}"]\n')
    context = ssl.create_default_context(cafile=str(harness.ca_file))
    with (
        live_router(harness, runtime_dir, cwd=tmp_path) as live,
        ws_connect(f"wss://localhost:{live.port}/", ssl=context, open_timeout=10) as ws,
        H2Client(live.port, harness.ca_file) as h2,
    ):
        h2.handshake()
        stream = 1

        def h2_status(authority: str) -> int | None:
            nonlocal stream
            h2.h2.send_headers(
                stream, request_fields(b"/headers", authority=authority.encode()), end_stream=True
            )
            h2.flush()
            received = h2.read(lambda r: r.ended(stream))
            status = received.status(stream)
            stream += 2
            return status

        def echoes(text: str) -> bool:
            ws.send(text)
            return ws.recv(timeout=10) == text

        assert echoes("before")
        assert h2_status("api.localhost") == 404
        with live.client() as client:
            client.add("api.localhost", str(up.port))
        assert echoes("after add")
        assert h2_status("api.localhost") == 200
        # An edit of devtls.toml, picked up by the watch.
        toml.write_text(f'routes = ["localhost={up.ws_port}", "file.localhost={up.port}"]\n')
        assert wait_for(lambda: any("reloaded" in line for line in harness.log))
        assert echoes("after reload")
        assert h2_status("file.localhost") == 200
        assert h2_status("api.localhost") == 200  # the control layer survives reloads
        with live.client() as client:
            client.remove("api.localhost")
        assert echoes("after remove")
        assert h2_status("api.localhost") == 404
        assert not h2.received.closed


def test_a_bad_toml_keeps_the_running_routes_and_says_why_once(
    harness: Harness, runtime_dir: Path, tmp_path: Path
) -> None:
    port = harness.upstream.port
    toml = tmp_path / "devtls.toml"
    toml.write_text(f'routes = ["localhost={port}"]\n')
    with live_router(harness, runtime_dir, cwd=tmp_path) as live:
        toml.write_text('routes = ["localhost=')
        assert wait_for(lambda: any("failed" in line for line in harness.log))
        failed = [line for line in harness.log if "reload" in line]
        assert len(failed) == 1
        assert "keeping the running config" in failed[0]
        assert "not valid TOML" in failed[0]
        assert tls_get(harness, live.port, "localhost", "/headers")[0] == 200
        # A setting that cannot change while running is named, the rest applied.
        # (--listen is a flag here, and flags win over the file: not a change.)
        toml.write_text(f'http2 = false\nlisten = "127.0.0.1:1"\nroutes = ["x.localhost={port}"]\n')
        assert wait_for(lambda: any("restart devtls serve" in line for line in harness.log))
        assert "devtls: reload: http2 changed in " in harness.log[-2]
        assert tls_get(harness, live.port, "x.localhost", "/headers")[0] == 200
        assert tls_get(harness, live.port, "localhost", "/headers")[0] == 404


def test_reload_applies_quiet_names_and_the_fallback(
    harness: Harness, runtime_dir: Path, tmp_path: Path
) -> None:
    toml = tmp_path / "devtls.toml"
    toml.write_text(f"upstream = {harness.upstream.port}\n")
    with live_router(harness, runtime_dir, cwd=tmp_path) as live:
        assert tls_get(harness, live.port, "localhost", "/")[1] == b"root"
        toml.write_text(
            f'upstream = "127.0.0.1:{harness.upstream.ws_port}"\nquiet = true\n'
            'names = ["localhost", "extra.test"]\n'
        )
        assert live.handle.router.reload("test")
        assert live.running.state.config.quiet
        assert str(live.running.state.router.fallback).endswith(f":{harness.upstream.ws_port}")
        leaf = live.running.live.certs.leaf  # type: ignore[union-attr]
        assert leaf is not None
        assert "extra.test" in [str(n) for n in leaf.names]


def write_pair(ca: LocalCA, folder: Path, name: str) -> bytes:
    leaf = issue_leaf(ca, [name], key_type="ecdsa")
    leaf.write_pem(folder / "cert.pem", folder / "key.pem")
    return leaf.cert_pem()


def served_fingerprint(h: Harness, port: int) -> str:
    return hashlib.sha256(tls_get(h, port, "localhost", "/")[2]).hexdigest()


def test_cert_and_key_files_are_reloaded_when_they_change(
    harness: Harness, runtime_dir: Path, tmp_path: Path, local_ca: LocalCA
) -> None:
    write_pair(local_ca, tmp_path, "localhost")
    with live_router(
        harness,
        runtime_dir,
        upstream=str(harness.upstream.ws_port),
        cert_file=str(tmp_path / "cert.pem"),
        key_file=str(tmp_path / "key.pem"),
    ) as live:
        context = ssl.create_default_context(cafile=str(harness.ca_file))
        with ws_connect(f"wss://localhost:{live.port}/", ssl=context, open_timeout=10):
            first = served_fingerprint(harness, live.port)
            write_pair(local_ca, tmp_path, "localhost")
            assert wait_for(lambda: served_fingerprint(harness, live.port) != first)
            second = served_fingerprint(harness, live.port)
            assert any("reloaded the --cert/--key" in line for line in harness.log)
            # A key that does not match keeps the pair in use, with one line.
            other = issue_leaf(local_ca, ["localhost"], key_type="ecdsa")
            (tmp_path / "key.pem").write_bytes(other.key_pem())
            assert wait_for(lambda: any("keeping the old pair" in line for line in harness.log))
            assert served_fingerprint(harness, live.port) == second


def test_a_held_route_goes_when_its_holder_is_killed(harness: Harness, runtime_dir: Path) -> None:
    holder_code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from devtls.control_client import ControlClient\n"
        "client = ControlClient.connect(Path(sys.argv[1]))\n"
        "client.add('held.localhost', sys.argv[2], hold=True)\n"
        "print('held', flush=True)\n"
        "time.sleep(120)\n"
    )
    with live_router(harness, runtime_dir, upstream=str(harness.upstream.port)) as live:
        holder = subprocess.Popen(
            [sys.executable, "-c", holder_code, str(runtime_dir / CONTROL_SOCKET),
             str(harness.upstream.port)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            with live.client() as client:
                routes = client.routes()["routes"]
                assert [(r["route"], r["held_by"]) for r in routes] == [
                    ("held.localhost", holder.pid)
                ]
                with pytest.raises(cp.ControlError, match=f"held by process {holder.pid}"):
                    client.add("held.localhost", "9")
            holder.kill()
            holder.wait(10)

            def gone() -> bool:
                with live.client() as client:
                    return client.routes()["routes"] == []

            assert wait_for(gone)
            assert "its holder is gone" in harness.log[-1]
        finally:
            holder.kill()
            holder.wait(10)
            holder.stdout.close()  # type: ignore[union-attr]


def test_force_takes_over_a_held_route(harness: Harness, runtime_dir: Path) -> None:
    with live_router(harness, runtime_dir) as live, live.client() as first:
        first.add("a.localhost", "1", hold=True)
        with live.client() as second:
            second.add("a.localhost", str(harness.upstream.port), hold=True, force=True)
            first.close()  # the first holder's end no longer removes the route
            assert wait_for(lambda: len(live.handle.control.connections) == 1)  # type: ignore[union-attr]
            assert tls_get(harness, live.port, "a.localhost", "/")[1] == b"root"
        assert wait_for(lambda: live.handle.router.table.entries() == [])


def test_bad_requests_get_an_error_answer_and_the_connection_goes_on(
    harness: Harness, runtime_dir: Path
) -> None:
    with live_router(harness, runtime_dir), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(runtime_dir / CONTROL_SOCKET))
        sock.sendall(b"garbage\n" + cp.request_line("list"))
        reader = cp.LineReader(cp.MAX_RESPONSE_LINE)
        answers: list[bytes] = []
        while len(answers) < 2:
            reader.feed(sock.recv(65536))
            while (line := reader.next_line()) is not None:
                answers.append(line)
        assert json.loads(answers[0])["kind"] == "protocol"
        assert json.loads(answers[1])["ok"] is True
        # A line over the limit: one error answer, then the router closes.
        sock.sendall(b"x" * (cp.MAX_REQUEST_LINE + 2))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert b"longer than" in data


def test_another_uid_is_refused_by_the_router(harness: Harness, runtime_dir: Path) -> None:
    with live_router(harness, runtime_dir, allowed_uid=os.geteuid() + 1) as live:
        with live.client() as client, pytest.raises(cp.ControlError, match="another user"):
            client.routes()
        assert f"control: refused a connection from uid {os.geteuid()}" in harness.log


def require_root() -> None:
    if os.geteuid() != 0:
        message = "needs root to act as another user"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def test_a_real_other_user_is_refused_even_through_an_open_socket_file(
    harness: Harness, runtime_dir: Path
) -> None:
    require_root()
    with live_router(harness, runtime_dir) as live:
        path = runtime_dir / CONTROL_SOCKET
        # Loosen the file and folder modes by hand: the peer uid check still holds.
        os.chmod(runtime_dir, 0o755)
        os.chmod(path, 0o666)
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with a loop thread
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(read_end)
                os.setgid(65534)
                os.setuid(65534)
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(10)
                sock.connect(str(path))
                # The router answers at once, before any request, and closes.
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
                os.write(write_end, answer)
            except BaseException as exc:
                os.write(write_end, repr(exc).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        answer = b""
        while chunk := os.read(read_end, 4096):
            answer += chunk
        os.close(read_end)
        os.waitpid(pid, 0)
        assert b"another user" in answer
        assert not live.running.stopping.is_set()
        assert "control: refused a connection from uid 65534" in harness.log


def test_the_client_refuses_a_socket_of_another_user(harness: Harness, runtime_dir: Path) -> None:
    require_root()
    with live_router(harness, runtime_dir) as live:
        os.chown(runtime_dir / CONTROL_SOCKET, 65534, 65534)
        with pytest.raises(Exception, match="belongs to uid 65534, not to you"):
            live.client()


def test_a_stale_socket_file_is_replaced_and_a_live_one_is_not_stolen(
    harness: Harness, runtime_dir: Path
) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(runtime_dir / CONTROL_SOCKET))
    stale.close()  # the file stays, nobody listens
    with pytest.raises(NotRunning):
        ControlClient.connect(runtime_dir / CONTROL_SOCKET)
    with live_router(harness, runtime_dir) as first:
        with first.client() as client:
            assert client.routes()["pid"] == os.getpid()
        with live_router(harness, runtime_dir, routes=["localhost=1"]) as second:
            assert second.handle.control is None
            assert second.handle.notices == [
                f"devtls: another devtls serve (pid {os.getpid()}) owns the control socket; "
                "the routes of this one cannot be changed with 'devtls route'"
            ]
            with first.client() as client:
                client.add("first.localhost", "1")
            assert tls_get(harness, first.port, "first.localhost")[0] == 502
            assert tls_get(harness, second.port, "first.localhost", sni="localhost")[0] == 404
    assert not (runtime_dir / CONTROL_SOCKET).exists()
