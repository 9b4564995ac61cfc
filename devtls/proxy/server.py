"""The lifecycle of ``devtls serve`` in one place: listeners, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from devtls.ca import LocalCA
from devtls.config import Address, ServeConfig, Upstream
from devtls.errors import DevtlsError, ProtocolError
from devtls.proxy import http1
from devtls.proxy.certs import CertificateSource
from devtls.proxy.connection import ClientConnection, ServerState, print_line
from devtls.proxy.demo import start_demo_server
from devtls.proxy.heap import tune_malloc
from devtls.proxy.routes import Router, host_without_port
from devtls.proxy.tls import TLSServerProtocol

if TYPE_CHECKING:
    from devtls.proxy.acme import AcmeManager

log = logging.getLogger("devtls")

# Connections still busy this long after a stop signal are cut.
DRAIN_POLL_SECONDS = 0.05
LISTEN_BACKLOG = 1024
ORPHAN_CHECK_SECONDS = 1.0


@dataclass
class RunningServer:
    """Handles to a started server, for the CLI and for tests."""

    state: ServerState
    servers: list[asyncio.Server]
    port: int
    banner: list[str]
    stopping: asyncio.Event
    acme: AcmeManager | None = None

    def stop(self) -> None:
        self.stopping.set()


# Each client connection may need an upstream one too; nginx's worker_rlimit_nofile exists for
# the same reason. macOS starts processes with a soft limit of 256.
WANTED_OPEN_FILES = 65536


def raise_open_file_limit() -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def upstream_tls_context(ca: LocalCA | None) -> ssl.SSLContext:
    """For https:// upstreams: the OS trust (truststore) plus the devtls root."""
    import truststore

    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        context.load_verify_locations(cadata=ca.cert_pem().decode("ascii"))
    return context


@dataclass
class Certificates:
    """The CA and the certificate contexts, made before listening.

    With --workers they are made once, before forking: every worker then holds the same TLS
    session ticket keys, so a client resumes its session whichever worker it reaches.
    """

    ca: LocalCA | None
    source: CertificateSource
    acme: AcmeManager | None


def prepare_certificates(
    config: ServeConfig, write_log: Callable[[str], None] = print_line
) -> Certificates:
    ca: LocalCA | None = None
    if config.cert_file is None:
        ca, created = LocalCA.load_or_create()
        if created:
            log.warning("created a new local CA in %s; run 'devtls install' to trust it", ca.path)
    acme = _acme_manager(config, ca, write_log)
    source = CertificateSource(
        names=config.certificate_names(),
        ca=ca,
        cert_file=config.cert_file,
        key_file=config.key_file,
        tcp=config.tcp,
        acme=acme,
    )
    return Certificates(ca, source, acme)


async def start(
    config: ServeConfig,
    *,
    write_log: Callable[[str], None] = print_line,
    listen_sockets: list[socket.socket] | None = None,
    primary: bool = True,
    certificates: Certificates | None = None,
) -> RunningServer:
    """Open every listener; raise DevtlsError (port in use, bad certificate) before serving.

    ``listen_sockets`` are bound already (one worker of several); only the ``primary`` worker
    opens the plain-HTTP listeners.
    """
    loop = asyncio.get_running_loop()
    raise_open_file_limit()
    servers: list[asyncio.Server] = []
    if certificates is None:
        certificates = prepare_certificates(config, write_log)
    ca, certs, acme = certificates.ca, certificates.source, certificates.acme
    banner_config = config
    if config.demo:
        demo_server, demo_port = await start_demo_server()
        servers.append(demo_server)
        config = replace(
            config, upstream=Upstream("http", "127.0.0.1", demo_port, wants_tls_info=True)
        )
    router = Router(config.routes, config.upstream)
    certs.may_mint = router.serves_host
    needs_upstream_tls = any(
        u.scheme == "https" for u in [config.upstream, *(r.upstream for r in config.routes)] if u
    )
    state = ServerState(
        config=config,
        router=router,
        upstream_tls=upstream_tls_context(ca) if needs_upstream_tls else None,
        write_log=write_log,
    )

    def on_handshake_error(reason: str) -> None:
        # One short line per failed handshake; a scanner gets many, none is fatal.
        if not config.quiet:
            write_log(f"TLS handshake failed: {reason}")

    def protocol() -> TLSServerProtocol:
        return TLSServerProtocol(
            loop,
            certs.default_context,
            lambda: ClientConnection(state),
            handshake_timeout=config.limits.handshake_timeout,
            plain_http_answer=lambda data: _plain_http_on_tls_port(data, port),
            on_handshake_error=on_handshake_error,
            challenges=acme,
        )

    try:
        if listen_sockets is None:
            servers.append(await _listen(loop, protocol, config.listen))
        else:
            for sock in listen_sockets:
                servers.append(
                    await loop.create_server(protocol, sock=sock, backlog=LISTEN_BACKLOG)
                )
        port = servers[-1].sockets[0].getsockname()[1]
        state.listen_port = port
        if primary and config.redirect_http is not None:
            servers.append(
                await _listen(loop, lambda: RedirectProtocol(port, acme), config.redirect_http)
            )
        if (
            primary
            and acme is not None
            and acme.settings.challenge == "http-01"
            and acme.settings.http != config.redirect_http
        ):
            # http-01 is answered on port 80 (or --acme-http); everything else there is
            # redirected to https, as certbot's standalone mode and Caddy do.
            servers.append(
                await _listen(loop, lambda: RedirectProtocol(port, acme), acme.settings.http)
            )
        if acme is not None:
            await acme.start()
    except BaseException:
        for server in servers:
            server.close()
        raise
    banner = _banner(banner_config, port)
    if acme is not None:
        hosts = ", ".join(acme.settings.hosts)
        banner.append(f"devtls: acme: certificates for {hosts} from {acme.settings.directory}")
    return RunningServer(state, servers, port, banner, asyncio.Event(), acme)


