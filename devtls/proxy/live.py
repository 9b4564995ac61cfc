"""The routes of a running router, changed while it runs: control requests, reloads.

``LiveRouter`` lives in the process that owns the control socket. It keeps the route table
(the settings' routes plus those added over the socket), re-reads ``devtls.toml`` on SIGHUP
and when the file changes, reloads the --cert/--key files when they change (and the CA when
``devtls ca rotate`` replaced it), and hands each
result to its own process and to the other workers as one Snapshot.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from devtls import control_protocol as cp
from devtls.ca import CERT_FILE, KEY_FILE
from devtls.config import DEFAULT_CONFIG_FILE, ServeConfig, ServeOptions, Upstream, build_config
from devtls.errors import DevtlsError
from devtls.proxy.control import ControlServer
from devtls.proxy.livestate import LiveState, Snapshot
from devtls.proxy.routetable import (
    SOURCE_COMMAND_LINE,
    SOURCE_CONFIG,
    Entry,
    RouteTable,
    target_text,
)
from devtls.proxy.workerlink import Senders
from devtls.runtime import ensure_runtime_dir

POLL_SECONDS = 1.0
# Whether an upstream answers: a TCP (or Unix socket) connect, no request. Loopback answers
# or refuses at once; the bound is for a firewalled host that drops the SYN.
PROBE_TIMEOUT = 0.5
PROBE_PARALLEL = 16
# What a reload applies; every other setting is read at start only.
LIVE_FIELDS = frozenset({"upstream", "routes", "names", "quiet", "limits"})

FileSignature = tuple[int, int, int] | None


def signature(path: Path) -> FileSignature:
    """Changes when the file is written, replaced (an editor's rename) or removed."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def restart_only_changes(running: ServeConfig, new: ServeConfig) -> list[str]:
    """The settings that differ but cannot change while running."""
    return [
        item.name
        for item in fields(ServeConfig)
        if item.name not in LIVE_FIELDS and getattr(running, item.name) != getattr(new, item.name)
    ]


async def answers(upstream: Upstream, timeout: float = PROBE_TIMEOUT) -> bool:
    try:
        if upstream.scheme == "unix":
            connect = asyncio.open_unix_connection(upstream.socket_path)
        else:
            connect = asyncio.open_connection(upstream.host, upstream.port)
        _, writer = await asyncio.wait_for(connect, timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


async def probe_all(upstreams: list[Upstream]) -> dict[Upstream, bool]:
    limit = asyncio.Semaphore(PROBE_PARALLEL)

    async def one(upstream: Upstream) -> bool:
        async with limit:
            return await answers(upstream)

    unique = list(dict.fromkeys(upstreams))
    results = await asyncio.gather(*(one(u) for u in unique))
    return dict(zip(unique, results, strict=True))


class LiveRouter:
    """The control handler and the reloader of one router (see the module doc)."""

    def __init__(
        self,
        local: LiveState,
        settings: ServeConfig,
        *,
        options: ServeOptions | None,
        cwd: Path | None = None,
        senders: Senders | None = None,
        on_stop: Callable[[], None] = lambda: None,
        write_log: Callable[[str], None] = lambda line: None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.local = local
        self.senders = senders
        self.on_stop = on_stop
        self.write_log = write_log
        self.poll_seconds = poll_seconds
        self.options = options
        self.cwd = cwd or Path.cwd()
        self.settings = settings  # as read at start (or the last good reload)
        self.started = local.state.config  # what runs: the demo's upstream filled in
        self.demo_upstream = self.started.upstream if settings.demo else None
        self.routes_source = (
            SOURCE_COMMAND_LINE
            if options is not None and options.given("routes")
            else SOURCE_CONFIG
        )
        self.table = RouteTable(settings.routes, self.routes_source, self._fallback(settings))
        self.config_path = self._config_path()
        self._config_seen = signature(self.config_path) if self.config_path else None
        certs = local.certs.files
        self._certs_seen = tuple(signature(p) for p in certs) if certs else ()
        self._ca_seen = self._ca_signature()
        self._timer: asyncio.TimerHandle | None = None

    def _config_path(self) -> Path | None:
        if self.options is None:
            return None
        given = self.options.given("config_file")
        return Path(given) if given is not None else self.cwd / DEFAULT_CONFIG_FILE

    def _fallback(self, settings: ServeConfig) -> Upstream | None:
        return settings.upstream or (self.demo_upstream if settings.demo else None)

    # -- changes ---------------------------------------------------------------------------

    def publish(self) -> None:
        settings = self.settings
        config = replace(
            self.started,
            routes=self.table.routes(),
            upstream=self.table.fallback,
            names=settings.names,
            quiet=settings.quiet,
            limits=settings.limits,
        )
        snapshot = Snapshot(config, self.local.cert_generation, self.local.ca_generation)
        self.local.apply(snapshot)
        if self.senders is not None:
            self.senders.send(snapshot)

    async def handle(self, request: cp.Request, lease: int, pid: int | None) -> dict[str, Any]:
        if isinstance(request, cp.ListRoutes):
            return await self.listing()
        if isinstance(request, cp.AddRoute):
            route = request.route
            if request.host_header is None and self.settings.host_header != "client":
                # Routes added while running get the router's --host-header, as its own do.
                upstream = replace(route.upstream, host_header=self.settings.host_header)
                route = replace(route, upstream=upstream)
            self.table.add(
                route, lease=lease if request.hold else None, pid=pid, force=request.force
            )
            self.publish()
            self._log(f"route added: {route}" + (f" (held by pid {pid})" if request.hold else ""))
            return {
                "route": target_text(route.host, route.path),
                "upstream": str(route.upstream),
                "listen_port": self.local.state.listen_port,
            }
        if isinstance(request, cp.RemoveRoute):
            removed = self.table.remove(request.host, request.path)
            self.publish()
            self._log(f"route removed: {removed}")
            return {"route": target_text(request.host, request.path)}
        # Stop: answered first, then the same graceful drain as SIGTERM.
        asyncio.get_running_loop().call_soon(self.on_stop)
        limits = self.local.state.config.limits
        return {"pid": os.getpid(), "drain_timeout": limits.drain_timeout}

    def release(self, lease: int) -> None:
        gone = self.table.release(lease)
        if gone:
            self.publish()
            for route in gone:
                self._log(f"route removed (its holder is gone): {route}")

    def _log(self, line: str) -> None:
        self.write_log(f"devtls: {line}")

    async def listing(self) -> dict[str, Any]:
        entries = self.table.entries()
        fallback = self.table.fallback
        upstreams = [e.route.upstream for e in entries] + ([fallback] if fallback else [])
        up = await probe_all(upstreams)

        def row(entry: Entry) -> dict[str, Any]:
            route = entry.route
            return {
                "host": route.host or "*",
                "path": route.path,
                "route": target_text(route.host, route.path),
                "upstream": str(route.upstream),
                "source": entry.source,
                "held_by": entry.held_by,
                "answers": up[route.upstream],
            }

        fallback_row = None
        if fallback is not None:
            demo = fallback == self.demo_upstream
            fallback_row = {
                "upstream": "the built-in demo" if demo else str(fallback),
                "source": "demo" if demo else self.table.fallback_source,
                "answers": up[fallback],
            }
        return {
            "pid": os.getpid(),
            "listen_port": self.local.state.listen_port,
            "routes": [row(e) for e in entries],
            "fallback": fallback_row,
        }

    # -- reloads ---------------------------------------------------------------------------

    def reload(self, why: str = "SIGHUP") -> bool:
        """Apply the settings file again; a bad file keeps what runs (one line says why)."""
        if self.options is None:
            return False
        where = self.config_path or DEFAULT_CONFIG_FILE
        try:
            new = build_config(self.options, cwd=self.cwd)
        except DevtlsError as exc:
            self.write_log(f"devtls: reload ({why}) failed, keeping the running config: {exc}")
            return False
        restart = restart_only_changes(self.settings, new)
        if restart:
            self.write_log(
                f"devtls: reload: {', '.join(restart)} changed in {where}; restart devtls serve"
                " to apply (the rest is applied now)"
            )
            new = replace(new, **{name: getattr(self.settings, name) for name in restart})
        self.settings = new
        self.table.set_base(new.routes, self.routes_source, self._fallback(new))
        self.publish()
        self.write_log(f"devtls: reloaded {where} ({why}): {len(self.table.entries())} routes")
        return True

    def reload_certificates(self) -> bool:
        try:
            self.local.reload_cert_files()
        except DevtlsError as exc:
            self.write_log(f"devtls: new --cert/--key not used, keeping the old pair: {exc}")
            return False
        # Read here already: the other workers read the files when the generation grows.
        self.local.cert_generation += 1
        self.publish()
        self.write_log("devtls: reloaded the --cert/--key files")
        return True

    def _ca_signature(self) -> tuple[FileSignature, ...]:
        ca = self.local.ca
        if ca is None or ca.path is None or self.local.certs.files is not None:
            return ()
        return (signature(ca.path / CERT_FILE), signature(ca.path / KEY_FILE))

    def reload_ca(self) -> bool:
        """The CA files changed (devtls ca rotate): sign with the new root from now on."""
        try:
            changed = self.local.reload_ca()
        except DevtlsError as exc:
            # Retried when the files change again (the second rename of a rotation, say).
            self.write_log(f"devtls: the CA files changed but cannot be used yet: {exc}")
            return False
        if not changed:
            return False
        self.local.ca_generation += 1
        self.publish()
        ca = self.local.ca
        assert ca is not None
        self.write_log(
            f"devtls: the CA's root changed: new certificates come from {ca.subject} "
            f"(SHA-256 {ca.fingerprint_sha256[:16]}...)"
        )
        return True

    def start_watching(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.poll_seconds, self._poll)

    def stop_watching(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _poll(self) -> None:
        if self.config_path is not None:
            seen = signature(self.config_path)
            if seen != self._config_seen:
                self._config_seen = seen
                self.reload("file changed")
        files = self.local.certs.files
        if files:
            seen_certs = tuple(signature(p) for p in files)
            if seen_certs != self._certs_seen:
                self._certs_seen = seen_certs
                self.reload_certificates()
        if self._ca_seen:
            seen_ca = self._ca_signature()
            if seen_ca != self._ca_seen:
                self._ca_seen = seen_ca
                self.reload_ca()
        self.start_watching()


@dataclass
class LiveHandle:
    """What ``serve_live`` started, closed when the router stops."""

    router: LiveRouter
    control: ControlServer | None
    senders: Senders | None
    # Lines printed before the banner (no control socket, and why).
    notices: list[str]

    def close(self) -> None:
        self.router.stop_watching()
        if self.control is not None:
            self.control.close()
        if self.senders is not None:
            self.senders.close()


async def serve_live(
    local: LiveState,
    settings: ServeConfig,
    *,
    options: ServeOptions | None,
    on_stop: Callable[[], None],
    write_log: Callable[[str], None],
    worker_sockets: list[socket.socket] | None = None,
    control: bool = True,
    folder: Path | None = None,
    allowed_uid: int | None = None,
    cwd: Path | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> LiveHandle:
    """Start the live side of a router: worker links, the control socket, the file watch."""
    senders = None
    if worker_sockets:
        senders = Senders()
        await senders.connect(worker_sockets)
    router = LiveRouter(
        local,
        settings,
        options=options,
        cwd=cwd,
        senders=senders,
        on_stop=on_stop,
        write_log=write_log,
        poll_seconds=poll_seconds,
    )
    notices: list[str] = []
    server: ControlServer | None = None
    if control:
        notice: str | None
        try:
            server = ControlServer(
                router,
                folder or ensure_runtime_dir(),
                allowed_uid=allowed_uid,
                write_log=write_log,
            )
            notice = await server.start()
        except (DevtlsError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            notice = (
                f"devtls: no control socket ({reason}); the routes of this one cannot be "
                "changed with 'devtls route'"
            )
        if notice is not None:
            server = None
            notices.append(notice)
    router.start_watching()
    return LiveHandle(router, server, senders, notices)
