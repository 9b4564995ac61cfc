"""NSS databases of the current user: Chromium/Chrome on Linux, and Firefox everywhere.

Uses ``certutil`` from NSS. Only databases that exist are changed, except that a user with a
Chromium-family browser but no database yet gets one, so a root installed before the
browser's first start is not lost.
"""

from __future__ import annotations

import configparser
import shutil
import sys
from pathlib import Path

from devtls.ca import RootCert
from devtls.truststores.base import (
    Availability,
    Runner,
    ca_file,
    describe,
    mkcert_name,
    run_checked,
    run_command,
)

CHROMIUM_DBS = (
    ".pki/nssdb",
    # Chromium 146 and later read the XDG location.
    ".local/share/pki/nssdb",
    "snap/chromium/current/.pki/nssdb",
)
FIREFOX_ROOTS = (
    ".mozilla/firefox",
    ".config/mozilla/firefox",  # newer Firefox, XDG layout
    "snap/firefox/common/.mozilla/firefox",
    ".var/app/org.mozilla.firefox/.mozilla/firefox",
    "Library/Application Support/Firefox",  # macOS
)
CHROMIUM_BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINTS = {
    "linux": "install it: apt-get install libnss3-tools (Debian/Ubuntu), dnf install nss-tools "
    "(Fedora/RHEL), pacman -S nss (Arch), zypper install mozilla-nss-tools (openSUSE)",
    "darwin": "install it: brew install nss",
}


class NSSStore:
    name = "nss"

    def __init__(self, runner: Runner = run_command, home: Path | None = None) -> None:
        self.runner = runner
        self.home = home or Path.home()
        self.certutil = shutil.which("certutil")

    def databases(self) -> list[str]:
        """Every NSS database a browser of this user reads, as certutil's ``sql:``/``dbm:`` dirs."""
        found: list[str] = []
        for relative in CHROMIUM_DBS:
            folder = self.home / relative
            if (folder / "cert9.db").exists():
                found.append(f"sql:{folder}")
        for root in FIREFOX_ROOTS:
            for profile in _firefox_profiles(self.home / root):
                if (profile / "cert9.db").exists():
                    found.append(f"sql:{profile}")
                elif (profile / "cert8.db").exists():
                    found.append(f"dbm:{profile}")
        return found

    def _new_database(self) -> Path | None:
        """Where to create a database if a Chromium-family browser exists but none does yet."""
        if sys.platform != "linux" or not any(shutil.which(b) for b in CHROMIUM_BINARIES):
            return None
        return self.home / CHROMIUM_DBS[0]

    def available(self) -> Availability:
        if self.certutil is None:
            hint = INSTALL_HINTS.get(sys.platform, "install NSS's certutil")
            return Availability(False, f"certutil is missing; {hint}")
        if not self.databases() and self._new_database() is None:
            return Availability(False, "no Firefox or Chromium NSS database found")
        return Availability(True, f"{len(self.databases())} database(s)")

    def nickname(self, ca: RootCert) -> str:
        return f"devtls development CA {ca.fingerprint_sha256[:16].lower()}"

    def _holds(self, db: str, ca: RootCert) -> bool:
        for nickname in (self.nickname(ca), mkcert_name(ca)):
            code, output = self.runner(self._cmd("-L", "-d", db, "-n", nickname, "-a"), None)
            if code == 0 and ca.cert_pem().decode().strip() in _normalise(output):
                return True
        return False

    def missing_from(self, ca: RootCert) -> list[str]:
        return [db for db in self.databases() if not self._holds(db, ca)]

    def is_installed(self, ca: RootCert) -> bool:
        databases = self.databases()
        return bool(databases) and not self.missing_from(ca)

    def _cmd(self, *args: str) -> list[str]:
        return [self.certutil or "certutil", *args]

    def _add(self, db: str, ca_file: Path, ca: RootCert) -> list[str]:
        return self._cmd("-A", "-d", db, "-t", "C,,", "-n", self.nickname(ca), "-i", str(ca_file))

    def plan_install(self, ca: RootCert) -> list[str]:
        steps: list[str] = []
        if not self.databases() and (folder := self._new_database()) is not None:
            steps.append(describe(self._cmd("-N", "-d", f"sql:{folder}", "--empty-password")))
            return [*steps, describe(self._add(f"sql:{folder}", ca_file(ca), ca))]
        return [describe(self._add(db, ca_file(ca), ca)) for db in self.missing_from(ca)]

    def install(self, ca: RootCert) -> None:
        if not self.databases() and (folder := self._new_database()) is not None:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._check(self._cmd("-N", "-d", f"sql:{folder}", "--empty-password"))
        for db in self.missing_from(ca):
            self._check(self._add(db, ca_file(ca), ca))

    def plan_uninstall(self, ca: RootCert) -> list[str]:
        return [
            describe(self._cmd("-D", "-d", db, "-n", self.nickname(ca)))
            for db in self.databases()
            if self._has_nickname(db, self.nickname(ca))
        ]

    def uninstall(self, ca: RootCert) -> None:
        nickname = self.nickname(ca)
        for db in self.databases():
            # A nickname can be there more than once; delete until it is gone (bounded).
            for _ in range(10):
                if not self._has_nickname(db, nickname):
                    break
                self._check(self._cmd("-D", "-d", db, "-n", nickname))

    def _has_nickname(self, db: str, nickname: str) -> bool:
        code, _ = self.runner(self._cmd("-L", "-d", db, "-n", nickname), None)
        return code == 0

    def _check(self, args: list[str]) -> None:
        run_checked(self.runner, args)


def _firefox_profiles(root: Path) -> list[Path]:
    """Profiles listed in profiles.ini, plus any folder holding a cert db (macOS layout)."""
    profiles: list[Path] = []
    ini = root / "profiles.ini"
    if ini.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(ini, encoding="utf-8")
        except configparser.Error:
            parser = configparser.ConfigParser()
        for section in parser.sections():
            path = parser.get(section, "Path", fallback=None)
            if path is None:
                continue
            relative = parser.get(section, "IsRelative", fallback="1") == "1"
            profiles.append(root / path if relative else Path(path))
    for candidate in (root / "Profiles", root):
        if candidate.is_dir():
            profiles += [p for p in candidate.iterdir() if (p / "cert9.db").exists()]
    unique: list[Path] = []
    for profile in profiles:
        if profile not in unique:
            unique.append(profile)
    return unique


def _normalise(output: str) -> str:
    return output.replace("\r\n", "\n")
