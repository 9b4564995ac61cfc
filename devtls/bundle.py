"""The system's root certificates, and a bundle of them plus the devtls root.

Apart from the trust stores: the pytest plugin writes a bundle without loading them.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Sequence
from pathlib import Path

from devtls.ca import LocalCA

# Where the system's root bundle lives, in the order Go's crypto/x509 looks for it.
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/pki/tls/cacert.pem",  # OpenELEC
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # CentOS, RHEL 7
    "/etc/ssl/cert.pem",  # macOS, Alpine
)


def system_roots() -> bytes:
    """The system's root bundle as PEM (the file where there is one, else what ssl loads)."""
    for candidate in SYSTEM_BUNDLES:
        with contextlib.suppress(OSError):
            data = Path(candidate).read_bytes()
            if b"BEGIN CERTIFICATE" in data:
                return data
    context = ssl.create_default_context()
    return "".join(
        ssl.DER_cert_to_PEM_cert(der) for der in context.get_ca_certs(binary_form=True)
    ).encode()


def bundle_pem(ca: LocalCA, more_roots: Sequence[bytes] = ()) -> bytes:
    """The system roots plus the devtls root and ``more_roots``, each once, as PEM."""
    content = system_roots()
    for root_pem in (ca.cert_pem(), *more_roots):
        if root_pem.strip() not in content:
            content = content.rstrip(b"\n") + b"\n" + root_pem
    return content
