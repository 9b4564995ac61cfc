"""A small blocking client of the router's control socket, for the CLI (and ``devtls run``).

Before connecting it checks that the socket file is a socket owned by the current user, and
after connecting that the process listening runs as the current user too: a socket planted
by someone else is never talked to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from devtls import control_protocol as cp
from devtls.config import HostHeader
from devtls.errors import DevtlsError
from devtls.peercred import peer_identity
from devtls.runtime import control_socket_path, pid_file

# A listing probes the upstreams (half a second at most); the rest answers at once.
REQUEST_TIMEOUT = 15.0
# After `stop`: the router drains (its drain_timeout), then exits; this much more is allowed.
STOP_GRACE_SECONDS = 5.0


class NotRunning(DevtlsError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"no devtls router is running (nothing listens on {path})",
            "start one with 'devtls serve' (e.g. devtls serve --route 'app.localhost=3000')",
        )


def check_socket_file(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise NotRunning(path) from None
    if not stat.S_ISSOCK(info.st_mode):
        raise DevtlsError(f"{path} is not a socket", f"remove it: rm {path}")
    if info.st_uid != os.geteuid():
        raise DevtlsError(
            f"the control socket {path} belongs to uid {info.st_uid}, not to you",
            "it is not yours to use; set XDG_RUNTIME_DIR to a folder of your own",
        )


def list_routes(path: Path | None = None) -> dict[str, Any]:
    with ControlClient.connect(path) as client:
        return client.routes()


def add_route(
    target: str, upstream: str, *, force: bool = False, path: Path | None = None
) -> dict[str, Any]:
    """Add a route that stays until removed (checked before the router is looked for)."""
    cp.route_from(target, upstream)
    with ControlClient.connect(path) as client:
        return client.add(target, upstream, force=force)


def remove_route(target: str, path: Path | None = None) -> dict[str, Any]:
    cp.parse_target(target)
    with ControlClient.connect(path) as client:
        return client.remove(target)


class ControlClient:
    def __init__(self, sock: socket.socket, path: Path) -> None:
        self.sock = sock
        self.path = path
        self.reader = cp.LineReader(cp.MAX_RESPONSE_LINE)

    @classmethod
    def connect(cls, path: Path | None = None, timeout: float = REQUEST_TIMEOUT) -> ControlClient:
        """Connect to the running router; NotRunning when there is none."""
        path = path or control_socket_path()
        check_socket_file(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            uid, _pid = peer_identity(sock)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                # A socket file left by a router that is gone.
                raise NotRunning(path) from None
            raise DevtlsError(f"cannot reach the router at {path}: {exc.strerror or exc}") from None
        if uid != os.geteuid():
            sock.close()
            raise DevtlsError(
                f"the router behind {path} runs as uid {uid}, not as you",
                "set XDG_RUNTIME_DIR to a folder of your own",
            )
        return cls(sock, path)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(self, op: str, **fields: object) -> dict[str, Any]:
        """Send one request, read its answer; an error answer raises its ControlError."""
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                # A router that refuses us answers and closes at once: its answer is read.
                self.sock.sendall(cp.request_line(op, **fields))
            while True:
                line = self.reader.next_line()
                if line is not None:
                    return cp.parse_response(line)
                data = self.sock.recv(65536)
                if not data:
                    raise DevtlsError(
                        "the router closed the control connection", "see its log for why"
                    )
                self.reader.feed(data)
        except OSError as exc:
            raise DevtlsError(f"the control connection failed: {exc.strerror or exc}") from None

    def routes(self) -> dict[str, Any]:
        return self.request("list")

    def add(
        self,
        target: str,
        upstream: str,
        *,
        hold: bool = False,
        force: bool = False,
        host_header: HostHeader | None = None,
        starting: bool = False,
    ) -> dict[str, Any]:
        """Add a route; ``hold`` ties it to this connection (it goes when the client does),
        ``starting`` answers a "starting" page while the upstream refuses connections."""
        cp.route_from(target, upstream)  # a typo is a usage error, router or not
        fields: dict[str, object] = {"hold": hold, "force": force}
        if host_header is not None:
            fields["host_header"] = host_header
        if starting:
            fields["starting"] = True
        return self.request("add", route=target, upstream=upstream, **fields)

    def remove(self, target: str) -> dict[str, Any]:
        cp.parse_target(target)
        return self.request("remove", route=target)


def stop_router(path: Path | None = None) -> int:
    """Ask the running router to stop (a graceful drain), wait for it, remove its pid file.

    Returns the router's process id.
    """
    with ControlClient.connect(path) as client:
        answer = client.request("stop")
    pid = answer.get("pid")
    drain = answer.get("drain_timeout")
    if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(drain, (int, float)):
        raise DevtlsError("the router's answer to stop is malformed")
    deadline = time.monotonic() + float(drain) + STOP_GRACE_SECONDS
    while _alive(pid):
        if time.monotonic() > deadline:
            raise DevtlsError(
                f"the router (pid {pid}) is still running", f"end it with: kill {pid}"
            )
        time.sleep(0.05)
    remove_pid_file(pid)
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A router that has exited but whose parent (a shell, a test) has not reaped it yet is
    # a zombie: it answers kill(0) but is done.
    with contextlib.suppress(OSError, IndexError):
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        return stat_line.rpartition(")")[2].split()[0] != "Z"
    return True


def remove_pid_file(pid: int) -> None:
    """The pid file of a router started in the background, if it names this one."""
    path = pid_file()
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().split()[0]) == pid:
            path.unlink()


def format_routes(listing: dict[str, Any]) -> list[str]:
    """The text of ``devtls routes``: one aligned row per route, then the fallback."""
    header = ("ROUTE", "UPSTREAM", "SOURCE", "HELD BY", "ANSWERS")
    rows = [
        (
            str(r.get("route", "")),
            str(r.get("upstream", "")),
            str(r.get("source", "")),
            str(r["held_by"]) if r.get("held_by") else "-",
            "yes" if r.get("answers") else "no",
        )
        for r in listing.get("routes", [])
    ]
    fallback = listing.get("fallback")
    if isinstance(fallback, dict):
        rows.append(
            (
                "(every other host)",
                str(fallback.get("upstream", "")),
                str(fallback.get("source", "")),
                "-",
                "yes" if fallback.get("answers") else "no",
            )
        )
    if not rows:
        return ["no routes (add one with: devtls route add HOST[/PATH] UPSTREAM)"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
