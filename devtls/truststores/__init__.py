"""The trust stores present on this machine; the only place that looks at the platform."""

from __future__ import annotations

import os
import sys

from devtls.errors import UsageError
from devtls.truststores.base import Availability, TrustStore

STORE_NAMES = ("system", "nss", "java")


def all_stores() -> list[TrustStore]:
    """Every store devtls knows on this platform, present or not."""
    from devtls.truststores.java import JavaStore
    from devtls.truststores.nss import NSSStore

    system: TrustStore
    if sys.platform == "darwin":
        from devtls.truststores.system_macos import MacOSSystemStore

        system = MacOSSystemStore()
    elif sys.platform == "win32":
        from devtls.truststores.system_windows import WindowsSystemStore

        system = WindowsSystemStore()
    else:
        from devtls.truststores.system_linux import LinuxSystemStore

        system = LinuxSystemStore()
    stores: list[TrustStore] = [system, JavaStore()]
    if sys.platform != "win32":  # Firefox on Windows reads the system store itself
        stores.insert(1, NSSStore())
    return stores


def select(requested: list[str] | tuple[str, ...] = ()) -> list[TrustStore]:
    """The stores named by --store, else by $TRUST_STORES (as mkcert), else all of them."""
    names = list(requested)
    if not names and os.environ.get("TRUST_STORES"):
        names = [n.strip() for n in os.environ["TRUST_STORES"].split(",") if n.strip()]
    for name in names:
        if name not in STORE_NAMES:
            raise UsageError(f"unknown trust store {name!r}", "use system, nss or java")
    stores = all_stores()
    return [s for s in stores if s.name in names] if names else stores


__all__ = ["STORE_NAMES", "Availability", "TrustStore", "all_stores", "select"]
