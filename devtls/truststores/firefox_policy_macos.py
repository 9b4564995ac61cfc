"""The Firefox enterprise policy on macOS: the ``org.mozilla.firefox`` preferences domain.

Firefox reads its policies from ``/Library/Preferences/org.mozilla.firefox`` when that domain
says ``EnterprisePoliciesEnabled``; each top-level key is a policy. The domain goes through
``defaults export``/``defaults import`` (cfprefsd caches preferences, so the plist file itself
must not be written behind its back). ``ImportEnterpriseRoots`` makes Firefox read the roots the
keychain trusts (the system store); ``Certificates.Install`` names a copy of the root in
``/Library/Application Support/Mozilla/Certificates``, a folder Firefox searches.

Untested on real machines so far: the commands are checked against a recorded runner.
"""

from __future__ import annotations

import os
import plistlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtls.ca import RootCert
from devtls.errors import TrustStoreError
from devtls.truststores.base import Runner, describe, run_checked, run_command
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

DOMAIN = "/Library/Preferences/org.mozilla.firefox"
CERTIFICATES_DIR = Path("/Library/Application Support/Mozilla/Certificates")
ENABLED = "EnterprisePoliciesEnabled"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


class MacOSFirefoxPolicy:
    def __init__(
        self,
        runner: Runner = run_command,
        root: Path = Path("/"),
        is_admin: Callable[[], bool] = _is_root,
    ) -> None:
        self.runner = runner
        self.root = root  # tests point the root copy and the record at a temporary folder
        self.is_admin = is_admin

    def location(self) -> str:
        return DOMAIN

    def has_rights(self) -> bool:
        return self.is_admin()

    def _folder(self) -> Path:
        return self.root / CERTIFICATES_DIR.relative_to("/")

    def cert_copy(self, ca: RootCert) -> Path:
        return self._folder() / cert_file_name(ca)

    def _entry(self, ca: RootCert) -> str:
        return str(CERTIFICATES_DIR / cert_file_name(ca))

    def record(self) -> Record:
        return Record(self._folder() / RECORD_FILE)

    def _read(self) -> dict[str, Any] | None:
        """The domain's keys, or None when it does not exist."""
        code, output = self.runner(["defaults", "export", DOMAIN, "-"], None)
        if code != 0:
            return None
        try:
            domain = plistlib.loads(output.encode())
        except (plistlib.InvalidFileException, ValueError):
            raise TrustStoreError(f"cannot read the preferences {DOMAIN}") from None
        if not isinstance(domain, dict):
            raise TrustStoreError(f"the preferences {DOMAIN} are not a dictionary")
        return domain

    def is_installed(self, ca: RootCert) -> bool:
        domain = self._read()
        if domain is None or domain.get(ENABLED) is not True:
            return False
        certificates = domain.get("Certificates", {})
        return (
            self._entry(ca) in install_list(domain, DOMAIN)
            and isinstance(certificates, dict)
            and certificates.get("ImportEnterpriseRoots") is True
            and holds_root(self.cert_copy(ca), ca)
        )

    def _with(self, ca: RootCert) -> tuple[dict[str, Any] | None, dict[str, Any], list[str]]:
        before = self._read()
        after, added = with_entry(
            before or {}, self._entry(ca), enterprise_roots=True, where=DOMAIN
        )
        if after.get(ENABLED) is not True:
            if ENABLED not in after:
                added.append(ENABLED)
            after[ENABLED] = True
        return before, after, added

    def _import(self, domain: dict[str, Any]) -> list[str]:
        return ["defaults", "import", DOMAIN, "-"]

    def plan_install(self, ca: RootCert) -> list[str]:
        if self.is_installed(ca):
            return []
        before, after, _ = self._with(ca)
        steps = [f"write {self.cert_copy(ca)} (the root, PEM, 0644; never the key)"]
        steps.append(f"{describe(self._import(after))} (the domain, as JSON here):")
        text_before = json_text(before) if before is not None else None
        return steps + [f"  {line}" for line in diff(DOMAIN, text_before, json_text(after))]

    def install(self, ca: RootCert) -> None:
        if self.is_installed(ca):
            return
        before, after, added = self._with(ca)
        record = self.record()
        created = make_dirs(self._folder())
        record.note("created", [str(p) for p in created])
        if before is None:
            record.note("created", [DOMAIN])
        record.note("added", added)
        write_root_copy(self.cert_copy(ca), ca)
        self._write(after)

    def _write(self, domain: dict[str, Any]) -> None:
        code, output = self.runner(self._import(domain), plistlib.dumps(domain))
        if code != 0:
            raise TrustStoreError(f"defaults import {DOMAIN} failed: {output.strip()}")

    def _without(self, ca: RootCert) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """The domain now and after (None: devtls deletes it), or None when it names no root."""
        before = self._read()
        if before is None or self._entry(ca) not in install_list(before, DOMAIN):
            return None
        record = self.record().load()
        ours = str(CERTIFICATES_DIR / "devtls_")
        last = not any(
            isinstance(e, str) and e.startswith(ours) and e != self._entry(ca)
            for e in install_list(before, DOMAIN)
        )
        # The last devtls root out: the keys devtls added go too.
        added = record["added"] if last else []
        after = without_entry(before, self._entry(ca), added=added, where=DOMAIN)
        if last and ENABLED in added and set(after) == {ENABLED}:
            after.pop(ENABLED)
        if last and DOMAIN in record["created"] and not after:
            return before, None
        return before, after

    def plan_uninstall(self, ca: RootCert) -> list[str]:
        change = self._without(ca)
        steps = []
        if change is not None:
            before, after = change
            if after is None:
                steps.append(describe(["defaults", "delete", DOMAIN]))
            else:
                steps.append(f"{describe(self._import(after))} (the domain, as JSON here):")
                steps += [f"  {line}" for line in diff(DOMAIN, json_text(before), json_text(after))]
        if self.cert_copy(ca).exists():
            steps.append(f"remove {self.cert_copy(ca)}")
        return steps

    def uninstall(self, ca: RootCert) -> None:
        change = self._without(ca)
        record = self.record()
        if change is not None:
            _, after = change
            if after is None:
                run_checked(self.runner, ["defaults", "delete", DOMAIN])
                record.forget("created", [DOMAIN])
            else:
                self._write(after)
            gone = [key for key in record.load()["added"] if not _has_key(after or {}, key)]
            record.forget("added", gone)
        self.cert_copy(ca).unlink(missing_ok=True)
        folders = [p for p in record.load()["created"] if p != DOMAIN]
        record.forget("created", folders)
        removed = remove_empty_dirs([Path(p) for p in folders])
        record.note("created", [p for p in folders if Path(p) not in removed])


def _has_key(domain: dict[str, Any], key: str) -> bool:
    certificates = domain.get("Certificates", {})
    return key in domain or (isinstance(certificates, dict) and key in certificates)
