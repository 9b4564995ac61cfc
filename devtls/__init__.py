"""devtls: real HTTPS and WSS for local development.

The public API is small: ``LocalCA`` (load, create or make a throwaway CA; issue leaves),
``LeafCert`` (PEM, PKCS#12, files, SSL contexts) and ``DevtlsError``. Names are loaded on
first use so that ``import devtls`` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DevtlsError", "LeafCert", "LocalCA", "__version__", "resolve_caroot"]

if TYPE_CHECKING:
    from devtls.ca import LocalCA, resolve_caroot
    from devtls.errors import DevtlsError
    from devtls.issue import LeafCert

_LAZY = {
    "LocalCA": "devtls.ca",
    "resolve_caroot": "devtls.ca",
    "LeafCert": "devtls.issue",
    "DevtlsError": "devtls.errors",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'devtls' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
