"""Who is at the other end of a Unix socket: the one platform switch for peer credentials."""

from __future__ import annotations

import socket
import sys


def peer_identity(sock: socket.socket) -> tuple[int, int | None]:
    """(uid, pid) of the process at the other end of a connected Unix socket.

    The pid is None where the platform does not say it. OSError where neither is known.
    """
    if sys.platform == "linux":
        from devtls.peercred.linux import peer_identity as linux_identity

        return linux_identity(sock)
    if sys.platform == "darwin":  # pragma: no cover - macOS
        from devtls.peercred.macos import peer_identity as macos_identity

        return macos_identity(sock)
    raise OSError(f"peer credentials are not supported on {sys.platform}")  # pragma: no cover
