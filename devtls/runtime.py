"""The user's runtime folder: the router's control socket, its lock, pid and log files.

platformdirs' ``user_runtime_dir("devtls")``: ``$XDG_RUNTIME_DIR/devtls`` on Linux (a tmpfs
only the user can enter, emptied at logout), the user's cache folder on macOS. The folder is
0700 and must be the user's own: whoever can write in it could put a socket of theirs there.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from devtls.errors import DevtlsError

CONTROL_SOCKET = "control.sock"
# Held (flock) by the router that owns the control socket, for as long as it runs.
CONTROL_LOCK = "control.lock"
# Written by whoever starts a router in the background; `devtls stop` removes it.
PID_FILE = "router.pid"
LOG_FILE = "router.log"
# sun_path holds 108 bytes on Linux, 104 on macOS, with its terminating NUL.
MAX_SOCKET_PATH = 103


def runtime_dir() -> Path:
    import platformdirs

    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR (a container, su) platformdirs warns and falls back to
        # /tmp/runtime-UID; the ownership checks below make that folder as safe.
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_dir("devtls"))


def control_socket_path() -> Path:
    return runtime_dir() / CONTROL_SOCKET


def pid_file() -> Path:
    return runtime_dir() / PID_FILE


def log_file() -> Path:
    return runtime_dir() / LOG_FILE


def ensure_runtime_dir() -> Path:
    """The runtime folder, created 0700 if missing; refused unless it and its parent are yours."""
    folder = runtime_dir()
    for directory in (folder.parent, folder):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise DevtlsError(
                f"cannot create the runtime folder {directory}: {exc.strerror}",
                "set XDG_RUNTIME_DIR to a folder of your own",
            ) from None
    check_private_dir(folder.parent, parent=True)
    check_private_dir(folder)
    if len(str(folder / CONTROL_SOCKET)) > MAX_SOCKET_PATH:
        raise DevtlsError(
            f"the runtime folder path {folder} is too long for a Unix socket",
            "set XDG_RUNTIME_DIR to a shorter path",
        )
    return folder


def check_private_dir(directory: Path, *, parent: bool = False) -> None:
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise DevtlsError(f"{directory} is not a folder", "remove it, or set XDG_RUNTIME_DIR")
    if info.st_uid != os.geteuid() and not (parent and info.st_uid == 0):
        raise DevtlsError(
            f"the runtime folder {directory} belongs to uid {info.st_uid}, not to you",
            "set XDG_RUNTIME_DIR to a folder of your own",
        )
    mode = stat.S_IMODE(info.st_mode)
    if parent:
        # /run/user/UID is 0700 already; a shared parent must at least keep others from
        # renaming our folder (the sticky bit of /tmp does that).
        if mode & 0o002 and not mode & stat.S_ISVTX:
            raise DevtlsError(
                f"{directory} is writable by others (mode {mode:04o})",
                "set XDG_RUNTIME_DIR to a folder of your own",
            )
    elif mode & 0o077:
        os.chmod(directory, 0o700)
