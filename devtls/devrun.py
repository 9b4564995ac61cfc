"""``devtls run``: a dev server behind the shared router as ``https://NAME.localhost``.

It picks a free loopback port, registers ``NAME.localhost`` with the running router (starting
one in the background when none runs) on a control connection it keeps open for the child's
life, starts the command with ``PORT``, ``HOST``, ``DEVTLS_URL`` and ``devtls env``'s
variables (and the dev server's own flags, see ``devrun_inject``), passes signals on to the
child's process group, and exits with the child's status once the route is gone.

A ``devtls run`` killed outright (SIGKILL) closes that connection with its death: the router
removes the route; on Linux the kernel sends the child SIGTERM too (``childguard``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from devtls import _files
from devtls import control_protocol as cp
from devtls.ca import LocalCA
from devtls.childguard import child_setup
from devtls.control_client import ControlClient, NotRunning
from devtls.devrun_inject import LOOPBACK, Injection, app_name, host_of, inject
from devtls.devrun_router import connect_or_start
from devtls.errors import DevtlsError, UsageError
from devtls.runtime import ensure_runtime_dir

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How often the loop looks at the child, the router and (until it answers) the dev server.
TICK_SECONDS = 0.2
# Once the router is gone, how often to look for one again (one started by hand, or anew).
RECONNECT_SECONDS = 1.0
# Removing the route when the child is done: the router answers at once.
RELEASE_TIMEOUT = 2.0
GIT_TIMEOUT = 5.0
# What a shell answers for a command it cannot find.
NOT_FOUND_STATUS = 127
# Variables naming CA files that devtls run points at files holding the devtls root too.
CA_VARIABLES = ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class CommandNotFound(DevtlsError):
    exit_code = NOT_FOUND_STATUS


class RouteTaken(DevtlsError):
    pass


# -- the project: its name -------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def worktree_branch(cwd: Path) -> str | None:
    """The branch of a git worktree other than the main one; None in the main one (or none)."""
    dirs = _git(cwd, "rev-parse", "--git-dir", "--git-common-dir")
    if dirs is None or len(dirs.splitlines()) != 2:
        return None
    git_dir, common_dir = (os.path.realpath(cwd / line) for line in dirs.splitlines())
    if git_dir == common_dir:
        return None
    branch = _git(cwd, "symbolic-ref", "--short", "-q", "HEAD")
    return branch or None  # a detached HEAD has no name to give


def read_package_json(cwd: Path) -> str | None:
    try:
        return (cwd / "package.json").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def project_name(cwd: Path, explicit: str | None) -> str:
    return app_name(explicit, read_package_json(cwd), cwd.resolve().name, worktree_branch(cwd))


# -- the child's environment -----------------------------------------------------------------


def free_port() -> int:
    """A port free on loopback now. Another program may take it before the dev server binds
    it; the dev server then fails to listen and says so (Vite's --strictPort makes sure)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def merged_bundle(theirs: Path, root_pem: bytes, folder: Path) -> Path:
    """A file of the user's own CA file plus the devtls root (named by its content)."""
    data = theirs.read_bytes()
    if root_pem.strip() in data:
        return theirs
    content = data.rstrip(b"\n") + b"\n" + root_pem
    path = folder / f"ca-{hashlib.sha256(content).hexdigest()[:16]}.pem"
    if not path.exists():
        _files.write_atomic(path, content, _files.PUBLIC_MODE)
    return path


def child_env(
    base: Mapping[str, str], port: int, url: str, ca_variables: Mapping[str, str], root_pem: bytes
) -> dict[str, str]:
    """The child's environment: ours, the CA variables (a file the user set is kept, with the
    devtls root added), then PORT, HOST and DEVTLS_URL."""
    env = dict(base)
    folder: Path | None = None
    for name, ours in ca_variables.items():
        theirs = base.get(name)
        if theirs and theirs != ours and name in CA_VARIABLES:
            try:
                folder = folder or ensure_runtime_dir()
                env[name] = str(merged_bundle(Path(theirs), root_pem, folder))
                continue
            except OSError:
                pass  # a variable naming a file that is not there: ours instead
        env[name] = ours
    env.update({"PORT": str(port), "HOST": LOOPBACK, "DEVTLS_URL": url})
    return env


# -- the banner ------------------------------------------------------------------------------


def _arrow(out: TextIO) -> str:
    try:
        "➜".encode(out.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "->"
    return "➜"


def banner(name: str, url: str, command: Sequence[str], router_pid: int | None) -> list[str]:
    arrow = _arrow(sys.stdout)
    lines = ["", f"  devtls  {name}  (running: {shlex.join(command)})", "", f"  {arrow}  {url}"]
    if router_pid is not None:
        lines.append(
            f"  {arrow}  router started in the background (pid {router_pid}; devtls stop ends it)"
        )
    return [*lines, ""]


def say(lines: Sequence[str]) -> None:
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


# -- the route -------------------------------------------------------------------------------


def url_of(host: str, listen_port: int) -> str:
    return f"https://{host}{'' if listen_port == 443 else f':{listen_port}'}/"


def register(client: ControlClient, host: str, port: int, *, force: bool) -> int:
    """Add the held route; the router's TLS port. RouteTaken names the holder's pid."""
    try:
        answer = client.add(
            host,
            # localhost, not 127.0.0.1: the rewritten Host and Origin then name localhost,
            # which dev servers trust by default (Next.js allows no IP address as an origin).
            # The router still tries 127.0.0.1 first, where the command was told to listen.
            f"localhost:{port}",
            hold=True,
            force=force,
            host_header="upstream",
            starting=True,
        )
    except cp.ControlError as exc:
        if "is held by" not in exc.message:
            raise
        holder = _holder(client, host)
        who = f"process {holder}" if holder else "another process"
        raise RouteTaken(
            f"{host} is already served by {who}",
            "stop it, choose another name with --name, or take it over with --force",
        ) from None
    port_answer = answer.get("listen_port")
    if not isinstance(port_answer, int) or isinstance(port_answer, bool):
        raise DevtlsError("the router did not say its port", "use the same devtls version")
    return port_answer


def _holder(client: ControlClient, host: str) -> int | None:
    with contextlib.suppress(DevtlsError):
        for row in client.routes().get("routes", []):
            if row.get("route") == host and isinstance(row.get("held_by"), int):
                return int(row["held_by"])
    return None


def release(client: ControlClient) -> None:
    """End the held route now: half-close, and wait (bounded) for the router to close too,
    which it does once the route is gone. A route taken over with --force stays its new
    holder's."""
    sock = client.sock
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(RELEASE_TIMEOUT)
        deadline = time.monotonic() + RELEASE_TIMEOUT
        while time.monotonic() < deadline and sock.recv(4096):
            pass
    client.close()


# -- the child -------------------------------------------------------------------------------


def exit_status(returncode: int) -> int:
    """A child killed by a signal exits 128 + its number, as shells report it."""
    return 128 - returncode if returncode < 0 else returncode


def _terminal() -> int | None:
    """Our terminal's fd when we are its foreground job (the child then takes it over)."""
    try:
        fd = sys.stdin.fileno()
        if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _give_terminal(fd: int, pgid: int) -> None:
    # A process that is not the foreground job gets SIGTTOU for this unless it ignores it.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, pgid)
    finally:
        signal.signal(signal.SIGTTOU, previous)


def spawn(
    command: Sequence[str], env: Mapping[str, str], terminal: int | None
) -> subprocess.Popen[bytes]:
    """The child in a process group of its own, the terminal's foreground job when we were:
    so Ctrl-C and a dev server's keyboard shortcuts reach it as they would without us."""
    guard = child_setup(os.getpid())

    def setup() -> None:  # pragma: no cover - runs in the forked child
        guard()
        if terminal is not None:
            _give_terminal(terminal, os.getpid())

    try:
        process = subprocess.Popen(list(command), env=dict(env), preexec_fn=setup)
    except FileNotFoundError:
        raise CommandNotFound(
            f"command not found: {command[0]}", "check its spelling, or that it is on PATH"
        ) from None
    except PermissionError:
        raise CommandNotFound(
            f"cannot run {command[0]}: permission denied", "is it executable?"
        ) from None
    if terminal is not None:
        # The child does it too; whichever comes first, the other changes nothing.
        _give_terminal(terminal, process.pid)
    return process


@contextlib.contextmanager
def forwarding_signals(pgid: int) -> Iterator[list[int]]:
    """SIGINT, SIGTERM and SIGHUP to us go to the child's group; yields the ones received."""
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def answers(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=TICK_SECONDS).close()
    except OSError:
        return False
    return True


@dataclass
class Supervisor:
    """The loop while the child runs: the router's connection, the first answer."""

    name: str
    host: str
    port: int
    url: str
    force: bool
    client: ControlClient | None
    say: Callable[[Sequence[str]], None] = say
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    next_reconnect: float = 0.0

    def tick(self) -> None:
        if not self.ready and answers(self.port):
            self.ready = True
            took = time.monotonic() - self.started
            self.say([f"  devtls  {self.name} ready in {took:.1f} s at {self.url}"])
        client = self.client
        if client is None:
            if time.monotonic() >= self.next_reconnect:
                self._reconnect()
            time.sleep(TICK_SECONDS)
            return
        readable, _, _ = select.select([client.sock], [], [], TICK_SECONDS)
        if readable and not _has_data(client.sock):
            self.client = None
            client.close()
            self.next_reconnect = time.monotonic() + RECONNECT_SECONDS
            self.say([f"  devtls  the router stopped: {self.host} is not served until one runs"])

    def _reconnect(self) -> None:
        self.next_reconnect = time.monotonic() + RECONNECT_SECONDS
        try:
            client = ControlClient.connect()
        except (NotRunning, DevtlsError):
            return
        try:
            listen_port = register(client, self.host, self.port, force=self.force)
        except DevtlsError as exc:
            client.close()
            self.say([f"  devtls  {self.host} not served again: {exc}"])
            return
        self.client = client
        self.url = url_of(self.host, listen_port)
        self.say([f"  devtls  {self.host} is served again at {self.url}"])


def _has_data(sock: socket.socket) -> bool:
    """Readable: data (nothing the router sends unasked; read and dropped) or the end."""
    try:
        return bool(sock.recv(65536))
    except OSError:
        return False


@dataclass(frozen=True)
class RunRequest:
    command: tuple[str, ...]
    name: str | None = None
    inject: bool = True
    force: bool = False
    cwd: Path = field(default_factory=Path.cwd)


def run(request: RunRequest) -> int:
    """Run the command behind the router; the child's exit status."""
    if not request.command:
        raise UsageError("devtls run needs a command", "e.g. devtls run -- npm run dev")
    name = project_name(request.cwd, request.name)
    host = host_of(name)
    ca, created = LocalCA.load_or_create()
    if created:
        sys.stderr.write(
            f"devtls: created a new local CA in {ca.path} (not trusted yet: run 'devtls install')\n"
        )
    client, router_pid = connect_or_start()
    try:
        port = free_port()
        injection: Injection | None = None
        if request.inject:
            injection = inject(request.command, port, read_package_json(request.cwd))
        command = injection.argv if injection is not None else list(request.command)
        listen_port = register(client, host, port, force=request.force)
        url = url_of(host, listen_port)
        from devtls.trust import env_variables

        env = child_env(os.environ, port, url, env_variables(ca), ca.cert_pem())
        say(banner(name, url, command, router_pid))
        terminal = _terminal()
        process = spawn(command, env, terminal)
    except BaseException:
        client.close()
        raise
    supervisor = Supervisor(name, host, port, url, request.force, client)
    try:
        with forwarding_signals(process.pid):
            while process.poll() is None:
                supervisor.tick()
    finally:
        if process.poll() is None:  # an error of ours: the child goes too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait()
        if terminal is not None:
            _give_terminal(terminal, os.getpgrp())
        # What the child left in its group (a watcher it started) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        if supervisor.client is not None:
            release(supervisor.client)
    return exit_status(process.returncode)
