"""Firefox enterprise policies: what every platform's policy shares.

A Firefox profile created after ``install`` has a fresh NSS database without our root; the
``Certificates.Install`` policy makes Firefox import a root file into every profile at start,
and ``ImportEnterpriseRoots`` (macOS, Windows) makes it read the OS store too. Policies are
system-wide and belong to the administrator: devtls adds one entry, keeps every other key, and
remembers in a small record what it created, so ``uninstall`` takes away exactly that.
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any, Protocol

from devtls import _files
from devtls.ca import RootCert
from devtls.errors import TrustStoreError
from devtls.truststores.base import entry_name

RECORD_FILE = "devtls-created.json"
ENTERPRISE_ROOTS = "ImportEnterpriseRoots"


class FirefoxPolicy(Protocol):
    """One platform's policy; every method but ``has_rights`` may assume the rights."""

    def location(self) -> str: ...
    def has_rights(self) -> bool: ...
    def is_installed(self, ca: RootCert) -> bool: ...
    def plan_install(self, ca: RootCert) -> list[str]: ...
    def install(self, ca: RootCert) -> None: ...
    def plan_uninstall(self, ca: RootCert) -> list[str]: ...
    def uninstall(self, ca: RootCert) -> None: ...


def cert_file_name(ca: RootCert) -> str:
    return f"{entry_name(ca)}.pem"


def install_list(policies: dict[str, Any], where: str) -> list[Any]:
    """``policies.Certificates.Install`` (empty when absent); anything else there is refused."""
    certificates = policies.get("Certificates", {})
    if not isinstance(certificates, dict):
        raise TrustStoreError(f"{where}: Certificates is not an object", "fix the policy file")
    entries = certificates.get("Install", [])
    if not isinstance(entries, list):
        raise TrustStoreError(f"{where}: Certificates.Install is not a list", "fix the policy file")
    return entries


def with_entry(
    policies: dict[str, Any], cert: str, *, enterprise_roots: bool, where: str
) -> tuple[dict[str, Any], list[str]]:
    """``policies`` with ``cert`` in Certificates.Install; and the keys this added."""
    result = copy.deepcopy(policies)
    entries = install_list(result, where)
    certificates = result.setdefault("Certificates", {})
    added: list[str] = []
    if cert not in entries:
        certificates["Install"] = [*entries, cert]
    if enterprise_roots and ENTERPRISE_ROOTS not in certificates:
        certificates[ENTERPRISE_ROOTS] = True
        added.append(ENTERPRISE_ROOTS)
    return result, added


def without_entry(
    policies: dict[str, Any], cert: str, *, added: list[str], where: str
) -> dict[str, Any]:
    """``policies`` without ``cert`` and without the keys devtls added; empty parents go too."""
    result = copy.deepcopy(policies)
    entries = install_list(result, where)
    if "Certificates" not in result:
        return result
    certificates = result["Certificates"]
    remaining = [e for e in entries if e != cert]
    if remaining:
        certificates["Install"] = remaining
    else:
        certificates.pop("Install", None)
    for key in added:
        if key == ENTERPRISE_ROOTS and certificates.get(key) is True:
            certificates.pop(key)
    if not certificates:
        result.pop("Certificates")
    return result


def json_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def diff(path: Path | str, before: str | None, after: str | None) -> list[str]:
    """The change to a text file, as unified diff lines (``/dev/null`` for a new or gone file)."""
    name = str(path)
    return list(
        difflib.unified_diff(
            (before or "").splitlines(),
            (after or "").splitlines(),
            name if before is not None else "/dev/null",
            name if after is not None else "/dev/null",
            lineterm="",
        )
    )


class Record:
    """What devtls created (files, folders, keys), kept beside the root copies it made.

    A JSON object ``{"created": [...], "added": [...]}``. Entries are added by install and
    taken off by uninstall; the file goes with its last entry.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"created": [], "added": []}
        if not isinstance(data, dict):
            return {"created": [], "added": []}
        return {
            key: [str(v) for v in data.get(key, []) if isinstance(v, str)]
            for key in ("created", "added")
        }

    def has(self, kind: str, item: str) -> bool:
        return item in self.load()[kind]

    def note(self, kind: str, items: list[str]) -> None:
        if not items:
            return
        data = self.load()
        data[kind] = [*data[kind], *(i for i in items if i not in data[kind])]
        self._save(data)

    def forget(self, kind: str, items: list[str]) -> None:
        data = self.load()
        if not any(i in data[kind] for i in items):
            return
        data[kind] = [i for i in data[kind] if i not in items]
        self._save(data)

    def _save(self, data: dict[str, list[str]]) -> None:
        if not data["created"] and not data["added"]:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _files.write_atomic(self.path, json_text(dict(data)).encode(), _files.PUBLIC_MODE)


def make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents (0755); the ones created, outermost first."""
    missing: list[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir(mode=0o755)
    return list(reversed(missing))


def remove_empty_dirs(folders: list[Path]) -> list[Path]:
    """Remove those of ``folders`` that are empty, innermost first; the ones removed."""
    removed: list[Path] = []
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            continue
        removed.append(folder)
    return removed


def write_root_copy(path: Path, ca: RootCert) -> None:
    """The root certificate (never the key) where every user's Firefox can read it."""
    _files.write_atomic(path, ca.cert_pem(), _files.PUBLIC_MODE)


def holds_root(path: Path, ca: RootCert) -> bool:
    try:
        return path.read_bytes().strip() == ca.cert_pem().strip()
    except OSError:
        return False
