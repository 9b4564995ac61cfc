"""Which certificate a TLS client gets: picked by SNI, minted from the CA when needed."""

from __future__ import annotations

import logging
import ssl
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from devtls.ca import LocalCA
from devtls.errors import ConfigError, UsageError
from devtls.issue import LeafCert, issue_leaf, server_tls_context
from devtls.names import NameKind, parse_name
from devtls.proxy.routes import host_matches

log = logging.getLogger("devtls")

# Minted leaves kept in memory; a client inventing names cannot grow this.
MAX_MINTED = 256
# The attribute of the ssl.SSLObject where the SNI name is left for routing.
SNI_ATTRIBUTE = "devtls_sni"


def set_alpn(context: ssl.SSLContext, tcp: bool, alpn: tuple[str, ...] = ()) -> None:
    """HTTP mode offers http/1.1; --tcp offers what --alpn says, and nothing without it.

    A protocol offered in --tcp mode is a promise about the upstream (h2 for a gRPC server):
    a client told h2 by us, in front of an HTTP/1.1 server, gets nothing it can read.
    """
    if not tcp:
        context.set_alpn_protocols(["http/1.1"])
    elif alpn:
        context.set_alpn_protocols(list(alpn))


class AcmeContexts(Protocol):
    def context_for(self, server_name: str | None) -> ssl.SSLContext | None: ...


class CertificateSource:
    """The default context (minted at start, or the user's files) and on-demand leaves."""

    def __init__(
        self,
        *,
        names: tuple[str, ...],
        ca: LocalCA | None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        tcp: bool = False,
        alpn: tuple[str, ...] = (),
        acme: AcmeContexts | None = None,
    ) -> None:
        self._ca = ca
        self._acme = acme
        # Which names may get a minted certificate: none until the server, once it knows its
        # routes, says which.
        self.may_mint: Callable[[str], bool] = lambda _name: False
        self._tcp = tcp
        self._alpn = alpn
        self._minted: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        if cert_file is not None and key_file is not None:
            self.default_context = _context_from_files(cert_file, key_file)
            self.covered: tuple[str, ...] = ()
            self.leaf: LeafCert | None = None
        else:
            if ca is None:
                raise ConfigError("no CA and no --cert/--key to serve", "give --cert and --key")
            self.leaf = issue_leaf(ca, list(names), key_type="ecdsa")
            self.default_context = self.leaf.server_context()
            self.covered = tuple(str(n) for n in self.leaf.names)
        set_alpn(self.default_context, tcp, alpn)
        self.default_context.sni_callback = self._on_sni

    def _on_sni(self, sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        setattr(sslobj, SNI_ATTRIBUTE, server_name)
        if self._acme is not None:
            acme_context = self._acme.context_for(server_name)
            if acme_context is not None:
                sslobj.context = acme_context
                return
        if server_name is None or self._ca is None or self._covers(server_name):
            return
        context = self._context_for(server_name)
        if context is not None:
            sslobj.context = context

    def _covers(self, server_name: str) -> bool:
        return any(host_matches(pattern, server_name) for pattern in self.covered if pattern)

    def _context_for(self, server_name: str) -> ssl.SSLContext | None:
        context = self._minted.get(server_name)
        if context is not None:
            self._minted.move_to_end(server_name)
            return context
        if not self.may_mint(server_name):
            return None
        try:
            name = parse_name(server_name)
        except UsageError:
            return None
        if name.kind is not NameKind.DNS or self._ca is None:
            return None
        # ECDSA P-256: about a millisecond to mint, and cheaper handshakes than RSA.
        context = issue_leaf(self._ca, [name], key_type="ecdsa").server_context()
        set_alpn(context, self._tcp, self._alpn)
        self._minted[server_name] = context
        if len(self._minted) > MAX_MINTED:
            self._minted.popitem(last=False)
        log.info("minted a certificate for %s", server_name)
        return context


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
