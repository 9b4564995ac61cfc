"""The Firefox enterprise policy on Linux: ``policies.json`` and a copy of the root beside it.

Firefox reads ``/etc/firefox/policies/policies.json`` (every package: Debian's firefox-esr,
Mozilla's builds, the snap) and only when that file is missing its installation's
``distribution/policies.json``. So devtls merges into the ``/etc`` file when it exists, else
into the distribution files an administrator already wrote (creating the ``/etc`` file would
switch those off), and creates the ``/etc`` file only when there is neither.

The root copy lives in ``/etc/firefox/policies`` too: the snap's confinement lets Firefox read
that folder, and root's CAROOT is unreadable to a Firefox run by anyone else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtls import _files
from devtls.ca import RootCert
from devtls.errors import TrustStoreError
from devtls.truststores.policies import (
    RECORD_FILE,
    Record,
    cert_file_name,
    diff,
    holds_root,
    install_list,
    json_text,
    make_dirs,
    remove_empty_dirs,
    with_entry,
    without_entry,
    write_root_copy,
)

SYSTEM_POLICIES = Path("/etc/firefox/policies")
POLICY_FILE = "policies.json"
# Installation folders whose distribution/policies.json Firefox reads when the /etc file is absent.
DISTRIBUTION_DIRS = (
    Path("/usr/lib/firefox-esr/distribution"),  # Debian's firefox-esr
    Path("/usr/lib/firefox/distribution"),  # Debian/Ubuntu firefox, Arch
    Path("/usr/lib64/firefox/distribution"),  # Fedora, openSUSE
    Path("/opt/firefox/distribution"),  # Mozilla's tarball, where people put it
)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


class LinuxFirefoxPolicy:
    def __init__(self, root: Path = Path("/"), is_admin: Callable[[], bool] = _is_root) -> None:
        self.root = root  # tests may point it at a copy of the file system layout
        self.is_admin = is_admin

    def _path(self, path: Path) -> Path:
        return self.root / path.relative_to("/")

    def _real(self, path: Path) -> str:
        """The path as Firefox sees it (without the tests' root)."""
        return "/" + str(path.relative_to(self.root))

    def system_file(self) -> Path:
        return self._path(SYSTEM_POLICIES / POLICY_FILE)

    def distribution_files(self) -> list[Path]:
        candidates = (self._path(d / POLICY_FILE) for d in DISTRIBUTION_DIRS)
        return [p for p in candidates if p.is_file()]

    def read_files(self) -> list[Path]:
        """The policy files Firefox reads now (none when there is none)."""
        system = self.system_file()
        return [system] if system.is_file() else self.distribution_files()

    def cert_copy(self, ca: RootCert) -> Path:
        return self._path(SYSTEM_POLICIES / cert_file_name(ca))

    def record(self) -> Record:
        return Record(self._path(SYSTEM_POLICIES / RECORD_FILE))

    def location(self) -> str:
        return ", ".join(str(p) for p in (self.read_files() or [self.system_file()]))

    def has_rights(self) -> bool:
        return self.is_admin()

    def _entry(self, ca: RootCert) -> str:
        return str(SYSTEM_POLICIES / cert_file_name(ca))

    def _load(self, path: Path) -> tuple[str | None, dict[str, Any]]:
        """The file's text (None when absent) and its ``policies`` object."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, {"policies": {}}
        except OSError as exc:
            raise TrustStoreError(f"cannot read {path}: {exc.strerror}") from None
        try:
            document = json.loads(text)
        except ValueError:
            raise TrustStoreError(
                f"{path} is not valid JSON", "fix or remove it, then run install again"
            ) from None
        if not isinstance(document, dict) or not isinstance(document.get("policies", {}), dict):
            raise TrustStoreError(f"{path} has no policies object", "fix or remove it")
        document.setdefault("policies", {})
        return text, document

    def _holds_entry(self, path: Path, ca: RootCert) -> bool:
        _, document = self._load(path)
        return self._entry(ca) in install_list(document["policies"], str(path))

    def is_installed(self, ca: RootCert) -> bool:
        files = self.read_files()
        return (
            bool(files)
            and holds_root(self.cert_copy(ca), ca)
            and all(self._holds_entry(p, ca) for p in files)
        )

    def _changes(self, ca: RootCert) -> list[tuple[Path, str | None, str]]:
        changes = []
        for path in self.read_files() or [self.system_file()]:
            before, document = self._load(path)
            policies, _ = with_entry(
                document["policies"], self._entry(ca), enterprise_roots=False, where=str(path)
            )
            after = json_text({**document, "policies": policies})
            if policies != document["policies"] or before is None:
                changes.append((path, before, after))
        return changes

    def plan_install(self, ca: RootCert) -> list[str]:
        if self.is_installed(ca):
            return []
        steps = []
        if not holds_root(self.cert_copy(ca), ca):
            steps.append(f"write {self.cert_copy(ca)} (the root, PEM, 0644; never the key)")
        for path, before, after in self._changes(ca):
            steps.append(f"{'create' if before is None else 'change'} {path}:")
            steps += [f"  {line}" for line in diff(path, before, after)]
        return steps

    def install(self, ca: RootCert) -> None:
        if self.is_installed(ca):
            return
        changes = self._changes(ca)  # read and checked before anything is written
        record = self.record()
        created = make_dirs(self.cert_copy(ca).parent)
        record.note("created", [self._real(p) for p in created])
        write_root_copy(self.cert_copy(ca), ca)
        for path, before, after in changes:
            if before is None:
                record.note("created", [self._real(path)])
                make_dirs(path.parent)
                _files.write_atomic(path, after.encode(), _files.PUBLIC_MODE)
            else:
                _files.replace_keeping_metadata(path, after.encode())

    def _removals(self, ca: RootCert) -> list[tuple[Path, str, str | None]]:
        """Each policy file naming our root: its text now and after (None: devtls deletes it)."""
        record = self.record()
        removals = []
        candidates = [self.system_file(), *self.distribution_files()]
        for path in dict.fromkeys(candidates):
            if not path.is_file() or not self._holds_entry(path, ca):
                continue
            before, document = self._load(path)
            assert before is not None
            policies = without_entry(
                document["policies"], self._entry(ca), added=[], where=str(path)
            )
            rest = {**document, "policies": policies}
            ours = record.has("created", self._real(path))
            # A file devtls created goes once nothing else is in it.
            after = None if ours and rest == {"policies": {}} else json_text(rest)
            removals.append((path, before, after))
        return removals

    def plan_uninstall(self, ca: RootCert) -> list[str]:
        steps = []
        for path, before, after in self._removals(ca):
            steps.append(f"{'remove' if after is None else 'change'} {path}:")
            steps += [f"  {line}" for line in diff(path, before, after)]
        if self.cert_copy(ca).exists():
            steps.append(f"remove {self.cert_copy(ca)}")
        return steps

    def uninstall(self, ca: RootCert) -> None:
        record = self.record()
        for path, _, after in self._removals(ca):
            if after is None:
                path.unlink()
                record.forget("created", [self._real(path)])
            else:
                _files.replace_keeping_metadata(path, after.encode())
        self.cert_copy(ca).unlink(missing_ok=True)
        # Folders devtls made go when nothing else is in them (the record is in one of them).
        folders = [p for p in record.load()["created"] if not self._path(Path(p)).is_file()]
        record.forget("created", folders)
        removed = remove_empty_dirs([self._path(Path(p)) for p in folders])
        record.note("created", [p for p in folders if self._path(Path(p)) not in removed])
