"""What a live change does to one serving process: a new router, settings, certificates.

The process owning the control socket (the only one with --workers 1, else worker 0) decides
every change and hands each process the same ``Snapshot``; ``LiveState.apply`` is how both it
and the other workers take it. Connections read ``state.router`` and ``state.config`` per
request, so the next request of an open connection (an HTTP/2 one too) follows the new
routes, while a WebSocket or a request in flight keeps the upstream it has.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from devtls.ca import LocalCA
from devtls.config import ServeConfig
from devtls.errors import DevtlsError
from devtls.proxy.certs import CertificateSource
from devtls.proxy.routes import Router
from devtls.proxy.state import ServerState


@dataclass(frozen=True)
class Snapshot:
    """The live settings: ``config.routes`` are all routes in effect, ``config.upstream`` the
    fallback; ``cert_generation`` grows each time the --cert/--key files are to be read again."""

    config: ServeConfig
    cert_generation: int = 0
    # Grows each time the CA files were replaced (devtls ca rotate): load the CA again.
    ca_generation: int = 0


def needs_upstream_tls(config: ServeConfig) -> bool:
    upstreams = [config.upstream, *(r.upstream for r in config.routes)]
    return any(u is not None and u.scheme == "https" for u in upstreams)


class LiveState:
    def __init__(
        self,
        state: ServerState,
        certs: CertificateSource,
        ca: LocalCA | None,
        make_upstream_tls: Callable[[LocalCA | None], ssl.SSLContext],
    ) -> None:
        self.state = state
        self.certs = certs
        self.ca = ca
        self._make_upstream_tls = make_upstream_tls
        self.cert_generation = 0
        self.ca_generation = 0
        # A route host may get a certificate minted on demand, whenever it was added.
        certs.may_mint = self.may_mint

    def may_mint(self, name: str) -> bool:
        # A name under .localhost reaches only this machine: a browser asking for one that no
        # route serves gets the 404 page listing the apps, not a certificate error.
        return self.state.router.serves_host(name) or name.lower().endswith(".localhost")

    def apply(self, snapshot: Snapshot) -> None:
        """Take a snapshot; the certificate files are read again only when they changed (a
        pair that cannot be read keeps the old one: the owner checked it and said so)."""
        state = self.state
        config = snapshot.config
        if config.names != state.config.names and self.ca is not None and self.certs.files is None:
            self.certs.reissue(config.names)
        if snapshot.cert_generation > self.cert_generation:
            self.cert_generation = snapshot.cert_generation
            # The owner read them first and said so if they were bad.
            with contextlib.suppress(DevtlsError):
                self.reload_cert_files()
        if snapshot.ca_generation > self.ca_generation:
            self.ca_generation = snapshot.ca_generation
            with contextlib.suppress(DevtlsError):  # the owner said so if it was unusable
                self.reload_ca()
        if state.upstream_tls is None and needs_upstream_tls(config):
            state.upstream_tls = self._make_upstream_tls(self.ca)
        # Router first: a request between the two lines sees the new routes, old settings.
        state.router = Router(config.routes, config.upstream)
        state.config = config

    def reload_ca(self) -> bool:
        """Load the CA from its folder again; True if it is another root than the running one.

        The new root signs every leaf from now on; https upstreams trust it as well as the
        old one (whose leaves they may still serve).
        """
        if self.ca is None or self.ca.path is None or self.certs.files is not None:
            return False
        new = LocalCA.load(self.ca.path)
        if new.cert == self.ca.cert:
            return False
        self.certs.use_ca(new)
        if self.state.upstream_tls is not None:
            self.state.upstream_tls.load_verify_locations(cadata=new.cert_pem().decode("ascii"))
        self.ca = new
        return True

    def reload_cert_files(self) -> None:
        if self.certs.files is not None:
            self.certs.reload_files()
