"""Atomic file writes with explicit modes, and an inter-process lock on a folder.

A reader never sees a half-written file: data goes to a temporary file in the
same folder, is flushed to disk, and is then renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
PRIVATE_DIR_MODE = 0o700


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode``, replacing it in one step."""
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates the file 0600, so a secret is never readable by others, not even briefly.
        with os.fdopen(fd, "wb") as tmp_file:
            tmp_file.write(data)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


def write_new_pair(first: tuple[Path, bytes, int], second: tuple[Path, bytes, int]) -> None:
    """Write two files that belong together, keeping the window with only one of them tiny.

    Both are fully written to temporary files before either is renamed into place.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data, mode in (first, second):
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            tmp = Path(tmp_name)
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as tmp_file:
                tmp_file.write(data)
                tmp_file.flush()
                os.fsync(tmp_file.fileno())
            os.chmod(tmp, mode)
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    _fsync_dir(first[0].parent)


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
