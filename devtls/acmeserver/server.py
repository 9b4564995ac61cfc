"""``devtls acme-server`` on the network: TLS, HTTP/1.1 framing, validations, CA reloads.

TLS is devtls's own (proxy.tls, with its ClientHello checks and connection slots), each
connection's requests are read in connection.py (bounded there), the protocol itself is
AcmeService (sans-IO). Open connections are bounded by MAX_CONNECTIONS, validations running at
once by MAX_VALIDATIONS. The CA is read from CAROOT and looked at again every CA_CHECK_SECONDS
and at each finalize: a root replaced by ``ca rotate`` is used from then on, without a restart.
The CA key stays in this process; its own TLS certificate is minted in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import signal
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from devtls.acmeserver.allowlist import AllowList
from devtls.acmeserver.connection import AcmeConnection
from devtls.acmeserver.problems import AcmeProblem
from devtls.acmeserver.service import AcmeService
from devtls.acmeserver.statefile import StateFile, state_path
from devtls.acmeserver.validate import ValidationPorts, validate
from devtls.acmeserver.wire import ValidationJob
from devtls.ca import CERT_FILE, KEY_FILE, LocalCA, resolve_caroot
from devtls.config import Address, parse_address
from devtls.errors import CAError, DevtlsError, UsageError
from devtls.issue import check_days, issue_leaf
from devtls.names import NameKind, parse_name
from devtls.proxy import http1
from devtls.proxy.routes import host_without_port
from devtls.proxy.tls import HandshakeSlots, TLSServerProtocol

DEFAULT_LISTEN = "127.0.0.1:14000"
# Leaves live a week unless --days says otherwise: renewals happen often enough to be tested.
DEFAULT_DAYS = 7
HANDSHAKE_SECONDS = 10.0
MAX_CONNECTIONS = 256
MAX_VALIDATIONS = 8
MAX_QUEUED_VALIDATIONS = 256
CA_CHECK_SECONDS = 5.0
SERVER_CERT_DAYS = 30
_PORT = re.compile(r":[0-9]{1,5}")


@dataclass(frozen=True)
class AcmeServerSettings:
    listen: Address
    allow: AllowList
    days: int
    ports: ValidationPorts
    caroot: Path

    @classmethod
    def build(
        cls,
        listen: str | None,
        allow: list[str] | None,
        days: int | None,
        environ: Mapping[str, str] = os.environ,
    ) -> AcmeServerSettings:
        address = parse_address(listen or DEFAULT_LISTEN)
        if days is not None and days < 1:
            raise UsageError(f"--days {days} is out of range", "use at least 1")
        return cls(
            address,
            AllowList.parse(tuple(allow or ())),
            check_days(days if days is not None else DEFAULT_DAYS),
            ValidationPorts.from_env(environ),
            resolve_caroot(),
        )


class CAWatcher:
    """The CA in CAROOT, loaded again when its files change (a rotated root)."""

    def __init__(self, root: Path, write_log: Callable[[str], None]) -> None:
        self.root = root
        self.write_log = write_log
        self.ca, created = LocalCA.load_or_create(root)
        if created:
            write_log(f"created a new local CA in {root}; run 'devtls install' to trust it")
        self.generation = 0
        self._stamp = self._read_stamp()
        self._refused: object = None

    def _read_stamp(self) -> object:
        stamps = []
        for name in (CERT_FILE, KEY_FILE):
            try:
                st = os.stat(self.root / name)
            except OSError:
                return None
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def current(self) -> LocalCA:
        stamp = self._read_stamp()
        if stamp is None or stamp == self._stamp:
            return self.ca
        try:
            ca = LocalCA.load(self.root)
        except CAError as exc:
            # Half-way through a replacement, or broken: the previous root keeps signing.
            if stamp != self._refused:
                self._refused = stamp
                self.write_log(f"the CA in {self.root} changed but cannot be used: {exc}")
            return self.ca
        self.ca, self._stamp = ca, stamp
        self.generation += 1
        self.write_log(
            f"the CA changed: issuing from {ca.subject} (SHA-256 {ca.fingerprint_sha256})"
        )
        return ca


class AcmeServer:
    def __init__(self, settings: AcmeServerSettings, write_log: Callable[[str], None]) -> None:
        self.settings = settings
        self.write_log = write_log
        self.watcher = CAWatcher(settings.caroot, write_log)
        self.service = AcmeService(
            self.watcher.current, settings.allow, days=settings.days, log=write_log
        )
        self.state_file = StateFile(state_path(settings.caroot, settings.listen), write_log)
        self.state_file.load(self.service.store)
        self.connections: set[AcmeConnection] = set()
        self.validations: set[asyncio.Task[None]] = set()
        self.running = asyncio.Semaphore(MAX_VALIDATIONS)
        self.slots = HandshakeSlots(MAX_CONNECTIONS, lambda: len(self.connections), write_log)
        self.port = settings.listen.port
        self._generation = -1
        self._renew_at = dt.datetime.now(dt.timezone.utc)
        self.context = self._mint()

    def _mint(self) -> ssl.SSLContext:
        """The server's own certificate, from the current root, never written to disk."""
        names = ["localhost", "127.0.0.1", "::1"]
        host = self.settings.listen.host
        if host and host not in ("0.0.0.0", "::") and host not in names:  # noqa: S104
            names.append(host)
        ca = self.watcher.current()
        leaf = issue_leaf(ca, names, key_type="ecdsa", days=SERVER_CERT_DAYS)
        context = leaf.server_context()
        context.set_alpn_protocols(["http/1.1"])
        self._generation = self.watcher.generation
        self._renew_at = (
            leaf.cert.not_valid_before_utc
            + (leaf.not_after - leaf.cert.not_valid_before_utc) * 2 / 3
        )
        return context

    def protocol(self) -> TLSServerProtocol:
        return TLSServerProtocol(
            asyncio.get_running_loop(),
            self.context,
            lambda alpn: AcmeConnection(self),
            handshake_timeout=HANDSHAKE_SECONDS,
            plain_http_answer=lambda data: http1.simple_response(
                400, b"this is an HTTPS port: use https://\n", close=True
            ),
            slots=self.slots,
        )

    async def watch_ca(self) -> None:
        while True:
            await asyncio.sleep(CA_CHECK_SECONDS)
            self.watcher.current()
            now = dt.datetime.now(dt.timezone.utc)
            if self.watcher.generation != self._generation or now >= self._renew_at:
                try:
                    self.context = self._mint()
                except CAError as exc:
                    self.write_log(f"cannot renew this server's own certificate: {exc}")

    def request_handled(self) -> None:
        """What a request asked for beyond its answer: validations to run, accounts to save."""
        self.state_file.save_if_changed(self.service.store)
        self.start_validations()

    def start_validations(self) -> None:
        jobs, self.service.jobs = self.service.jobs, []
        for job in jobs:
            if len(self.validations) >= MAX_QUEUED_VALIDATIONS:
                busy = AcmeProblem("rateLimited", "too many validations at once; try again")
                self.service.complete_validation(job.challenge_id, busy)
                continue
            task = asyncio.ensure_future(self._validate(job))
            self.validations.add(task)
            task.add_done_callback(self.validations.discard)

    async def _validate(self, job: ValidationJob) -> None:
        async with self.running:
            problem = await validate(job, self.settings.ports)
        self.service.complete_validation(job.challenge_id, problem)
        outcome = "valid" if problem is None else f"invalid: {problem.detail}"
        self.write_log(f"{job.type} for {job.identifier.value}: {outcome}")

    def base_for(self, head: http1.RequestHead) -> str | None:
        """``https://HOST[:PORT]`` from the request's Host, if it is a host name or an IP."""
        host = head.host.decode("latin-1").lower()
        if not host:
            listen = self.settings.listen
            return f"https://{listen.url_host}:{self.port}"
        bare = host_without_port(host)
        bracketed = host.startswith("[")
        # RFC 3986 3.2.2: an IPv6 address is written in brackets, and only an IPv6 address.
        port = host[host.find("]") + 1 :] if bracketed and "]" in host else host[len(bare) :]
        if bracketed != (":" in bare) or (port and not _PORT.fullmatch(port)):
            return None
        try:
            name = parse_name(bare)
        except UsageError:
            return None
        if name.kind not in (NameKind.DNS, NameKind.IP) or name.value.startswith("*"):
            return None
        return f"https://{host}"