def _acme_manager(
    config: ServeConfig, ca: LocalCA | None, write_log: Callable[[str], None]
) -> AcmeManager | None:
    if config.acme is None:
        return None
    try:
        from devtls.proxy.acme import AcmeManager
    except ImportError:
        raise DevtlsError(
            "--acme needs the acme package", "install it: pip install 'devtls[acme]'"
        ) from None
    # The ACME server is reached with the OS roots plus the devtls root (a local test CA).
    from devtls.trust import write_bundle

    verify: str | bool = str(write_bundle(ca)) if ca is not None else True
    return AcmeManager(config.acme, verify=verify, write_log=write_log)


async def _listen(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol], address: Address
) -> asyncio.Server:
    try:
        return await loop.create_server(
            factory, address.host or None, address.port, backlog=LISTEN_BACKLOG, reuse_address=True
        )
    except OSError as exc:
        raise listen_error(address, exc) from None


def listen_error(address: Address, exc: OSError) -> DevtlsError:
    """The one-line error for a listener that cannot be opened, with what to do."""
    if exc.errno == errno.EADDRINUSE:
        return DevtlsError(
            f"cannot listen on {address}: the address is already in use",
            f"stop the other server or choose another port (--listen {address.url_host}:"
            f"{address.port + 1})",
        )
    if exc.errno == errno.EACCES:
        return DevtlsError(
            f"cannot listen on {address}: permission denied",
            "ports below 1024 need privileges; use a port like 8443",
        )
    return DevtlsError(f"cannot listen on {address}: {exc.strerror or exc}")


def _banner(config: ServeConfig, port: int) -> list[str]:
    host = config.listen.url_host
    suffix = "" if port == 443 else f":{port}"
    lines = []
    kind = "tcp+tls" if config.tcp else "https"
    if config.demo:
        lines.append(f"devtls: serving the demo page at https://{host}{suffix}/")
    for route in config.routes:
        route_host = route.host.replace("*", "x") if route.host else host
        path = "" if route.path == "/" else route.path
        lines.append(f"devtls: {kind}://{route_host}{suffix}{path} -> {route.upstream}")
    if config.upstream is not None and not config.demo:
        label = "every other host" if config.routes else f"{kind}://{host}{suffix}"
        lines.append(f"devtls: {label} -> {config.upstream}")
    if config.redirect_http is not None:
        lines.append(f"devtls: http://{config.redirect_http} redirects to https")
    if config.workers > 1:
        lines.append(f"devtls: {config.workers} worker processes share port {port}")
    return lines


def _plain_http_on_tls_port(data: bytes, port: int) -> bytes:
    """What nginx calls 497: a browser that typed http:// for the TLS port is sent to https."""
    reader = http1.RequestReader()
    reader.feed(data)
    try:
        head = reader.next_event()
    except ProtocolError:
        head = None
    if isinstance(head, http1.RequestHead) and head.host:
        return _redirect(head, port)
    return http1.simple_response(
        400, b"devtls: this port speaks HTTPS; use an https:// URL\n", close=True
    )


