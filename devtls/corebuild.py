"""Which build of the sans-IO core is running: compiled with mypyc, or the pure-Python source.

setup.py compiles the modules of the forwarder's hot path (``COMPILED``) where a C compiler
works; each extension module then sits next to its .py file and Python imports it first.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import ExtensionFileLoader
from typing import Literal

# What setup.py compiles (its CORE list): one source, two builds.
COMPILED = (
    "devtls.proxy.http1",
    "devtls.proxy.uri",
    "devtls.proxy.routes",
    "devtls.proxy.forwarding",
    "devtls.proxy.h2fields",
    "devtls.proxy.clienthello",
)

Build = Literal["compiled", "pure"]


def module_build(name: str) -> Build:
    """How the module ``name`` was loaded, or would be by an import (which is not run here:
    ``devtls --version`` stays as fast as it was)."""
    module = sys.modules.get(name)
    spec = module.__spec__ if module is not None else importlib.util.find_spec(name)
    compiled = spec is not None and isinstance(spec.loader, ExtensionFileLoader)
    return "compiled" if compiled else "pure"


def core_build() -> Build:
    """The running core's build, decided by the HTTP/1 parser (the first module compiled)."""
    return module_build("devtls.proxy.http1")


def core_description() -> str:
    """The core's build in words, as ``devtls --version`` prints it."""
    return "compiled with mypyc" if core_build() == "compiled" else "pure Python"
