"""The router's control socket: a Unix socket in the user's runtime folder, owner-only.

The socket file is 0600 in a 0700 folder, and each connection's peer uid is checked again
(SO_PEERCRED): a connection from another user gets one error answer and is closed. One router
per user owns the socket: it holds an flock on ``control.lock`` for as long as it runs, so a
second ``devtls serve`` neither steals the socket nor mistakes a live one for a stale file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

from devtls import control_protocol as cp
from devtls.errors import DevtlsError, ProtocolError
from devtls.peercred import peer_identity
from devtls.runtime import CONTROL_LOCK, CONTROL_SOCKET

log = logging.getLogger("devtls")

# The owner's own tools (devtls run, devtls route) hold a few; more is a runaway script.
MAX_CONTROL_CONNECTIONS = 256


class ControlHandler(Protocol):
    async def handle(self, request: cp.Request, lease: int, pid: int | None) -> dict[str, Any]: ...

    def release(self, lease: int) -> None: ...


class ControlServer:
    def __init__(
        self,
        handler: ControlHandler,
        folder: Path,
        *,
        allowed_uid: int | None = None,
        write_log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.handler = handler
        self.folder = folder
        self.path = folder / CONTROL_SOCKET
        self.allowed_uid = os.geteuid() if allowed_uid is None else allowed_uid
        self.write_log = write_log
        self.connections: set[ControlConnection] = set()
        self._lock_fd: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._leases = itertools.count(1)

    async def start(self) -> str | None:
        """Listen; or, when another router owns the socket, say so in one line (None: ok)."""
        owner = self._take_lock()
        if owner is not None:
            return owner
        with contextlib.suppress(FileNotFoundError):
            # Whatever is there is left by a router that is gone: we hold the lock now.
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            previous = os.umask(0o177)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(previous)
            os.chmod(self.path, 0o600)
            self._inode = os.lstat(self.path).st_ino
            sock.listen(16)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            self._server = await loop.create_unix_server(
                lambda: ControlConnection(self, next(self._leases)), sock=sock
            )
        except BaseException:
            sock.close()
            self._release_lock()
            raise
        return None

    def _take_lock(self) -> str | None:
        import fcntl

        fd = os.open(self.folder / CONTROL_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"another devtls serve (pid {text})" if text.isdigit() else "another devtls serve"
            return (
                f"devtls: {who} owns the control socket; the routes of this one cannot be "
                "changed with 'devtls route'"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return None

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        """Stop listening and remove the socket file (if it is still ours); held leases end
        with their connections."""
        if self._server is not None:
            self._server.close()
            self._server = None
            with contextlib.suppress(OSError):
                info = os.lstat(self.path)
                if stat.S_ISSOCK(info.st_mode) and info.st_ino == self._inode:
                    os.unlink(self.path)
        for connection in list(self.connections):
            connection.close()
        self._release_lock()


class ControlConnection(asyncio.Protocol):
    """One client: requests are answered one at a time, in order."""

    def __init__(self, server: ControlServer, lease: int) -> None:
        self.server = server
        self.lease = lease
        self.pid: int | None = None
        self.reader = cp.LineReader(cp.MAX_REQUEST_LINE)
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = transport = cast(asyncio.Transport, transport)
        server = self.server
        try:
            uid, self.pid = peer_identity(transport.get_extra_info("socket"))
        except OSError:
            uid = -1
        if uid != server.allowed_uid:
            server.write_log(f"control: refused a connection from uid {uid}")
            self._fail(cp.ControlError("this router belongs to another user", None, "refused"))
            return
        if len(server.connections) >= MAX_CONTROL_CONNECTIONS:
            self._fail(cp.ControlError("too many control connections", "close some", "refused"))
            return
        server.connections.add(self)

    def _fail(self, error: DevtlsError) -> None:
        assert self.transport is not None
        self.transport.write(cp.error_line(error))
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self not in self.server.connections:
            return
        self.reader.feed(data)
        self._next()

    def _next(self) -> None:
        transport = self.transport
        while not self.busy and transport is not None and not transport.is_closing():
            try:
                line = self.reader.next_line()
            except ProtocolError as exc:
                self._fail(exc)
                return
            if line is None:
                break
            try:
                request = cp.parse_request(line)
            except cp.ControlError as exc:
                transport.write(cp.error_line(exc))
                continue
            self.busy = True
            task = asyncio.ensure_future(self.server.handler.handle(request, self.lease, self.pid))
            task.add_done_callback(self._answered)
        if transport is None or transport.is_closing():
            return
        # Requests sent ahead wait in the buffer; a flood of them is not read further.
        should_pause = self.busy and self.reader.pending > cp.MAX_REQUEST_LINE
        if should_pause != self.paused:
            self.paused = should_pause
            (transport.pause_reading if should_pause else transport.resume_reading)()

    def _answered(self, task: asyncio.Future[dict[str, Any]]) -> None:
        self.busy = False
        transport = self.transport
        if task.cancelled() or transport is None or transport.is_closing():
            return
        exc = task.exception()
        if isinstance(exc, DevtlsError):
            transport.write(cp.error_line(exc))
        elif exc is not None:
            log.error("control request failed", exc_info=exc)
            transport.write(cp.error_line(DevtlsError(f"the router failed: {exc!r}")))
        else:
            transport.write(cp.ok_line(**task.result()))
        self._next()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if self in server.connections:
            server.connections.discard(self)
            # A held route ends with its holder: a killed `devtls run` is noticed by EOF.
            server.handler.release(self.lease)
