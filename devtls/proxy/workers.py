"""Several forwarder processes on one port (Linux): each has its own socket, SO_REUSEPORT.

The parent loads the CA, makes the certificate contexts and binds every worker's socket before
forking: a port in use is one error before anything starts, port 0 means the same port for
all, and all workers share the TLS session ticket keys (a client resumes with any of them).
The kernel spreads new connections over the sockets; a connection then stays with its worker.
The parent is worker 0: it prints the banner, answers plain HTTP, and stops the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
import traceback

from devtls.config import Address, ServeConfig, ServeOptions
from devtls.errors import DevtlsError
from devtls.proxy.server import (
    LISTEN_BACKLOG,
    WORKER_HURRY_SIGNAL,
    WORKER_STOP_SIGNAL,
    Certificates,
    listen_error,
    prepare_certificates,
    run,
    run_on_new_loop,
)
from devtls.proxy.workerlink import socket_pairs

# After SIGTERM, a worker gets the drain time plus this before it is killed.
STOP_GRACE_SECONDS = 5.0


def bind_listeners(address: Address, count: int) -> list[list[socket.socket]]:
    """``count`` groups of listening sockets, one socket per address ``address`` resolves to."""
    groups: list[list[socket.socket]] = []
    port = address.port
    try:
        infos = socket.getaddrinfo(
            address.host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for _ in range(count):
            group: list[socket.socket] = []
            groups.append(group)
            for family, kind, proto, _name, sockaddr in infos:
                sock = socket.socket(family, kind, proto)
                group.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    # As asyncio does: an IPv6 socket does not also take the IPv4 port.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                # Port 0: the first socket picks the port, every other one takes the same.
                sock.bind((sockaddr[0], port, *sockaddr[2:]))
                port = sock.getsockname()[1]
                sock.listen(LISTEN_BACKLOG)
                sock.setblocking(False)
    except OSError as exc:
        close_all(groups)
        if isinstance(exc, socket.gaierror):
            raise DevtlsError(f"cannot listen on {address}: {exc.strerror}") from None
        raise listen_error(address, exc) from None
    return groups


def close_all(groups: list[list[socket.socket]]) -> None:
    for group in groups:
        for sock in group:
            sock.close()


def serve_forever(config: ServeConfig, options: ServeOptions | None = None) -> int:
    """Run the forwarder until it is stopped: one process, or --workers of them.

    It owns the user's control socket unless another router does, and reloads its settings
    from ``options`` (and the file they name) on SIGHUP or a change of the file.
    """
    if config.workers > 1:
        return serve_with_workers(config, options)
    return run_on_new_loop(run(config, options=options, control=True))


def serve_with_workers(config: ServeConfig, options: ServeOptions | None = None) -> int:
    """Fork ``config.workers - 1`` workers, serve as worker 0, stop them all together.

    Worker 0 owns the control socket and passes every live change to the others, each over
    a socket pair of its own.
    """
    certificates = prepare_certificates(config)
    groups = bind_listeners(config.listen, config.workers)
    links = socket_pairs(config.workers - 1)
    parent = os.getpid()
    children: list[int] = []
    # Buffered output would otherwise be written once more by every child.
    sys.stdout.flush()
    sys.stderr.flush()

    def pass_on(cut_short: bool) -> None:
        # A stop signal to the parent reaches the workers at once: they drain alongside it.
        signal_workers(children, WORKER_HURRY_SIGNAL if cut_short else WORKER_STOP_SIGNAL)

    try:
        for group, (_, updates) in zip(groups[1:], links, strict=True):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child; its exit status is tested
                close_all([g for g in groups if g is not group])
                close_all([[s for pair in links for s in pair if s is not updates]])
                os._exit(_worker(config, group, certificates, parent, updates))
            children.append(pid)
        close_all(groups[1:])
        close_all([[updates for _, updates in links]])
        return run_on_new_loop(
            run(
                config,
                listen_sockets=groups[0],
                certificates=certificates,
                on_stop_signal=pass_on,
                options=options,
                worker_sockets=[owner for owner, _ in links],
                control=True,
            )
        )
    finally:
        close_all(groups[:1])
        close_all([[owner for owner, _ in links]])
        stop_workers(children, config.limits.drain_timeout + STOP_GRACE_SECONDS)


def _worker(
    config: ServeConfig,
    group: list[socket.socket],
    certificates: Certificates,
    parent: int,
    updates: socket.socket,
) -> int:  # pragma: no cover - runs in the child
    try:
        return run_on_new_loop(
            run(
                config,
                listen_sockets=group,
                certificates=certificates,
                parent_pid=parent,
                updates=updates,
            )
        )
    except DevtlsError as exc:
        print(f"devtls: error: worker {os.getpid()}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except BaseException:
        traceback.print_exc()
    return 1


def signal_workers(pids: list[int], name: str) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, getattr(signal, name))


def stop_workers(pids: list[int], timeout: float) -> None:
    """Ask each worker to drain, wait up to ``timeout`` for all, then kill the rest.

    Meanwhile a SIGINT or SIGTERM to the parent (its event loop is closed by now) cuts the
    workers' drains short instead of killing the parent by the signal.
    """
    remaining = set(pids)

    def cut_short(signum: int, frame: object) -> None:
        signal_workers(sorted(remaining), WORKER_HURRY_SIGNAL)

    previous = {signum: signal.signal(signum, cut_short) for signum in STOP_SIGNALS}
    try:
        signal_workers(pids, WORKER_STOP_SIGNAL)
        _wait_for_workers(remaining, timeout)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _wait_for_workers(remaining: set[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while remaining:
        for pid in list(remaining):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                remaining.discard(pid)
        if not remaining:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