def _redirect(head: http1.RequestHead, port: int) -> bytes:
    bare = host_without_port(head.host.decode("latin-1"))
    if ":" in bare:
        bare = f"[{bare}]"
    suffix = "" if port == 443 else f":{port}"
    location = f"https://{bare}{suffix}{head.target.decode('latin-1')}".encode("latin-1")
    # 301 keeps GET/HEAD as they are; 308 also keeps the method and body of a POST.
    status = 301 if head.method in (b"GET", b"HEAD") else 308
    return http1.simple_response(
        status,
        b"",
        extra=[(b"Location", location)],
        close=True,
    )


class RedirectProtocol(asyncio.Protocol):
    """The plain-HTTP listener of --redirect-http: every request gets a permanent redirect."""

    def __init__(self, tls_port: int, acme: AcmeManager | None = None) -> None:
        self.tls_port = tls_port
        self.acme = acme
        self.reader = http1.RequestReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.reader.feed(data)
        try:
            head = self.reader.next_event()
        except ProtocolError as exc:
            self.transport.write(
                http1.simple_response(exc.status_hint, exc.message.encode(), close=True)
            )
            self.transport.close()
            return
        if head is None:
            return
        assert isinstance(head, http1.RequestHead)
        answer = self.acme.http01_answer(head.target.decode("latin-1")) if self.acme else None
        if answer is not None:
            self.transport.write(http1.simple_response(200, answer, close=True))
        elif not head.host:
            self.transport.write(
                http1.simple_response(400, b"a Host header is needed\n", close=True)
            )
        else:
            self.transport.write(_redirect(head, self.tls_port))
        self.transport.close()


async def run(
    config: ServeConfig,
    *,
    on_ready: Callable[[RunningServer], None] | None = None,
    listen_sockets: list[socket.socket] | None = None,
    certificates: Certificates | None = None,
    parent_pid: int | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM, then drain (bounded) and return 0.

    A worker (``parent_pid`` given) prints no banner and also stops when its parent is gone.
    """
    running = await start(
        config,
        listen_sockets=listen_sockets,
        primary=parent_pid is None,
        certificates=certificates,
    )
    loop = asyncio.get_running_loop()
    if parent_pid is not None:
        running.banner = []
        _stop_when_orphaned(loop, running, parent_pid)
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(signum, running.stop)
            installed.append(signum)
    # The banner comes last: whoever reads it may signal us at once.
    for line in running.banner:
        print_line(line)
    if on_ready is not None:
        on_ready(running)
    try:
        await running.stopping.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        await shutdown(running)
    return 0


def _stop_when_orphaned(
    loop: asyncio.AbstractEventLoop, running: RunningServer, parent_pid: int
) -> None:
    # A parent killed with SIGKILL cannot stop its workers; they notice by being re-parented.
    if os.getppid() != parent_pid:
        running.stop()
    elif not running.stopping.is_set():
        loop.call_later(ORPHAN_CHECK_SECONDS, _stop_when_orphaned, loop, running, parent_pid)


async def shutdown(running: RunningServer) -> None:
    """Stop accepting, let requests in flight finish (bounded), then close everything."""
    state = running.state
    state.draining = True
    for server in running.servers:
        server.close()
    for connection in list(state.connections):
        connection.close_if_idle()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.config.limits.drain_timeout
    while state.connections and loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
        for connection in list(state.connections):
            connection.close_if_idle()
    for connection in list(state.connections):
        connection._abort()
    state.pool.close_all()
    if running.acme is not None:
        await running.acme.stop()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (its transports cost less per connection), else asyncio.

    DEVTLS_EVENT_LOOP=asyncio picks asyncio's own loop even where uvloop is there.
    """
    if os.environ.get("DEVTLS_EVENT_LOOP", "").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def serve_forever(config: ServeConfig) -> int:
    """Run the forwarder until it is stopped: one process, or --workers of them."""
    if config.workers > 1:
        from devtls.proxy.workers import serve_with_workers

        return serve_with_workers(config)
    return run_on_new_loop(run(config))


def run_on_new_loop(main: Coroutine[Any, Any, int]) -> int:
    tune_malloc()  # once per serving process (see devtls/proxy/heap.py)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)  # Python 3.10 cannot choose the loop without a policy
