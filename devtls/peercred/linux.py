"""Linux: SO_PEERCRED, the credentials the peer had when it connected (or listened)."""

from __future__ import annotations

import socket
import struct

# struct ucred: pid_t pid, uid_t uid, gid_t gid.
_UCRED = struct.Struct("iII")


def peer_identity(sock: socket.socket) -> tuple[int, int | None]:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _gid = _UCRED.unpack(raw)
    return uid, pid or None
