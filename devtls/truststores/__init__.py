"""The trust stores present on this machine; the only place that looks at the platform."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from devtls.errors import UsageError
from devtls.truststores.base import Availability, TrustStore
from devtls.truststores.policies import FirefoxPolicy

STORE_NAMES = ("system", "nss", "java")


def running_under_wsl(proc_version: Path = Path("/proc/version")) -> bool:
    """WSL 1 and 2 name Microsoft in the kernel's version string ("Microsoft", "microsoft")."""
    try:
        return "microsoft" in proc_version.read_text(errors="replace").lower()
    except OSError:
        return False


def all_stores() -> list[TrustStore]:
    """Every store devtls knows on this platform, present or not."""
    from devtls.truststores.java import JavaStore
    from devtls.truststores.nss import NSSStore

    system: TrustStore
    policy: FirefoxPolicy
    if sys.platform == "darwin":
        from devtls.truststores.firefox_policy_macos import MacOSFirefoxPolicy
        from devtls.truststores.system_macos import MacOSSystemStore

        system, policy = MacOSSystemStore(), MacOSFirefoxPolicy()
    elif sys.platform == "win32":
        from devtls.truststores.firefox_policy_windows import WindowsFirefoxPolicy
        from devtls.truststores.system_windows import WindowsSystemStore

        system, policy = WindowsSystemStore(), WindowsFirefoxPolicy()
    else:
        from devtls.truststores.firefox_policy_linux import LinuxFirefoxPolicy
        from devtls.truststores.system_linux import LinuxSystemStore

        system, policy = LinuxSystemStore(), LinuxFirefoxPolicy()
        if running_under_wsl():
            from devtls.truststores.system_wsl import WSLSystemStore

            system = WSLSystemStore(system)
    # On Windows Firefox keeps no root of ours in NSS (it reads the system store, which its
    # policy makes sure of), so there the nss store is the policy alone.
    nss = NSSStore(policy=policy, use_databases=sys.platform != "win32")
    return [system, nss, JavaStore()]


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


__all__ = [
    "STORE_NAMES",
    "Availability",
    "TrustStore",
    "all_stores",
    "running_under_wsl",
    "select",
]
