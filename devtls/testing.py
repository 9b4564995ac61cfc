"""What the pytest plugin's fixtures are made of, usable without pytest too.

Everything lives in memory or in a folder the caller gives (the test's ``tmp_path``): nothing
here reads or writes CAROOT, the user's CA or a trust store.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from devtls import _files
from devtls._x509 import KeyType
from devtls.ca import LocalCA
from devtls.config import Address, Limits, ServeConfig, parse_upstream
from devtls.errors import UsageError
from devtls.issue import LeafCert, issue_leaf
from devtls.names import default_file_names
from devtls.proxy.background import LoopThread, start_server, stop_server
from devtls.proxy.certs import CertificateSource
from devtls.proxy.server import Certificates, RunningServer
from devtls.testing_apps import AppServer, Interface, start_app

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
# An expired leaf ended a day ago; a not-yet-valid one starts in a day. Both are plainly
# outside any clock skew a client tolerates.
PAST_OR_FUTURE = dt.timedelta(days=1)
SHORT_LIFETIME = dt.timedelta(days=30)
# Tests stop their servers: requests still in flight get this long, not serve's 10 s.
TEST_DRAIN_SECONDS = 2.0
# Tries at a port free on both 127.0.0.1 and ::1.
DUAL_STACK_ATTEMPTS = 8


@dataclass(frozen=True)
class LeafFiles:
    """A leaf's PEM files: the certificate (0644), its key (0600), and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class Leaf(LeafCert):
    """A LeafCert that knows the folder its files go to (the test's ``tmp_path``)."""

    folder: Path | None = None

    @classmethod
    def of(cls, leaf: LeafCert, folder: Path | None) -> Leaf:
        return cls(leaf.cert, leaf.key, leaf.ca_cert, leaf.names, folder)

    def files(self, folder: str | os.PathLike[str] | None = None) -> LeafFiles:
        """Write the PEM files into ``folder`` (default: the test's) and return their paths."""
        where = self.folder if folder is None else Path(folder)
        if where is None:
            raise UsageError("this leaf has no folder for its files", "pass one: leaf.files(path)")
        where.mkdir(parents=True, exist_ok=True)
        usages = self.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        names = default_file_names(
            [str(n) for n in self.names], client=ExtendedKeyUsageOID.CLIENT_AUTH in usages
        )
        # mkcert's names, with a part of the serial: two leaves for one name in a test differ.
        serial = f"{self.cert.serial_number:x}"[:8]
        ca_serial = f"{self.ca_cert.serial_number:x}"[:12]
        stem = names.cert.removesuffix(".pem") + f"-{serial}"
        cert, key = where / f"{stem}.pem", where / f"{stem}-key.pem"
        ca = where / f"ca-{ca_serial}.pem"
        self.write_pem(cert, key)
        _files.write_atomic(ca, self.ca_pem(), _files.PUBLIC_MODE)
        return LeafFiles(cert, key, ca)


def issue(
    ca: LocalCA,
    *names: str,
    key_type: KeyType = "ecdsa",
    client: bool = False,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    folder: Path | None = None,
) -> Leaf:
    """A leaf for ``names`` (default: localhost and its IPs); dates in the past or future give
    an expired or not-yet-valid one."""
    leaf = issue_leaf(
        ca,
        list(names or DEFAULT_NAMES),
        key_type=key_type,
        client=client,
        not_before=not_before,
        not_after=not_after,
    )
    return Leaf.of(leaf, folder)