def directory_url(settings: AcmeServerSettings, port: int) -> str:
    host = settings.listen.host
    shown = f"[{host}]" if ":" in host else host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a name to print, not to bind
        shown = "localhost"
    return f"https://{shown}:{port}/directory"


async def serve(settings: AcmeServerSettings, write_log: Callable[[str], None]) -> None:
    server = AcmeServer(settings, write_log)
    loop = asyncio.get_running_loop()
    listen = settings.listen
    try:
        listener = await loop.create_server(server.protocol, listen.host or None, listen.port)
    except OSError as exc:
        raise DevtlsError(
            f"cannot listen on {listen}: {exc.strerror or exc}",
            "choose another --listen address or port",
        ) from None
    server.port = int(listener.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    ports = settings.ports
    write_log(f"devtls acme-server: directory {directory_url(settings, server.port)}")
    write_log(f"allowed names: {settings.allow.describe()}")
    write_log(
        f"certificates valid {settings.days} days; http-01 checked on port {ports.http},"
        f" tls-alpn-01 on port {ports.tls}"
    )
    write_log(server.state_file.describe())
    watcher = asyncio.ensure_future(server.watch_ca())
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        listener.close()
        for connection in list(server.connections):
            connection.close()
        for task in list(server.validations):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def check_installed() -> None:
    """The JWS work is josepy's and acme's (the ``acme`` extra): one line if they are missing."""
    try:
        import acme.jws  # noqa: F401
        import josepy  # noqa: F401
    except ImportError as exc:
        missing = (exc.name or "acme").partition(".")[0]
        raise UsageError(
            f"acme-server needs the {missing!r} package, which is not installed",
            "run: pip install 'devtls[acme]'",
        ) from None


def run(settings: AcmeServerSettings, write_log: Callable[[str], None] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; 0 then."""

    def print_line(line: str) -> None:
        print(f"acme-server: {line}" if not line.startswith("devtls ") else line, flush=True)

    asyncio.run(serve(settings, write_log or print_line))
    return 0
