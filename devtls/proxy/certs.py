"""Which certificate a TLS client gets: picked by SNI, minted from the CA when needed."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from devtls.ca import LocalCA
from devtls.constraints import within
from devtls.errors import ConfigError, UsageError
from devtls.issue import LeafCert, issue_leaf, server_tls_context
from devtls.names import Name, NameKind, parse_name
from devtls.proxy.clienthello import ClientHello
from devtls.proxy.flow import Transport
from devtls.serve_settings import DEFAULT_NAMES

log = logging.getLogger("devtls")

# Minted leaves kept in memory; a client inventing names cannot grow this.
MAX_MINTED = 256
# The attribute of the ssl.SSLObject where the SNI name is left for routing.
# Only ever a validated, lower-case host name, or None (no SNI, or an IP literal).
SNI_ATTRIBUTE = "devtls_sni"
# New names minted per minute at most, unless --limit mint_per_minute says otherwise: a client
# inventing names costs a millisecond of CPU each, 5,000 of them 18 s without a bound.
DEFAULT_MINT_PER_MINUTE = 60


def peer_of(transport: Transport) -> tuple[str, str | None]:
    """A client connection's address ("unix" on a Unix socket) and the SNI name its TLS
    layer left for routing (validated, lower case; None without one)."""
    peer = transport.get_extra_info("peername")
    sslobj = transport.get_extra_info("ssl_object")
    sni = getattr(sslobj, SNI_ATTRIBUTE, None) if sslobj is not None else None
    return (peer[0] if isinstance(peer, tuple) else "unix"), sni


def tls_of(transport: Transport | None) -> tuple[str, str] | None:
    """(TLS version, cipher) of a client connection, for an upstream that asked (the demo)."""
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    if sslobj is None:
        return None
    cipher = sslobj.cipher()
    return sslobj.version() or "", cipher[0] if cipher else ""


def set_alpn(context: ssl.SSLContext, protocols: tuple[str, ...]) -> None:
    """Offer ``protocols`` (``ServeConfig.offered_alpn``); nothing at all when empty."""
    if protocols:
        context.set_alpn_protocols(list(protocols))


class AcmeContexts(Protocol):
    alpn_contexts: dict[str, ssl.SSLContext]

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None: ...

    def alpn_challenge(
        self, server_name: str | None, alpn: tuple[bytes, ...]
    ) -> ssl.SSLContext | None: ...


class MintBudget:
    """At most ``per_minute`` new names minted in any 60 s (a sliding window)."""

    WINDOW = 60.0

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._starts: deque[float] = deque()
        self._refused_logged_at: float | None = None

    def take(self) -> bool:
        now = self._clock()
        starts = self._starts
        while starts and now - starts[0] >= self.WINDOW:
            starts.popleft()
        if len(starts) >= self.per_minute:
            return False
        starts.append(now)
        return True

    def should_log_refusal(self) -> bool:
        """True at most once a minute: a flood of new names gives one line, not one each."""
        now = self._clock()
        if self._refused_logged_at is None or now - self._refused_logged_at >= self.WINDOW:
            self._refused_logged_at = now
            return True
        return False


class CertificateSource:
    """The default context (minted at start, or the user's files) and on-demand leaves.

    Every name it sees is a validated, lower-case host name (devtls.proxy.clienthello), so
    ``APP.TEST`` and ``app.test`` share one certificate (RFC 4343).
    """

    def __init__(
        self,
        *,
        names: tuple[str, ...],
        ca: LocalCA | None,
        extra_names: tuple[str, ...] = (),
        cert_file: Path | None = None,
        key_file: Path | None = None,
        alpn: tuple[str, ...] = ("http/1.1",),
        acme: AcmeContexts | None = None,
        mint_per_minute: int = DEFAULT_MINT_PER_MINUTE,
        write_log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        leaf: LeafCert | None = None,
        client_ca: LocalCA | None = None,
    ) -> None:
        """``leaf``: served for every name, nothing minted (a server whose certificate is
        given whole, as the pytest plugin's expired or wrong-host ones). ``client_ca``: every
        handshake must present a client certificate signed by it (mutual TLS)."""
        self._ca = None if leaf is not None else ca
        self._client_ca = client_ca
        # Names every default leaf covers whatever the settings say (--lan's addresses).
        self.extra_names = extra_names
        self._acme = acme
        # Which names may get a minted certificate: none until the server, once it knows its
        # routes, says which.
        self.may_mint: Callable[[str], bool] = lambda _name: False
        self._alpn = alpn
        self._write_log = write_log
        self._budget = MintBudget(mint_per_minute, clock)
        # Names outside the root's constraints: said once a minute, not per handshake.
        self._refusals = MintBudget(1, clock)
        self._minted: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        # One mint per name at a time: handshakes for a name being minted share its future.
        self._pending: dict[str, asyncio.Future[ssl.SSLContext | None]] = {}
        self.files = None if cert_file is None or key_file is None else (cert_file, key_file)
        self.covered: tuple[str, ...] = ()
        self.leaf: LeafCert | None = None
        self.default_context: ssl.SSLContext
        self._exact: set[str] = set()
        self._wildcards: set[str] = set()
        self._names: tuple[str, ...] = names
        # Grows when the CA is replaced: a leaf minted from the old root is not cached.
        self._ca_epoch = 0
        if leaf is not None:
            self.leaf = leaf
            self.default_context = self._finish(leaf.server_context())
        elif self.files is not None:
            self.reload_files()
        else:
            if ca is None:
                raise ConfigError("no CA and no --cert/--key to serve", "give --cert and --key")
            self.reissue(names)

    def reissue(self, names: tuple[str, ...]) -> None:
        """A new default leaf from the CA for ``names``, for the handshakes from now on.

        Under a name-constrained root, the built-in default names outside its constraints
        (127.0.0.1 under a DNS-only root) are left out; a name asked for is an IssueError.
        """
        assert self._ca is not None
        self._names = names
        constraints = self._ca.constraints
        if constraints is not None:
            names = tuple(n for n in names if n not in DEFAULT_NAMES or within(constraints, n))
        wanted = list(names) + [n for n in self.extra_names if n not in names]
        leaf = issue_leaf(self._ca, wanted, key_type="ecdsa")
        context = self._finish(leaf.server_context())
        self.leaf = leaf
        self.covered = tuple(str(n).lower() for n in leaf.names)
        self._exact = {p for p in self.covered if p and not p.startswith("*.")}
        self._wildcards = {p[2:] for p in self.covered if p.startswith("*.")}
        self.default_context = context

    def use_ca(self, ca: LocalCA) -> None:
        """Sign with ``ca`` from now on (``devtls ca rotate`` replaced the root): a new default
        leaf, and the minted ones forgotten. Open connections keep the leaf they have."""
        self._ca = ca
        self._ca_epoch += 1
        self._minted.clear()
        self._pending.clear()  # handshakes waiting on them still get theirs
        self.reissue(self._names)

    def reload_files(self) -> None:
        """Load the --cert/--key files again; ConfigError (and the old pair kept) if unusable.

        Connections already open keep the pair they were made with.
        """
        assert self.files is not None
        self.default_context = self._finish(_context_from_files(*self.files))

    def choose(
        self, hello: ClientHello
    ) -> ssl.SSLContext | asyncio.Future[ssl.SSLContext | None] | None:
        """The context for this hello: None for the default, a future while one is minted."""
        server_name = hello.server_name
        acme = self._acme
        if acme is not None:
            if hello.alpn and acme.alpn_contexts:
                # An ACME tls-alpn-01 validation (ALPN acme-tls/1), only while one is pending.
                challenge = acme.alpn_challenge(server_name, hello.alpn)
                if challenge is not None:
                    return challenge
            acme_context = acme.context_for(server_name)
            if acme_context is not None:
                return acme_context
        if server_name is None or self._ca is None or self._covers(server_name):
            return None
        return self._context_for(server_name)

    def _covers(self, server_name: str) -> bool:
        if server_name in self._exact:
            return True
        label, dot, rest = server_name.partition(".")
        return bool(label) and bool(dot) and rest in self._wildcards

    def _context_for(
        self, server_name: str
    ) -> ssl.SSLContext | asyncio.Future[ssl.SSLContext | None] | None:
        context = self._minted.get(server_name)
        if context is not None:
            self._minted.move_to_end(server_name)
            return context
        pending = self._pending.get(server_name)
        if pending is not None:
            return pending
        if not self.may_mint(server_name):
            return None
        try:
            name = parse_name(server_name)
        except UsageError:
            return None
        if name.kind is not NameKind.DNS:
            return None
        assert self._ca is not None
        constraints = self._ca.constraints
        if constraints is not None and not constraints.permits(name):
            if self._write_log is not None and self._refusals.take():
                self._write_log(
                    f"not minting a certificate for {server_name}: outside the CA's name "
                    f"constraints ({constraints}); it gets the default certificate"
                )
            return None
        if not self._budget.take():
            if self._write_log is not None and self._budget.should_log_refusal():
                self._write_log(
                    f"minting limit reached ({self._budget.per_minute} new names a minute):"
                    " new names get the default certificate for now"
                    " (--limit mint_per_minute=N raises it)"
                )
            return None
        loop = asyncio.get_running_loop()
        # ECDSA P-256: about a millisecond to mint, in a worker thread so the loop goes on.
        future: asyncio.Future[ssl.SSLContext | None] = loop.run_in_executor(None, self._mint, name)
        self._pending[server_name] = future
        epoch = self._ca_epoch
        future.add_done_callback(lambda done: self._minted_done(server_name, done, epoch))
        return future

    def _mint(self, name: Name) -> ssl.SSLContext:
        assert self._ca is not None
        return self._finish(issue_leaf(self._ca, [name], key_type="ecdsa").server_context())

    def _finish(self, context: ssl.SSLContext) -> ssl.SSLContext:
        set_alpn(context, self._alpn)
        if self._client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=self._client_ca.cert_pem().decode("ascii"))
        return context

    def _minted_done(
        self, server_name: str, future: asyncio.Future[ssl.SSLContext | None], epoch: int
    ) -> None:
        # On the loop: the cache is only ever touched there.
        if self._pending.get(server_name) is future:
            del self._pending[server_name]
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            if self._write_log is not None:
                self._write_log(f"minting a certificate for {server_name} failed: {exc}")
            return
        context = future.result()
        if context is None or epoch != self._ca_epoch:
            return
        self._minted[server_name] = context
        if len(self._minted) > MAX_MINTED:
            self._minted.popitem(last=False)
        log.info("minted a certificate for %s", server_name)


def _context_from_files(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = server_tls_context()
    try:
        # A chain in the certificate file (leaf first, then intermediates) is sent whole.
        context.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as exc:
        raise ConfigError(f"cannot read {exc.filename}", "check the --cert/--key paths") from None
    except ssl.SSLError as exc:
        raise ConfigError(
            f"cannot use {cert_file} with {key_file}: {exc.reason or exc}",
            "give a PEM certificate (chain) and its matching PEM key",
        ) from None
    return context