def expired_dates(now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now - SHORT_LIFETIME, now - PAST_OR_FUTURE


def not_yet_valid_dates(now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now + PAST_OR_FUTURE, now + SHORT_LIFETIME


# -- trust -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trust:
    """The bundle clients are pointed at, and the variables that point them there."""

    ca: LocalCA
    bundle: Path
    ca_file: Path
    variables: dict[str, str]

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting what the variables make clients trust."""
        return ssl.create_default_context(cafile=str(self.bundle))


def make_trust(ca: LocalCA, folder: Path) -> Trust:
    """Write the bundle (system roots plus the CA, as ``devtls env``) and the CA into ``folder``.

    The system roots stay in: the variables replace the roots of requests and curl but only
    add to Node's and (through the default certificate folder) to OpenSSL's, so with the CA
    alone clients would disagree about every other site; with both, they all trust exactly
    what they trusted before, plus this CA.
    """
    from devtls.bundle import bundle_pem

    folder.mkdir(parents=True, exist_ok=True)
    bundle, ca_file = folder / "bundle.pem", folder / "ca.pem"
    _files.write_atomic(bundle, bundle_pem(ca), _files.PUBLIC_MODE)
    _files.write_atomic(ca_file, ca.cert_pem(), _files.PUBLIC_MODE)
    variables = {
        "SSL_CERT_FILE": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "CURL_CA_BUNDLE": str(bundle),
        # Node adds these to its own roots: the CA alone.
        "NODE_EXTRA_CA_CERTS": str(ca_file),
    }
    return Trust(ca, bundle, ca_file, variables)


# -- HTTPS servers -----------------------------------------------------------------------


@dataclass
class HTTPSServer:
    """devtls's forwarder on a free loopback port, in front of ``upstream``."""

    url: str
    ws_url: str
    leaf: Leaf
    ca: LocalCA
    port: int
    upstream: str
    # The forwarder's log: access lines and failed handshakes.
    log: list[str] = field(default_factory=list)
    _running: RunningServer | None = field(default=None, repr=False)
    _app: AppServer | None = field(default=None, repr=False)


class HTTPSServers:
    """Starts forwarders (and the apps behind them) on one loop thread; ``close()`` stops all."""

    def __init__(self, ca: LocalCA, folder: Path | None = None) -> None:
        self.ca = ca
        self.folder = folder
        self._loop: LoopThread | None = None
        self._servers: list[HTTPSServer] = []

    def start(
        self,
        app_or_upstream: int | str | Callable[..., Any],
        *,
        names: tuple[str, ...] = DEFAULT_NAMES,
        key_type: KeyType = "ecdsa",
        expired: bool = False,
        not_yet_valid: bool = False,
        untrusted: bool = False,
        client_cert_required: bool = False,
        leaf: LeafCert | None = None,
        http2: bool = True,
        interface: Interface = "auto",
    ) -> HTTPSServer:
        if expired and not_yet_valid:
            raise UsageError("expired and not_yet_valid exclude each other", "choose one")
        served = self._leaf(names, key_type, expired, not_yet_valid, untrusted, leaf)
        app: AppServer | None = None
        if isinstance(app_or_upstream, bool):
            raise UsageError("an upstream is a port, a URL or an app, not a bool")
        if isinstance(app_or_upstream, int):
            upstream = f"127.0.0.1:{app_or_upstream}"
        elif isinstance(app_or_upstream, str):
            upstream = app_or_upstream
        else:
            app = start_app(app_or_upstream, interface)
            upstream = f"127.0.0.1:{app.port}"
        try:
            return self._serve(upstream, served, app, http2, client_cert_required)
        except BaseException:
            if app is not None:
                app.stop()
            raise

    def _leaf(
        self,
        names: tuple[str, ...],
        key_type: KeyType,
        expired: bool,
        not_yet_valid: bool,
        untrusted: bool,
        leaf: LeafCert | None,
    ) -> Leaf:
        if leaf is not None:
            return Leaf.of(leaf, self.folder)
        dates: tuple[dt.datetime | None, dt.datetime | None] = (None, None)
        if expired:
            dates = expired_dates()
        elif not_yet_valid:
            dates = not_yet_valid_dates()
        # A leaf of a throwaway CA that no client in the test trusts.
        signer = LocalCA.ephemeral() if untrusted else self.ca
        return issue(
            signer,
            *names,
            key_type=key_type,
            not_before=dates[0],
            not_after=dates[1],
            folder=self.folder,
        )

    def _serve(
        self,
        upstream: str,
        leaf: Leaf,
        app: AppServer | None,
        http2: bool,
        client_cert_required: bool,
    ) -> HTTPSServer:
        if self._loop is None:
            self._loop = LoopThread("devtls-https")
        sockets, host = loopback_sockets()
        port = sockets[0].getsockname()[1]
        config = ServeConfig(
            listen=Address("127.0.0.1", port),
            upstream=parse_upstream(upstream),
            names=tuple(str(n) for n in leaf.names),
            http2=http2,
            limits=Limits(drain_timeout=TEST_DRAIN_SECONDS),
        )
        source = CertificateSource(
            names=config.names,
            ca=None,
            leaf=leaf,
            client_ca=self.ca if client_cert_required else None,
            alpn=config.offered_alpn,
        )
        log: list[str] = []
        try:
            running = start_server(
                self._loop,
                config,
                certificates=Certificates(self.ca, source, None),
                write_log=log.append,
                listen_sockets=sockets,
            )
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        url_host = "localhost" if host == "localhost" else "127.0.0.1"
        server = HTTPSServer(
            url=f"https://{url_host}:{port}",
            ws_url=f"wss://{url_host}:{port}",
            leaf=leaf,
            ca=self.ca,
            port=port,
            upstream=upstream,
            log=log,
            _running=running,
            _app=app,
        )
        self._servers.append(server)
        return server

    def close(self) -> None:
        """Stop every forwarder, then the apps behind them, then the loop thread."""
        servers, self._servers = self._servers, []
        try:
            for server in servers:
                if server._running is not None and self._loop is not None:
                    stop_server(self._loop, server._running)
        finally:
            for server in servers:
                if server._app is not None:
                    server._app.stop()
            if self._loop is not None:
                self._loop.stop()
                self._loop = None


def loopback_sockets() -> tuple[list[socket.socket], str]:
    """Listening sockets on one free port of 127.0.0.1 and ::1 ("localhost" resolves to both),
    or of 127.0.0.1 alone where this machine has no IPv6 loopback."""
    for _ in range(DUAL_STACK_ATTEMPTS):
        v4 = socket.create_server(("127.0.0.1", 0))
        port = v4.getsockname()[1]
        try:
            v6 = socket.create_server(("::1", port), family=socket.AF_INET6, dualstack_ipv6=False)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                v4.close()
                continue
            return [v4], "127.0.0.1"
        return [v4, v6], "localhost"
    return [socket.create_server(("127.0.0.1", 0))], "127.0.0.1"
