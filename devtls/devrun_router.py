"""The router behind ``devtls run``: the running one, or one started in the background.

A router started here is ``devtls serve`` detached from the terminal (a session of its own,
stdin /dev/null, its output in the runtime folder's router.log, its pid in router.pid),
with no routes and no demo page of its own, listening where ``DEVTLS_RUN_LISTEN`` says
(default 127.0.0.1:8443). ``devtls stop`` ends it. Two ``devtls run`` starting at once start
one router: the check and the start happen under a lock in the runtime folder.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from devtls import _files
from devtls.config import parse_address
from devtls.control_client import ControlClient, NotRunning
from devtls.errors import ConfigError, DevtlsError, UsageError
from devtls.runtime import (
    PID_FILE,
    control_socket_path,
    ensure_runtime_dir,
    log_file,
    pid_file,
)
from devtls.serve_settings import DEFAULT_LISTEN

LISTEN_VARIABLE = "DEVTLS_RUN_LISTEN"
ROUTER_CONFIG = "router.toml"
START_LOCK = "router.start.lock"
# A first start creates the CA (a second or so on a slow machine) and imports the proxy.
START_TIMEOUT = 20.0
POLL_SECONDS = 0.05


def listen_address() -> str:
    """Where a router started here listens: ``DEVTLS_RUN_LISTEN``, checked, else the default."""
    text = os.environ.get(LISTEN_VARIABLE, "").strip() or DEFAULT_LISTEN
    try:
        address = parse_address(text, LISTEN_VARIABLE)
    except ConfigError as exc:
        raise UsageError(exc.message, exc.hint) from None
    return str(address)


@contextlib.contextmanager
def _start_lock(folder: Path) -> Iterator[None]:
    import fcntl

    fd = os.open(folder / START_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def connect_or_start() -> tuple[ControlClient, int | None]:
    """A control connection to the running router, starting one first when none runs.

    Returns the connection and, when it was started now, the new router's pid.
    """
    with contextlib.suppress(NotRunning):
        return ControlClient.connect(), None
    folder = ensure_runtime_dir()
    with _start_lock(folder):
        with contextlib.suppress(NotRunning):
            return ControlClient.connect(), None  # another devtls run started it meanwhile
        pid = start_router(folder)
        return wait_for_router(pid), pid


def router_config(listen: str) -> str:
    return (
        "# Written by devtls run for the router it starts in the background.\n"
        f'listen = "{listen}"\n'
        "demo = false\n"
        "quiet = true\n"
    )


def start_router(folder: Path) -> int:
    """Start ``devtls serve`` detached; its pid (written to router.pid)."""
    listen = listen_address()
    config = folder / ROUTER_CONFIG
    _files.write_atomic(config, router_config(listen).encode(), 0o600)
    log = log_file()
    with open(os.devnull, "rb") as stdin, open(log, "ab") as out:
        os.chmod(log, 0o600)
        process = subprocess.Popen(
            [sys.executable, "-m", "devtls", "serve", "--config", str(config)],
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
            # The folder holds no devtls.toml, and no project's is applied to the router.
            cwd=folder,
            start_new_session=True,
            close_fds=True,
        )
    _files.write_atomic(folder / PID_FILE, f"{process.pid}\n".encode(), 0o600)
    # Reaped when it exits while we wait; once we are gone, init reaps it.
    _STARTED.append(process)
    return process.pid


_STARTED: list[subprocess.Popen[bytes]] = []


def _exited(pid: int) -> int | None:
    for process in _STARTED:
        if process.pid == pid:
            return process.poll()
    return None


def wait_for_router(pid: int, timeout: float = START_TIMEOUT) -> ControlClient:
    """Wait (bounded) for the router just started to answer on its control socket."""
    deadline = time.monotonic() + timeout
    path = control_socket_path()
    while True:
        status = _exited(pid)
        if status is not None:
            with contextlib.suppress(OSError):
                pid_file().unlink()
            raise DevtlsError(
                f"the router did not start: {_last_line(log_file())}",
                f"free the port, or set {LISTEN_VARIABLE}=127.0.0.1:PORT to another one "
                f"(the whole log: {log_file()})",
            )
        with contextlib.suppress(NotRunning):
            client = ControlClient.connect(path)
            if _owner_pid(client) == pid:
                return client
            client.close()
        if time.monotonic() > deadline:
            raise DevtlsError(
                f"the router (pid {pid}) did not answer within {timeout:g} s",
                f"see {log_file()}",
            )
        time.sleep(POLL_SECONDS)


def _owner_pid(client: ControlClient) -> int | None:
    pid = client.routes().get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def _last_line(path: Path) -> str:
    """The router's last words (the one-line error of a router that could not start)."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "it exited"
    last = lines[-1] if lines else "it exited"
    # Its hint speaks of serve's flags; ours replaces it.
    return last.removeprefix("devtls: error: ").partition("; ")[0]
