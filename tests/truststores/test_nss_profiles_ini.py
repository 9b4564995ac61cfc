"""Firefox's profiles.ini as it may be found: in another encoding, huge, not a file at all.
Each still lists the profiles it can, and nothing stops install, status or doctor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtls.truststores.nss import NSSStore


def profile(home: Path, *parts: str) -> Path:
    folder = home.joinpath(*parts)
    folder.mkdir(parents=True)
    (folder / "cert9.db").write_bytes(b"")  # databases() looks for the file only
    return folder


def test_a_profiles_ini_that_is_not_utf8_still_lists_its_profiles(tmp_path: Path) -> None:
    # Firefox writes the bytes of a path as they are; on Linux they need not be UTF-8.
    firefox = tmp_path / ".mozilla" / "firefox"
    relative = profile(tmp_path, ".mozilla", "firefox", "caf\udce9.default")  # b"caf\xe9"
    elsewhere = profile(tmp_path, "elsewhere", "other")
    (firefox / "profiles.ini").write_bytes(
        b"[Profile0]\nName=caf\xe9\nIsRelative=1\nPath=caf\xe9.default\n\n"
        b"[Profile1]\nName=other\nIsRelative=0\nPath=" + os.fsencode(elsewhere) + b"\n"
    )
    assert NSSStore(home=tmp_path).databases() == [f"sql:{relative}", f"sql:{elsewhere}"]


@pytest.mark.parametrize("kind", ["fifo", "folder", "huge"])
def test_a_profiles_ini_that_is_no_ini_file_is_passed_over(tmp_path: Path, kind: str) -> None:
    firefox = tmp_path / ".mozilla" / "firefox"
    found = profile(tmp_path, ".mozilla", "firefox", "Profiles", "x.default")
    ini = firefox / "profiles.ini"
    if kind == "fifo":
        os.mkfifo(ini)
    elif kind == "folder":
        ini.mkdir()
    else:
        with ini.open("wb") as handle:
            handle.truncate(1 << 30)  # sparse: a 1 GiB file that takes no room
    assert NSSStore(home=tmp_path).databases() == [f"sql:{found}"]
