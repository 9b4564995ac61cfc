"""macOS: LOCAL_PEERCRED (struct xucred) for the uid, LOCAL_PEERPID for the pid."""

from __future__ import annotations

import socket
import struct

SOL_LOCAL = 0
LOCAL_PEERCRED = 0x001
LOCAL_PEERPID = 0x002
# struct xucred: u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16].
_XUCRED_HEAD = struct.Struct("=II")
_XUCRED_SIZE = 4 + 4 + 2 + 2 + 16 * 4


def peer_identity(sock: socket.socket) -> tuple[int, int | None]:  # pragma: no cover - macOS
    raw = sock.getsockopt(SOL_LOCAL, LOCAL_PEERCRED, _XUCRED_SIZE)
    _version, uid = _XUCRED_HEAD.unpack_from(raw)
    try:
        pid = struct.unpack("=i", sock.getsockopt(SOL_LOCAL, LOCAL_PEERPID, 4))[0]
    except OSError:
        pid = 0
    return uid, pid or None
