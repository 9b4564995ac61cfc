"""The Firefox enterprise policy on Windows: ``HKLM\\SOFTWARE\\Policies\\Mozilla\\Firefox``.

``Certificates\\ImportEnterpriseRoots`` (a DWORD 1) makes Firefox read the Windows root stores,
where the system store puts our root; ``Certificates\\Install`` holds numbered values naming
root files to import, here a copy of the root under ``%ProgramData%\\devtls\\firefox`` (a
folder every user can read). Keys and values go through ``reg``; devtls records which ones it
created, so ``uninstall`` takes away those and nothing else.

Untested on real machines so far: the commands are checked against a recorded runner.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path, PureWindowsPath

from devtls.ca import RootCert
from devtls.truststores.base import Runner, describe, run_checked, run_command
from devtls.truststores.policies import (
    ENTERPRISE_ROOTS,
    RECORD_FILE,
    Record,
    cert_file_name,
    holds_root,
    make_dirs,
    remove_empty_dirs,
    write_root_copy,
)

MOZILLA = r"HKLM\SOFTWARE\Policies\Mozilla"
FIREFOX = MOZILLA + r"\Firefox"
CERTIFICATES = FIREFOX + r"\Certificates"
INSTALL = CERTIFICATES + r"\Install"
KEYS = (MOZILLA, FIREFOX, CERTIFICATES, INSTALL)
_VALUE = re.compile(r"^\s+(\S+)\s+(REG_\w+)\s*(.*)$")


def _program_data() -> Path:
    return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "devtls" / "firefox"


class WindowsFirefoxPolicy:
    def __init__(
        self,
        runner: Runner = run_command,
        folder: Path | None = None,
        is_admin: Callable[[], bool] | None = None,
    ) -> None:
        self.runner = runner
        self.folder = folder or _program_data()
        self.is_admin = is_admin or self._elevated

    def _elevated(self) -> bool:
        # `net session` succeeds only in an elevated process: no API binding needed.
        code, _ = self.runner(["net", "session"], None)
        return code == 0

    def location(self) -> str:
        return FIREFOX

    def has_rights(self) -> bool:
        return self.is_admin()

    def cert_copy(self, ca: RootCert) -> Path:
        return self.folder / cert_file_name(ca)

    def _entry(self, ca: RootCert) -> str:
        return str(PureWindowsPath(self.cert_copy(ca)))

    def record(self) -> Record:
        return Record(self.folder / RECORD_FILE)

    def _values(self, key: str) -> dict[str, str] | None:
        """The values of one key (not its subkeys), or None when the key does not exist."""
        code, output = self.runner(["reg", "query", key], None)
        if code != 0:
            return None
        values: dict[str, str] = {}
        for line in output.splitlines():
            match = _VALUE.match(line)
            if match:
                values[match.group(1)] = match.group(3).strip()
        return values

    def _installed_names(self, ca: RootCert) -> list[str]:
        values = self._values(INSTALL) or {}
        return [name for name, data in values.items() if data.lower() == self._entry(ca).lower()]

    def is_installed(self, ca: RootCert) -> bool:
        certificates = self._values(CERTIFICATES) or {}
        return (
            bool(self._installed_names(ca))
            and certificates.get(ENTERPRISE_ROOTS, "").lower() == "0x1"
            and holds_root(self.cert_copy(ca), ca)
        )

    def _install_commands(self, ca: RootCert) -> tuple[list[list[str]], list[str], list[str]]:
        """The reg commands, the keys they create and the values they add."""
        created = [key for key in KEYS if self._values(key) is None]
        commands: list[list[str]] = []
        added: list[str] = []
        if not self._installed_names(ca):
            used = set((self._values(INSTALL) or {}).keys())
            number = next(str(n) for n in range(1, len(used) + 2) if str(n) not in used)
            commands.append(
                ["reg", "add", INSTALL, "/v", number, "/t", "REG_SZ", "/d", self._entry(ca), "/f"]
            )
        certificates = self._values(CERTIFICATES) or {}
        if certificates.get(ENTERPRISE_ROOTS, "").lower() != "0x1":
            if ENTERPRISE_ROOTS not in certificates:
                added.append(ENTERPRISE_ROOTS)
            commands.append(
                ["reg", "add", CERTIFICATES, "/v", ENTERPRISE_ROOTS, "/t", "REG_DWORD",
                 "/d", "1", "/f"]
            )  # fmt: skip
        return commands, created, added

    def plan_install(self, ca: RootCert) -> list[str]:
        if self.is_installed(ca):
            return []
        commands, _, _ = self._install_commands(ca)
        steps = [f"write {self.cert_copy(ca)} (the root, PEM; never the key)"]
        return steps + [describe(command) for command in commands]

    def install(self, ca: RootCert) -> None:
        if self.is_installed(ca):
            return
        commands, created_keys, added = self._install_commands(ca)
        record = self.record()
        created = make_dirs(self.folder)
        record.note("created", [str(p) for p in created] + created_keys)
        record.note("added", added)
        write_root_copy(self.cert_copy(ca), ca)
        for command in commands:
            run_checked(self.runner, command)

    def _uninstall_commands(self, ca: RootCert) -> list[list[str]]:
        names = self._installed_names(ca)
        if not names:
            return []
        commands = [["reg", "delete", INSTALL, "/v", name, "/f"] for name in names]
        others = [
            data for name, data in (self._values(INSTALL) or {}).items()
            if name not in names and PureWindowsPath(data).name.startswith("devtls_")
        ]  # fmt: skip
        if others:
            return commands  # another devtls root still relies on what was added
        record = self.record().load()
        if ENTERPRISE_ROOTS in record["added"]:
            commands.append(["reg", "delete", CERTIFICATES, "/v", ENTERPRISE_ROOTS, "/f"])
        remaining = [name for name in (self._values(INSTALL) or {}) if name not in names]
        certificates = dict(self._values(CERTIFICATES) or {})
        if ENTERPRISE_ROOTS in record["added"]:
            certificates.pop(ENTERPRISE_ROOTS, None)
        # Keys devtls created, innermost first, when nothing else is left in them.
        empty = {INSTALL: not remaining, CERTIFICATES: not certificates}
        deleting: set[str] = set()
        for key in reversed(KEYS):
            values_left = empty[key] if key in empty else not self._values(key)
            if key in record["created"] and values_left and self._subkeys(key) <= deleting:
                commands.append(["reg", "delete", key, "/f"])
                deleting.add(_long(key).upper())
        return commands

    def _subkeys(self, key: str) -> set[str]:
        """The subkeys of ``key`` (all levels), as ``reg query /s`` names them."""
        _, output = self.runner(["reg", "query", key, "/s"], None)
        headers = {line.strip().upper() for line in output.splitlines() if line.startswith("HKEY_")}
        return headers - {_long(key).upper()}

    def plan_uninstall(self, ca: RootCert) -> list[str]:
        steps = [describe(command) for command in self._uninstall_commands(ca)]
        if self.cert_copy(ca).exists():
            steps.append(f"remove {self.cert_copy(ca)}")
        return steps

    def uninstall(self, ca: RootCert) -> None:
        commands = self._uninstall_commands(ca)
        record = self.record()
        for command in commands:
            run_checked(self.runner, command)
            if command[-2] == ENTERPRISE_ROOTS:
                record.forget("added", [ENTERPRISE_ROOTS])
            elif len(command) == 4:  # a whole key
                record.forget("created", [command[2]])
        self.cert_copy(ca).unlink(missing_ok=True)
        folders = [p for p in record.load()["created"] if not p.startswith("HKLM")]
        record.forget("created", folders)
        removed = remove_empty_dirs([Path(p) for p in folders])
        record.note("created", [p for p in folders if Path(p) not in removed])


def _long(key: str) -> str:
    """``reg query`` prints keys with the long hive name."""
    return key.replace("HKLM\\", "HKEY_LOCAL_MACHINE\\", 1)
