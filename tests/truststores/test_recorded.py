"""macOS and Windows stores cannot run here: their exact commands, against a recorded runner."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from devtls.ca import LocalCA
from devtls.errors import TrustStoreError, UsageError
from devtls.truststores import select
from devtls.truststores.system_macos import MacOSSystemStore
from devtls.truststores.system_windows import WindowsSystemStore


class Recorder:
    def __init__(self, answers: dict[str, tuple[int, str]] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = answers or {}

    def __call__(self, args: Sequence[str], stdin: bytes | None) -> tuple[int, str]:
        self.calls.append(list(args))
        for key, answer in self.answers.items():
            if key in " ".join(args):
                return answer
        return 0, ""


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    ca, _ = LocalCA.load_or_create(tmp_path / "ca")
    return ca


def test_macos_install_and_uninstall_commands(ca: LocalCA, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import hashes

    sha1 = ca.cert.fingerprint(hashes.SHA1()).hex().upper()
    keychain = str(tmp_path / "Library" / "Keychains" / "login.keychain-db")
    not_there = Recorder({"find-certificate": (0, "SHA-1 hash: 0000\n")})
    store = MacOSSystemStore(not_there, home=tmp_path)
    store.install(ca)
    assert not_there.calls == [
        ["security", "find-certificate", "-a", "-Z", keychain],
        ["security", "add-trusted-cert", "-r", "trustRoot", "-p", "ssl", "-p", "basic",
         "-k", keychain, str(ca.path / "rootCA.pem")],
    ]  # fmt: skip
    there = Recorder({"find-certificate": (0, f"SHA-1 hash: {sha1}\n")})
    store = MacOSSystemStore(there, home=tmp_path)
    assert store.is_installed(ca)
    store.install(ca)  # nothing to do
    store.uninstall(ca)
    assert there.calls[-2:] == [
        ["security", "remove-trusted-cert", str(ca.path / "rootCA.pem")],
        ["security", "delete-certificate", "-Z", sha1, keychain],
    ]


def test_windows_install_and_uninstall_commands(ca: LocalCA) -> None:
    serial = f"{ca.serial_number:x}"
    absent = Recorder({"-verifystore": (1, "not found")})
    WindowsSystemStore(absent).install(ca)
    assert absent.calls == [
        ["certutil", "-user", "-verifystore", "Root", serial],
        ["certutil", "-user", "-addstore", "Root", str(ca.path / "rootCA.pem")],
    ]
    present = Recorder()
    WindowsSystemStore(present).uninstall(ca)
    assert present.calls[-1] == ["certutil", "-user", "-delstore", "Root", serial]


def test_failures_are_one_line_errors(ca: LocalCA, tmp_path: Path) -> None:
    failing = Recorder({"-verifystore": (1, ""), "-addstore": (5, "Access is denied.\r\n")})
    with pytest.raises(TrustStoreError, match="Access is denied") as excinfo:
        WindowsSystemStore(failing).install(ca)
    assert "\n" not in str(excinfo.value)


def test_store_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRUST_STORES", raising=False)
    assert [s.name for s in select(["java"])] == ["java"]
    monkeypatch.setenv("TRUST_STORES", "nss,java")
    assert [s.name for s in select(())] == ["nss", "java"]
    with pytest.raises(UsageError, match="unknown trust store"):
        select(["keychain"])


def test_linux_failed_update_rolls_back_the_anchor(
    ca: LocalCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing update command must not leave an anchor behind (a half-installed root)."""
    import os

    from devtls.truststores.system_linux import LinuxSystemStore

    monkeypatch.setattr(os, "geteuid", lambda: 0)  # the folder is ours; act as root would

    root = tmp_path / "fs"
    anchors = root / "usr" / "local" / "share" / "ca-certificates"
    anchors.mkdir(parents=True)
    failing = Recorder({"update-ca-certificates": (1, "run-parts: failed\n")})
    store = LinuxSystemStore(failing, root=root)
    assert store.available().available
    with pytest.raises(TrustStoreError, match="run-parts: failed"):
        store.install(ca)
    assert list(anchors.iterdir()) == []
    # The update ran again after the anchor was removed, to undo whatever it had done.
    assert [c[-1] for c in failing.calls].count("update-ca-certificates") == 2


def test_linux_family_detection(tmp_path: Path) -> None:
    from devtls.truststores.system_linux import LinuxSystemStore

    for folder, name in (
        ("etc/pki/ca-trust/source/anchors", "RHEL/Fedora"),
        ("etc/ca-certificates/trust-source/anchors", "Arch"),
        ("usr/share/pki/trust/anchors", "openSUSE"),
    ):
        root = tmp_path / name.replace("/", "-")
        (root / folder).mkdir(parents=True)
        store = LinuxSystemStore(Recorder(), root=root)
        assert store.family is not None
        assert store.family.name == name
    empty = LinuxSystemStore(Recorder(), root=tmp_path / "none")
    assert not empty.available().available
    assert "unknown Linux distribution" in empty.available().reason
