"""Paths that are no ordinary file, for tests of code that reads a path it was given."""

from __future__ import annotations

import os
from pathlib import Path


def odd_paths(folder: Path) -> dict[str, str]:
    """A FIFO, a device, a folder, a dangling link, binary garbage and a sparse 1 GiB file."""
    folder.mkdir(exist_ok=True)
    os.mkfifo(folder / "fifo")
    (folder / "folder").mkdir()
    (folder / "dangling").symlink_to(folder / "gone")
    (folder / "garbage").write_bytes(bytes(range(256)) * 64)
    with (folder / "huge").open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: a 1 GiB file that takes no room
    return {
        "fifo": str(folder / "fifo"),
        "device": "/dev/zero",
        "folder": str(folder / "folder"),
        "dangling": str(folder / "dangling"),
        "garbage": str(folder / "garbage"),
        "huge": str(folder / "huge"),
    }
