"""pytest fixtures for real HTTPS in tests (loaded through the ``pytest11`` entry point).

``devtls_ca``      an ephemeral CA in memory, one per session (per xdist worker)
``devtls_cert``    ``devtls_cert(*names, key_type="ecdsa", client=False, not_before=None,
                   not_after=None, ca=None)`` -> a leaf (``LeafCert`` plus ``.files()``)
``devtls_trust``   the usual clients trust ``devtls_ca`` for this test (environment variables)
``devtls_https``   ``devtls_https(app_or_upstream, **options)`` -> a server with ``.url``,
                   ``.ws_url``, ``.leaf``, ``.ca``; the options are those of
                   ``devtls.testing.HTTPSServers.start`` (``expired``, ``names``, ``untrusted``,
                   ``client_cert_required``...)

None of them reads or writes CAROOT, the user's CA or a trust store. This module imports
nothing but pytest: the rest (cryptography, the forwarder) loads when a fixture is first used,
so a session that uses none pays nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import datetime as dt

    from devtls._x509 import KeyType
    from devtls.ca import LocalCA
    from devtls.testing import HTTPSServer, Leaf, Trust

__all__ = ["devtls_ca", "devtls_cert", "devtls_https", "devtls_trust"]


@pytest.fixture(scope="session")
def devtls_ca() -> LocalCA:
    """An ephemeral ECDSA CA, in memory only, shared by the session's tests."""
    from devtls.ca import LocalCA

    return LocalCA.ephemeral()


@pytest.fixture
def devtls_cert(devtls_ca: LocalCA, tmp_path: Path) -> Callable[..., Leaf]:
    """A factory of leaves signed by ``devtls_ca`` (or ``ca=``); ``leaf.files()`` writes the
    PEM files into ``tmp_path``; ``leaf.server_context()`` and ``leaf.client_context()``
    give ready ``ssl.SSLContext`` objects."""
    from devtls.testing import issue

    def make(
        *names: str,
        key_type: KeyType = "ecdsa",
        client: bool = False,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        ca: LocalCA | None = None,
    ) -> Leaf:
        return issue(
            ca or devtls_ca,
            *names,
            key_type=key_type,
            client=client,
            not_before=not_before,
            not_after=not_after,
            folder=tmp_path / "devtls-certs",
        )

    return make


@pytest.fixture
def devtls_trust(devtls_ca: LocalCA, tmp_path: Path) -> Iterator[Trust]:
    """SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE and NODE_EXTRA_CA_CERTS point at a
    bundle in ``tmp_path`` (the system roots plus ``devtls_ca``) for this test only."""
    from devtls.testing import make_trust

    trust = make_trust(devtls_ca, tmp_path / "devtls-trust")
    aiohttp_loaded = "aiohttp.connector" in sys.modules
    with pytest.MonkeyPatch.context() as patch:
        for name, value in trust.variables.items():
            patch.setenv(name, value)
        if aiohttp_loaded:
            _refresh_aiohttp_context(patch)
        yield trust
    if not aiohttp_loaded and "aiohttp.connector" in sys.modules:
        # Imported during the test, so made its default context with the test's bundle:
        # the tests after this one get one made without it.
        _refresh_aiohttp_context(None)


def _refresh_aiohttp_context(patch: pytest.MonkeyPatch | None) -> None:
    """aiohttp makes its default verifying context once, when imported: it is made again
    (by aiohttp's own function), so that it reads the variables in force now."""
    connector: Any = sys.modules["aiohttp.connector"]
    make = getattr(connector, "_make_ssl_context", None)
    if make is None or not hasattr(connector, "_SSL_CONTEXT_VERIFIED"):
        return  # another aiohttp: it reads the variables per session, or not at all
    if patch is None:
        connector._SSL_CONTEXT_VERIFIED = make(True)
    else:
        patch.setattr(connector, "_SSL_CONTEXT_VERIFIED", make(True))


@pytest.fixture
def devtls_https(devtls_ca: LocalCA, tmp_path: Path) -> Iterator[Callable[..., HTTPSServer]]:
    """A factory: ``devtls_https(app_or_upstream)`` puts devtls's forwarder (HTTP/2 and
    HTTP/1.1) in front of a port, a URL, or a WSGI or ASGI app it runs itself, on a free
    loopback port; everything it started is stopped when the test ends."""
    from devtls.testing import HTTPSServers

    servers = HTTPSServers(devtls_ca, tmp_path / "devtls-certs")
    try:
        yield servers.start
    finally:
        servers.close()
