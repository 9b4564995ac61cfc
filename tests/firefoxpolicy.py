"""Firefox's system policy files, which any test that installs the nss store as root writes."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from devtls.truststores.firefox_policy_linux import DISTRIBUTION_DIRS


def policy_paths() -> list[Path]:
    return [Path("/etc/firefox"), *(d / "policies.json" for d in DISTRIBUTION_DIRS)]


def policy_snapshot() -> dict[str, tuple[int, bytes | None]]:
    """Every file and folder under the policy locations, with its mode and content."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for top in policy_paths():
        if not top.exists():
            continue
        for path in [top, *(top.rglob("*") if top.is_dir() else [])]:
            info = path.lstat()
            content = None if path.is_dir() else path.read_bytes()
            found[str(path)] = (info.st_mode, content)
    return found


def kept_policy_files() -> Iterator[dict[str, tuple[int, bytes | None]]]:
    """Firefox's system policy files as they were; put back exactly, whatever the test did.

    Every test: as root, an `install --store nss` writes the system policy too."""
    before = policy_snapshot()
    yield before
    after = policy_snapshot()
    for name in sorted(set(after) - set(before), key=len, reverse=True):
        path = Path(name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for name, (mode, content) in before.items():
        path = Path(name)
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        elif after.get(name) != (mode, content):
            path.write_bytes(content)
        os.chmod(path, stat.S_IMODE(mode))
    assert policy_snapshot() == before
