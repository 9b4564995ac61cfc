"""The lifecycle of ``devtls serve`` in one place: listeners, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from devtls.ca import LocalCA
from devtls.config import Address, ServeConfig, ServeOptions, Upstream
from devtls.errors import DevtlsError, ProtocolError
from devtls.expiry import ROOT_WARN_DAYS, expiry_problem
from devtls.proxy import http1, workerlink
from devtls.proxy.certs import CertificateSource
from devtls.proxy.demo import start_demo_server
from devtls.proxy.h1 import H1Connection
from devtls.proxy.h2 import H2Connection
from devtls.proxy.heap import tune_malloc
from devtls.proxy.lan import LanRunning, open_lan
from devtls.proxy.live import LiveHandle, serve_live
from devtls.proxy.livestate import LiveState, needs_upstream_tls
from devtls.proxy.pgssl import PostgresNegotiation
from devtls.proxy.responder import ListenerState, Responder, plain_http, redirect_to_https
from devtls.proxy.routes import Router
from devtls.proxy.state import ServerState, print_line
from devtls.proxy.tls import HandshakeSlots, TLSServerProtocol
from devtls.proxy.tunnel import TcpConnection

if TYPE_CHECKING:
    from devtls.lan import LanPlan
    from devtls.proxy.acme import AcmeManager

log = logging.getLogger("devtls")

# Connections still busy this long after a stop signal are cut.
DRAIN_POLL_SECONDS = 0.05
LISTEN_BACKLOG = 1024
ORPHAN_CHECK_SECONDS = 1.0
# How the first worker (the parent) passes a stop on to the others. Not SIGTERM: the workers
# often get that one directly as well (Ctrl-C reaches the whole process group, systemd signals
# the whole cgroup), and a forwarded copy would count as a second signal. Both are idempotent.
WORKER_STOP_SIGNAL = "SIGUSR1"  # drain, as a first SIGTERM
WORKER_HURRY_SIGNAL = "SIGUSR2"  # cut the drain short, as a second SIGTERM


@dataclass
class RunningServer:
    """Handles to a started server, for the CLI and for tests."""

    state: ServerState
    servers: list[asyncio.Server]
    port: int
    banner: list[str]
    stopping: asyncio.Event
    acme: AcmeManager | None = None
    # Set by a second stop signal: the drain ends at once, connections still busy are cut.
    hurry: asyncio.Event = field(default_factory=asyncio.Event)
    # The plain-HTTP listeners (--redirect-http, ACME http-01), closed with the server.
    plain_listeners: list[ListenerState] = field(default_factory=list)
    # How live changes (control requests, reloads) reach this process's connections.
    live: LiveState | None = None
    # --lan: its listeners are among ``servers``; the mDNS announcement is left on stop.
    lan: LanRunning | None = None

    def stop(self) -> None:
        self.stopping.set()

    def on_stop_signal(self) -> bool:
        """SIGINT or SIGTERM: the first one drains, the next one cuts the drain short.

        Returns whether this one cut it short.
        """
        if self.stopping.is_set():
            self.hurry.set()
            return True
        self.stop()
        return False

    def cut_short(self) -> None:
        self.stop()
        self.hurry.set()


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
    # --lan: the addresses and the .local name, found before the leaf is minted for them.
    lan: LanPlan | None = None


def prepare_certificates(
    config: ServeConfig,
    write_log: Callable[[str], None] = print_line,
    discover_lan: Callable[[], LanPlan] | None = None,
) -> Certificates:
    """``discover_lan`` finds the LAN for --lan (default: ask this host, devtls.proxy.lan)."""
    if config.acme is not None:
        # Before the CA or any listener: a missing extra is one line, then exit 1.
        from devtls.proxy.acme import check_installed

        check_installed()
    lan_plan: LanPlan | None = None
    if config.lan:
        from devtls.proxy import lan

        lan.check_installed()
        lan_plan = (discover_lan or lan.discover)()
    ca: LocalCA | None = None
    if config.cert_file is None:
        ca, created = LocalCA.load_or_create()
        if created:
            log.warning("created a new local CA in %s; run 'devtls install' to trust it", ca.path)
    acme = _acme_manager(config, ca, write_log)
    source = CertificateSource(
        names=config.certificate_names(),
        ca=ca,
        extra_names=lan_plan.names if lan_plan is not None else (),
        cert_file=config.cert_file,
        key_file=config.key_file,
        alpn=config.offered_alpn,
        acme=acme,
        mint_per_minute=config.limits.mint_per_minute,
        write_log=write_log,
    )
    return Certificates(ca, source, acme, lan_plan)


def client_protocol(state: ServerState, alpn: str | None) -> asyncio.Protocol:
    """What runs behind TLS: HTTP/2 or HTTP/1 as ALPN chose, or with --tcp a tunnel."""
    if state.config.tcp:
        return TcpConnection(state)
    if alpn == "h2":
        return H2Connection(state)
    return H1Connection(state)


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
    # devtls's own small HTTP servers (the demo, --redirect-http, ACME http-01), each with the
    # TLS port's limits, closed with the server.
    plain_listeners: list[ListenerState] = []
    if config.demo:
        demo_listener = ListenerState(config.limits)
        plain_listeners.append(demo_listener)
        demo_server, demo_port = await start_demo_server(demo_listener)
        servers.append(demo_server)
        config = replace(
            config, upstream=Upstream("http", "127.0.0.1", demo_port, wants_tls_info=True)
        )
    state = ServerState(
        config=config,
        router=Router(config.routes, config.upstream),
        upstream_tls=upstream_tls_context(ca) if needs_upstream_tls(config) else None,
        write_log=write_log,
    )
    live = LiveState(state, certs, ca, upstream_tls_context)

    def on_handshake_error(reason: str) -> None:
        # One short line per failed handshake; a scanner gets many, none is fatal.
        if not state.config.quiet:
            write_log(f"TLS handshake failed: {reason}")

    # Connections still in the TLS handshake count toward max_connections too.
    slots = HandshakeSlots(config.limits.max_connections, lambda: len(state.connections), write_log)

    # Made once, not per connection: two closures cost every idle connection 400 bytes.
    behind_tls = functools.partial(client_protocol, state)

    def plain_http_answer(data: bytes) -> bytes:
        return _plain_http_on_tls_port(data, state.listen_port)

    def protocol() -> asyncio.Protocol:
        tls = TLSServerProtocol(
            loop,
            certs.default_context,
            behind_tls,
            handshake_timeout=state.config.limits.handshake_timeout,
            plain_http_answer=plain_http_answer,
            on_handshake_error=on_handshake_error,
            certificates=certs,
            slots=slots,
        )
        if not config.tcp:
            return tls
        # --tcp: a PostgreSQL client's plaintext SSLRequest is answered before TLS.
        return PostgresNegotiation(
            loop, tls, timeout=config.limits.handshake_timeout, on_error=on_handshake_error
        )

    def plain_listener(address: Address) -> Coroutine[Any, Any, asyncio.Server]:
        # Each plain-HTTP listener has the TLS port's limits, counted on its own.
        listener = ListenerState(config.limits)
        plain_listeners.append(listener)
        respond = plain_http(port, acme)
        return _listen(loop, lambda: Responder(listener, respond), address)

    lan: LanRunning | None = None
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
            servers.append(await plain_listener(config.redirect_http))
        if (
            primary
            and acme is not None
            and acme.settings.challenge == "http-01"
            and acme.settings.http != config.redirect_http
        ):
            # http-01 is answered on port 80 (or --acme-http); everything else there is
            # redirected to https, as certbot's standalone mode and Caddy do.
            servers.append(await plain_listener(acme.settings.http))
        if primary and certificates.lan is not None and ca is not None:
            lan = await open_lan(
                certificates.lan,
                ca=ca,
                tls_factory=protocol,
                tls_port=port,
                listen_host=config.listen.host,
                limits=config.limits,
                kind="tcp+tls" if config.tcp else "https",
                listen=lambda factory, address: _listen(loop, factory, address),
            )
            servers.extend(lan.servers)
            plain_listeners.extend(lan.listeners)
        if acme is not None:
            await acme.start()
    except BaseException:
        for server in servers:
            server.close()
        if lan is not None:
            await lan.close()
        raise
    banner = _banner(banner_config, port)
    if ca is not None and certs.files is None:
        problem = expiry_problem(ca.not_after, ROOT_WARN_DAYS)
        if problem is not None:
            banner.insert(
                0,
                f"devtls: warning: the local CA's root {problem}; run 'devtls ca rotate' "
                "(this server switches to the new root by itself)",
            )
    if lan is not None:
        banner += lan.banner
    if acme is not None:
        hosts = ", ".join(acme.settings.hosts)
        banner.append(f"devtls: acme: certificates for {hosts} from {acme.settings.directory}")
    return RunningServer(
        state,
        servers,
        port,
        banner,
        asyncio.Event(),
        acme,
        plain_listeners=plain_listeners,
        live=live,
        lan=lan,
    )


def _acme_manager(
    config: ServeConfig, ca: LocalCA | None, write_log: Callable[[str], None]
) -> AcmeManager | None:
    if config.acme is None:
        return None
    from devtls.proxy.acme import AcmeManager

    # The ACME server is reached with the roots given by --acme-ca-root (a private ACME CA:
    # step-ca, Pebble, another machine's devtls), else the OS roots plus the devtls root.
    verify: str | bool
    if config.acme.ca_root is not None:
        verify = str(config.acme.ca_root)
    elif ca is not None:
        from devtls.trust import write_bundle

        verify = str(write_bundle(ca))
    else:
        verify = True
    return AcmeManager(config.acme, verify=verify, write_log=write_log, alpn=config.offered_alpn)


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
            f"cannot listen on {address}: permission denied", _permission_hint(address.port)
        )
    return DevtlsError(f"cannot listen on {address}: {exc.strerror or exc}")


def _permission_hint(port: int) -> str:
    """What lets this user open ``port`` here: ports below 1024 are privileged on Linux, and
    on macOS before 10.14; Windows has none, but refuses a port another program holds
    exclusively or one it reserves."""
    if sys.platform == "win32":
        return (
            "another program holds the port, or Windows reserves it (netsh interface ipv4 show "
            "excludedportrange protocol=tcp); choose another port, like 8443"
        )
    if port >= 1024:
        return "choose another port, like 8443"
    if sys.platform != "linux":
        return "ports below 1024 need root here (macOS before 10.14); use sudo or a port like 8443"
    # setcap needs the file itself, not the venv's symlink to it.
    python = os.path.realpath(sys.executable)
    return (
        "on Linux ports below 1024 need privileges: run devtls as root, or allow them to every "
        "user (sudo sysctl net.ipv4.ip_unprivileged_port_start=443), or to this Python "
        f"(sudo setcap cap_net_bind_service=+ep {python}), or keep the default port 8443"
    )


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
        upstream = _upstream_text(route.upstream, config.tcp)
        lines.append(f"devtls: {kind}://{route_host}{suffix}{path} -> {upstream}")
    if config.upstream is not None and not config.demo:
        label = "every other host" if config.routes else f"{kind}://{host}{suffix}"
        lines.append(f"devtls: {label} -> {_upstream_text(config.upstream, config.tcp)}")
    if config.upstream is None and not config.routes and not config.demo:
        lines.append(
            f"devtls: https://{host}{suffix} has no routes yet (devtls run and devtls route add "
            "add them)"
        )
    if config.redirect_http is not None:
        lines.append(f"devtls: http://{config.redirect_http} redirects to https")
    if config.workers > 1:
        lines.append(f"devtls: {config.workers} worker processes share port {port}")
    return lines


def _upstream_text(upstream: Upstream, tcp: bool) -> str:
    # --tcp passes bytes, not HTTP: "http://" in the banner would promise what it does not do.
    if tcp and upstream.scheme == "http":
        return f"tcp://{upstream.authority}"
    return str(upstream)


def _plain_http_on_tls_port(data: bytes, port: int) -> bytes:
    """What nginx calls 497: a browser that typed http:// for the TLS port is sent to https."""
    reader = http1.RequestReader()
    reader.feed(data)
    try:
        head = reader.next_event()
    except ProtocolError:
        head = None
    if isinstance(head, http1.RequestHead) and head.host:
        return redirect_to_https(head, port)
    return http1.simple_response(
        400, b"devtls: this port speaks HTTPS; use an https:// URL\n", close=True
    )


