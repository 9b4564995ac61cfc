"""The system store under WSL: the Linux distribution's store, plus Windows's.

Under WSL the browsers a developer opens run on Windows and trust the Windows stores, while
curl, Python and Node inside WSL trust the distribution's. Both are "the OS store" to the user,
so both are the ``system`` store here (the store names are fixed: ``system``, ``nss``,
``java``): ``install`` puts the root in the Linux store and in the Windows CurrentUser Root
store, through WSL's interop (``certutil.exe -user``, no administrator needed; Windows asks the
user to confirm a new root in a dialog). The Windows store is read with PowerShell, whose JSON
does not depend on the Windows display language the way certutil's listing does.

Untested on real machines so far: the Windows commands are checked against a recorded runner.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from devtls.ca import RootCert
from devtls.errors import TrustStoreError
from devtls.truststores.base import (
    Availability,
    Runner,
    TrustStore,
    ca_file,
    describe,
    last_line,
    run_checked,
    run_command,
)

# Where Windows's tools are when the Windows PATH is not appended inside WSL
# (appendWindowsPath=false in /etc/wsl.conf); /mnt/c is the default automount root.
WINDOWS_TOOLS = {
    "certutil.exe": "/mnt/c/Windows/System32/certutil.exe",
    "powershell.exe": "/mnt/c/Windows/System32/WindowsPowerShell/v1.0/powershell.exe",
}
# Progress records off: with its output redirected, Windows PowerShell may write them (as
# "#< CLIXML") where the listing is read.
LIST_ROOTS = (
    "$ProgressPreference = 'SilentlyContinue'; "
    "ConvertTo-Json -Compress -InputObject @(Get-ChildItem Cert:\\CurrentUser\\Root | "
    "ForEach-Object { [Convert]::ToBase64String($_.RawData) })"
)
# Subjects of roots made by local-CA tools: another of them in the Windows store is worth naming.
DEVELOPMENT_CA_MARKERS = ("devtls development CA", "mkcert development CA")


@dataclass(frozen=True)
class WindowsRoot:
    subject: str
    fingerprint_sha256: str
    cert: x509.Certificate


def _find_windows_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    fallback = WINDOWS_TOOLS.get(name)
    return fallback if fallback and Path(fallback).exists() else None


class WSLSystemStore:
    name = "system"

    def __init__(
        self,
        linux: TrustStore,
        runner: Runner = run_command,
        find_tool: Callable[[str], str | None] | None = None,
    ) -> None:
        self.linux = linux
        self.runner = runner
        self.find_tool = find_tool or _find_windows_tool

    # -- Windows ------------------------------------------------------------------------------

    def _tool(self, name: str) -> str:
        path = self.find_tool(name)
        if path is None:
            raise TrustStoreError(
                f"{name} is not reachable from WSL",
                "enable WSL interop (interop.enabled in /etc/wsl.conf) and restart WSL",
            )
        return path

    def windows_roots(self) -> list[WindowsRoot]:
        """Every certificate in the Windows CurrentUser Root store."""
        command = [self._tool("powershell.exe"), "-NoProfile", "-NonInteractive", "-Command",
                   LIST_ROOTS]  # fmt: skip
        code, output = self.runner(command, None)
        if code != 0:
            raise TrustStoreError(
                f"reading the Windows Root store failed: {last_line(output, code)}"
            )
        encoded = _json_line(output)
        roots = []
        for item in encoded if isinstance(encoded, list) else [encoded]:
            try:
                cert = x509.load_der_x509_certificate(base64.b64decode(str(item), validate=True))
            except ValueError:
                continue  # not a certificate we can read; not ours either
            digest = cert.fingerprint(hashes.SHA256()).hex().upper()
            roots.append(WindowsRoot(cert.subject.rfc4514_string(), digest, cert))
        return roots

    def windows_holds(self, ca: RootCert) -> bool:
        return any(root.cert == ca.cert for root in self.windows_roots())

    def other_development_roots(self, ca: RootCert) -> list[WindowsRoot]:
        """devtls or mkcert roots in the Windows store that are not this CA."""
        return [
            root
            for root in self.windows_roots()
            if root.cert != ca.cert and any(m in root.subject for m in DEVELOPMENT_CA_MARKERS)
        ]

    def _windows_path(self, path: Path) -> str:
        code, output = self.runner(["wslpath", "-w", str(path)], None)
        if code != 0 or not output.strip():
            raise TrustStoreError(f"wslpath -w {path} failed: {last_line(output, code)}")
        return output.strip().splitlines()[0]

    def _add(self, ca: RootCert) -> list[str]:
        return [self._tool("certutil.exe"), "-user", "-addstore", "Root",
                self._windows_path(ca_file(ca))]  # fmt: skip

    def _remove(self, ca: RootCert) -> list[str]:
        sha1 = ca.cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - Windows's certificate id
        return [self._tool("certutil.exe"), "-user", "-delstore", "Root", sha1]

    def _windows_reachable(self) -> bool:
        return all(self.find_tool(name) for name in WINDOWS_TOOLS)

    # -- the store ---------------------------------------------------------------------------

    def available(self) -> Availability:
        linux = self.linux.available()
        windows = (
            "the Windows CurrentUser Root store"
            if self._windows_reachable()
            else "Windows store unreachable (WSL interop is off)"
        )
        return Availability(linux.available, f"{linux.reason}; {windows}")

    def is_installed(self, ca: RootCert) -> bool:
        if not self.linux.is_installed(ca):
            return False
        return not self._windows_reachable() or self.windows_holds(ca)

    def plan_install(self, ca: RootCert) -> list[str]:
        steps = self.linux.plan_install(ca)
        if self._windows_reachable() and not self.windows_holds(ca):
            steps.append(describe(self._add(ca)) + " (Windows asks to confirm)")
        return steps

    def install(self, ca: RootCert) -> None:
        self.linux.install(ca)
        if self._windows_reachable() and not self.windows_holds(ca):
            run_checked(self.runner, self._add(ca), what="adding the root to the Windows store")

    def plan_uninstall(self, ca: RootCert) -> list[str]:
        steps = self.linux.plan_uninstall(ca)
        if self._windows_reachable() and self.windows_holds(ca):
            steps.append(describe(self._remove(ca)))
        return steps

    def uninstall(self, ca: RootCert) -> None:
        self.linux.uninstall(ca)
        if self._windows_reachable() and self.windows_holds(ca):
            run_checked(self.runner, self._remove(ca), what="removing the root from Windows")

    def other_copies(self, ca: RootCert) -> list[Path]:
        copies: list[Path] = getattr(self.linux, "other_copies", lambda _ca: [])(ca)
        return copies

    def notes(self, ca: RootCert, action: str) -> list[str]:
        if not self._windows_reachable():
            return [
                "the Windows store was left alone: WSL interop is off, so browsers on Windows "
                "will not trust the root (enable interop, then run this again)"
            ]
        if action != "install":
            return []
        try:
            others = self.other_development_roots(ca)
        except TrustStoreError:
            return []
        return [
            f"the Windows store also trusts a different development CA: {root.subject} "
            f"(SHA-256 {root.fingerprint_sha256}); certificates made with it are not this CA's"
            for root in others
        ]

    def status_detail(self, ca: RootCert) -> tuple[bool, str]:
        """Whether Windows trusts this root, and what status says of the Windows store."""
        if not self._windows_reachable():
            return False, "Windows store unreachable (WSL interop is off)"
        try:
            holds = self.windows_holds(ca)
            others = self.other_development_roots(ca)
        except TrustStoreError as exc:
            return False, str(exc)
        detail = "Windows CurrentUser Root store: " + ("trusted" if holds else "not trusted")
        if others:
            named = ", ".join(f"{r.subject} (SHA-256 {r.fingerprint_sha256})" for r in others)
            detail += f"; a different development CA is in the Windows store: {named}"
        return holds, detail


def _json_line(output: str) -> object:
    """The listing: the one line of the output that is JSON (other lines are PowerShell's)."""
    if not output.strip():
        return []
    for line in output.splitlines():
        if line.strip()[:1] in ("[", '"'):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise TrustStoreError("the Windows Root store's listing is not JSON")
