"""Atomic file writes with explicit modes, and an inter-process lock on a folder.

A reader never sees a half-written file: data goes to a temporary file in the
same folder, is flushed to disk, and is then renamed over the target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
PRIVATE_DIR_MODE = 0o700
# A PEM root certificate or key is a few KiB (an RSA-4096 key is 3.3 KiB); a file much bigger
# is not one, and a FIFO or a device would never end. The same bound as for any secret read.
MAX_SECRET_FILE_BYTES = 64 * 1024


class UnsafeFileError(Exception):
    """A file or folder that must not be trusted, with what to run about it.

    Raised by the readers below; callers turn it into their own DevtlsError kind.
    """

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode``, replacing it in one step."""
    directory = path.parent
    tmp = _stage(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


# The SELinux label of a system file: a new file gets its folder's default label instead
# (etc_t rather than net_conf_t for /etc/hosts), which confined services may not read.
_SELINUX_LABEL = "security.selinux"


def replace_keeping_metadata(path: Path, data: bytes) -> None:
    """Replace the existing file ``path`` in one step, keeping its mode, owner and SELinux label.

    For a system file such as /etc/hosts. A file that is a mount point of its own (a
    container runtime bind-mounts /etc/hosts) cannot be renamed over; it is rewritten in
    place instead, as those runtimes do themselves.
    """
    info = os.stat(path)
    tmp = _stage(path, data, stat.S_IMODE(info.st_mode))
    try:
        if os.name == "posix" and (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(tmp, info.st_uid, info.st_gid)
            os.chmod(tmp, stat.S_IMODE(info.st_mode))  # chown may clear set-id bits
        _copy_label(path, tmp)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV):
                raise
            _rewrite_in_place(path, data)
            tmp.unlink(missing_ok=True)
            return
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _copy_label(source: Path, target: Path) -> None:
    if not hasattr(os, "getxattr"):  # pragma: no cover - not Linux
        return
    try:
        label = os.getxattr(source, _SELINUX_LABEL)
    except OSError:  # no label (no SELinux), or extended attributes unsupported
        return
    os.setxattr(target, _SELINUX_LABEL, label)


def _rewrite_in_place(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        _write_fd(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_pair(
    first: tuple[Path, bytes, int], second: tuple[Path, bytes, int], *, overwrite: bool = True
) -> None:
    """Write two files that belong together (a key and its certificate): both, or neither.

    Both are fully written and flushed to temporary files beside their targets before either
    is renamed into place, so a full disk or any other write error leaves nothing behind. If
    the second rename fails, the first one is undone (a file it replaced is put back).
    With ``overwrite=False`` an existing target is never replaced: FileExistsError instead.
    """
    staged: list[tuple[Path, Path]] = []
    placed: list[tuple[Path, Path | None]] = []  # target, and the old file kept aside for it
    try:
        for path, data, mode in (first, second):
            staged.append((_stage(path, data, mode), path))
        for tmp, path in staged:
            placed.append((path, _publish(tmp, path, overwrite=overwrite)))
    except BaseException:
        for path, backup in reversed(placed):
            if backup is not None:
                with contextlib.suppress(OSError):
                    os.replace(backup, path)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        raise
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    for _, backup in placed:
        if backup is not None:
            backup.unlink(missing_ok=True)
    _fsync_dir(first[0].parent)
    if second[0].parent != first[0].parent:
        _fsync_dir(second[0].parent)


def _stage(path: Path, data: bytes, mode: int) -> Path:
    """``data`` in a new temporary file beside ``path``, on disk, with ``mode``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates the file 0600, so a secret is never readable by others, not even briefly.
        _write_fd(fd, data)
        os.fsync(fd)
        os.chmod(tmp, mode)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _publish(tmp: Path, path: Path, *, overwrite: bool) -> Path | None:
    """Move ``tmp`` to ``path``; return where the file it replaced was kept, if any."""
    if not overwrite:
        os.link(tmp, path)  # fails with FileExistsError instead of replacing
        return None
    backup: Path | None = None
    if path.exists():
        backup = path.with_name(f".{path.name}.{os.getpid()}.old")
        try:
            os.link(path, backup)
        except OSError:  # no hard links here: the old file cannot be put back
            backup = None
    try:
        os.replace(tmp, path)
    except BaseException:
        if backup is not None:
            backup.unlink(missing_ok=True)
        raise
    return backup


def fsync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable (they live in the folder, not the files)."""
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows has no directory fsync
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked_dir(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` across processes.

    The lock is taken on the folder itself, so no lock file is left beside the
    files another tool (mkcert) expects to find there alone.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: creation races are not guarded there
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) if needed; a folder devtls creates is 0700."""
    if directory.is_dir():
        return
    directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask; the folder of a CA key must not be.
    os.chmod(directory, PRIVATE_DIR_MODE)


# -- reading files that hold or guard secrets, as ssh's StrictModes ------------------------


def trusted_owner(uid: int) -> bool:
    """Only you and root may own the CA folder and its files (ssh's StrictModes rule)."""
    return uid in (os.geteuid(), 0)


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def check_owner_and_mode(info: os.stat_result, path: Path, *, fix_mode: str) -> None:
    """Refuse ``path`` if someone other than you or root owns it, or others may write to it.

    A folder with the sticky bit (like /tmp, mode 1777) is refused too: others still create
    files in it, so a planted ``rootCA.pem`` and ``rootCA-key.pem`` would be used as the CA.
    ``fix_mode`` is the mode suggested to chmod.
    """
    if os.name != "posix":  # pragma: no cover - Windows has ACLs, not these bits
        return
    me = _user_name(os.geteuid())
    if not trusted_owner(info.st_uid):
        recursive = "-R " if stat.S_ISDIR(info.st_mode) else ""
        raise UnsafeFileError(
            f"{path} belongs to {_user_name(info.st_uid)}, not to you ({me}) or root",
            f"if it is yours, run: sudo chown {recursive}{me} {path}; "
            "else use a CAROOT of your own",
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        who = "others" if mode & 0o002 else "its group"
        if stat.S_ISDIR(info.st_mode) and mode & stat.S_ISVTX:
            raise UnsafeFileError(
                f"{path} is a shared folder writable by {who} (mode {mode:04o}), "
                "where anyone can plant a CA",
                f"use a CAROOT of your own; if this folder is yours, run: chmod {fix_mode} {path}",
            )
        raise UnsafeFileError(
            f"{path} is writable by {who} (mode {mode:04o})", f"run: chmod {fix_mode} {path}"
        )


def open_checked_dir(directory: Path) -> int | None:
    """Open ``directory`` (a symlink to it is followed) after checking its owner and mode.

    The descriptor anchors the reads below to the folder checked, even if it is renamed or
    a path component is swapped meanwhile. None where descriptors of folders do not exist.
    """
    if os.name != "posix":  # pragma: no cover - Windows
        return None
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        check_owner_and_mode(os.fstat(fd), directory, fix_mode="go-w")
    except BaseException:
        os.close(fd)
        raise
    return fd


def file_kind(mode: int) -> str:
    """What a path that is no regular file is, for a message: "a FIFO", "a device"..."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_checked_file(
    directory: Path,
    name: str,
    dir_fd: int | None,
    *,
    fix_mode: str,
    follow_symlinks: bool,
    limit: int = MAX_SECRET_FILE_BYTES,
) -> tuple[bytes, int]:
    """The bytes of the regular file ``directory/name`` (at most ``limit``) and its mode.

    Opened without blocking, so a FIFO or a device is refused at once instead of hanging;
    checked on the open descriptor (owner, mode, kind, size), so what is checked is what is
    read. OSError for a file that cannot be opened; UnsafeFileError for one that must not be.
    """
    path = directory / name
    if os.name != "posix":  # pragma: no cover - Windows: no O_NONBLOCK / O_NOFOLLOW
        data = path.read_bytes()
        if len(data) > limit:
            raise UnsafeFileError(f"{path} is too big", "restore the file")
        return data, 0o600
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(name, flags, dir_fd=dir_fd) if dir_fd is not None else os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise UnsafeFileError(
                f"{path} is a symbolic link, and devtls reads a CA key only from a file",
                f"replace the link by the file it points to (cp --remove-destination "
                f"$(readlink -f {path}) {path}), or point CAROOT at the folder that holds it",
            ) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(
                f"cannot read {path}: it is {file_kind(info.st_mode)}, not a regular file",
                "replace it by the file itself, or move the folder away to start a new CA",
            )
        check_owner_and_mode(info, path, fix_mode=fix_mode)
        too_big = UnsafeFileError(
            f"{path} is larger than {limit // 1024} KiB, too large to be a PEM certificate or key",
            "restore it from a backup, or move the folder away to start a new CA",
        )
        if info.st_size > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew while being read
            raise too_big
        return b"".join(chunks), stat.S_IMODE(info.st_mode)
    finally:
        os.close(fd)


class NotRegularFileError(Exception):
    """A path that names a FIFO, a device, a socket or a folder where a file was expected."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.path = path
        self.kind = kind


def read_regular_file(path: Path, limit: int) -> bytes:
    """The first ``limit + 1`` bytes at most of the regular file ``path`` (so that more than
    ``limit`` says it is larger), for files named by a variable or a setting.

    Opened without blocking and checked on the descriptor: a FIFO would wait for a writer
    forever and a device would never end, so either raises NotRegularFileError at once.
    OSError when it cannot be opened or read.
    """
    if os.name != "posix":  # pragma: no cover - Windows: no FIFOs to block on
        if not path.is_file():
            raise NotRegularFileError(path, "a directory" if path.is_dir() else "not a file")
        with path.open("rb") as handle:
            return handle.read(limit + 1)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(path, file_kind(info.st_mode))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