async def run(
    config: ServeConfig,
    *,
    on_ready: Callable[[RunningServer], None] | None = None,
    listen_sockets: list[socket.socket] | None = None,
    certificates: Certificates | None = None,
    parent_pid: int | None = None,
    on_stop_signal: Callable[[bool], None] | None = None,
    options: ServeOptions | None = None,
    worker_sockets: list[socket.socket] | None = None,
    updates: socket.socket | None = None,
    control: bool = False,
) -> int:
    """Serve until SIGINT or SIGTERM, then drain (bounded) and return 0.

    The handlers stay installed while draining: a second SIGINT or SIGTERM ends the drain at
    once (busy connections are cut) and still returns 0, as nginx's fast shutdown after a
    graceful one. They are left to the loop, which removes them when it closes: a signal
    during the last of the teardown does not kill the process either.
    A worker (``parent_pid`` given) prints no banner, also stops when its parent is gone, and
    obeys WORKER_STOP_SIGNAL and WORKER_HURRY_SIGNAL. ``on_stop_signal(cut_short)`` is called
    after each SIGINT or SIGTERM (the parent of workers passes it on).
    The first process (no ``parent_pid``) owns the live side: the control socket (with
    ``control``), reloads on SIGHUP and file changes (``options`` are what the
    settings are built from again), and the links to the workers (``worker_sockets``); a
    worker takes the changes from its end of a link (``updates``).
    """
    running = await start(
        config,
        listen_sockets=listen_sockets,
        primary=parent_pid is None,
        certificates=certificates,
    )
    loop = asyncio.get_running_loop()
    assert running.live is not None
    if parent_pid is not None:
        running.banner = []
        _stop_when_orphaned(loop, running, parent_pid)

    def stop_signal() -> None:
        cut_short = running.on_stop_signal()
        if on_stop_signal is not None:
            on_stop_signal(cut_short)

    def stop_request() -> None:
        # `devtls stop`: as a first SIGTERM.
        if not running.stopping.is_set():
            stop_signal()

    live: LiveHandle | None = None
    follower: asyncio.BaseTransport | None = None
    try:
        if parent_pid is None:
            live = await serve_live(
                running.live,
                config,
                options=options,
                on_stop=stop_request,
                write_log=print_line,
                worker_sockets=worker_sockets,
                control=control,
            )
            running.banner[:0] = live.notices
        elif updates is not None:
            follower = await workerlink.receive(updates, running.live.apply)
    except BaseException:
        await shutdown(running)
        raise

    # A worker leaves SIGHUP to the first process, which reloads and tells it.
    def reload() -> None:
        if live is not None:
            live.router.reload()

    handlers: list[tuple[signal.Signals, Callable[[], None]]] = [
        (signal.SIGINT, stop_signal),
        (signal.SIGTERM, stop_signal),
    ]
    if hasattr(signal, "SIGHUP"):
        handlers.append((signal.SIGHUP, reload))
    if parent_pid is not None:
        handlers.append((getattr(signal, WORKER_STOP_SIGNAL), running.stop))
        handlers.append((getattr(signal, WORKER_HURRY_SIGNAL), running.cut_short))
    for signum, handler in handlers:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(signum, handler)
    # The banner comes last: whoever reads it may signal us at once.
    for line in running.banner:
        print_line(line)
    if on_ready is not None:
        on_ready(running)
    try:
        await running.stopping.wait()
    finally:
        if live is not None:
            live.close()
        if follower is not None:
            follower.close()
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
    for listener in running.plain_listeners:
        listener.close_all()
    for connection in list(state.connections):
        connection.close_if_idle()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.config.limits.drain_timeout
    while state.connections and loop.time() < deadline and not running.hurry.is_set():
        # Woken by a second signal at once, else polled: a connection ends by itself.
        with contextlib.suppress(asyncio.TimeoutError):  # not TimeoutError before 3.11
            await asyncio.wait_for(running.hurry.wait(), DRAIN_POLL_SECONDS)
        for connection in list(state.connections):
            connection.close_if_idle()
    for connection in list(state.connections):
        connection.abort()
    state.pool.close_all()
    if running.lan is not None:
        await running.lan.close()
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


def run_on_new_loop(main: Coroutine[Any, Any, int]) -> int:
    tune_malloc()  # once per serving process (see devtls/proxy/heap.py)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)  # Python 3.10 cannot choose the loop without a policy
