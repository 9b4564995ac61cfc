"""NSS databases of the current user: Chromium/Chrome on Linux, and Firefox everywhere.

Uses ``certutil`` from NSS. Only databases that exist are changed, except that a user with a
Chromium-family browser but no database yet gets one, so a root installed before the
browser's first start is not lost. With administrator rights the store also sets Firefox's
enterprise policy (``policy``, one module per platform), so profiles created later trust the
root too.
"""

from __future__ import annotations

import configparser
import shutil
import sys
from pathlib import Path

from devtls._files import NotRegularFileError, read_regular_file
from devtls.ca import RootCert
from devtls.errors import TrustStoreError
from devtls.truststores.base import (
    Availability,
    Runner,
    ca_file,
    describe,
    mkcert_name,
    rerun_command,
    run_checked,
    run_command,
)
from devtls.truststores.policies import FirefoxPolicy

CHROMIUM_DBS = (
    ".pki/nssdb",
    # Chromium 146 and later read the XDG location.
    ".local/share/pki/nssdb",
    "snap/chromium/current/.pki/nssdb",
)
# A profiles.ini of a hundred profiles is a few KiB.
MAX_PROFILES_INI_BYTES = 1024 * 1024
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

    def __init__(
        self,
        runner: Runner = run_command,
        home: Path | None = None,
        policy: FirefoxPolicy | None = None,
        *,
        use_databases: bool = True,
    ) -> None:
        self.runner = runner
        self.home = home or Path.home()
        # Windows has a certutil of its own, which is not NSS's.
        self.use_databases = use_databases
        self.certutil = shutil.which("certutil") if use_databases else None
        self.policy = policy

    def _policy_to_do(self) -> FirefoxPolicy | None:
        """The policy, when this process may change it."""
        return self.policy if self.policy is not None and self.policy.has_rights() else None

    def _databases_usable(self) -> bool:
        return self.certutil is not None and (
            bool(self.databases()) or self._new_database() is not None
        )

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
        policy = self._policy_to_do()
        if not self.use_databases:
            if policy is None:
                return Availability(False, "setting Firefox's policy needs an administrator")
            return Availability(True, f"Firefox policy {policy.location()}")
        if self.certutil is None:
            hint = INSTALL_HINTS.get(sys.platform, "install NSS's certutil")
            return Availability(False, f"certutil is missing; {hint}")
        if not self.databases() and self._new_database() is None:
            if policy is None:
                return Availability(False, "no Firefox or Chromium NSS database found")
            return Availability(True, f"Firefox policy {policy.location()} (no NSS database)")
        reason = f"{len(self.databases())} database(s)"
        return Availability(
            True, reason + (f", Firefox policy {policy.location()}" if policy else "")
        )

    def policy_state(self, ca: RootCert) -> str:
        """What ``status`` says of the policy: set, or what not having it means."""
        if self.policy is None:
            return ""
        try:
            installed = self.policy.is_installed(ca)
        except TrustStoreError as exc:
            return f"Firefox policy: {exc}"
        if installed:
            return f"new Firefox profiles get the root from {self.policy.location()}"
        if self.policy.has_rights():
            return (
                "the Firefox policy does not name this root: profiles created later will not "
                "trust it until 'install --store nss' runs again"
            )
        return self.later_profiles_note()

    def later_profiles_note(self) -> str:
        return (
            "Firefox profiles created later will not trust the root until this runs as an "
            f"administrator: {rerun_command(self.name)}"
        )

    def notes(self, ca: RootCert, action: str) -> list[str]:
        """One line when the policy is not ours to change (no administrator rights)."""
        if self.policy is None or self.policy.has_rights():
            return []
        try:
            installed = self.policy.is_installed(ca)
        except TrustStoreError as exc:
            return [f"Firefox policy: {exc}"]
        if action == "install" and not installed:
            return [self.later_profiles_note()]
        if action == "uninstall" and installed:
            return [
                f"the Firefox policy {self.policy.location()} still installs the root; as an "
                f"administrator run: {rerun_command(self.name, 'uninstall')}"
            ]
        return []

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
        policy = self._policy_to_do()
        if policy is not None and not policy.is_installed(ca):
            return False
        if not self._databases_usable():
            return policy is not None
        databases = self.databases()
        return bool(databases) and not self.missing_from(ca)

    def _cmd(self, *args: str) -> list[str]:
        return [self.certutil or "certutil", *args]

    def _add(self, db: str, ca_file: Path, ca: RootCert) -> list[str]:
        return self._cmd("-A", "-d", db, "-t", "C,,", "-n", self.nickname(ca), "-i", str(ca_file))

    def plan_install(self, ca: RootCert) -> list[str]:
        policy = self._policy_to_do()
        steps = policy.plan_install(ca) if policy is not None else []
        if self.certutil is None:
            return steps
        if not self.databases() and (folder := self._new_database()) is not None:
            steps.append(describe(self._cmd("-N", "-d", f"sql:{folder}", "--empty-password")))
            return [*steps, describe(self._add(f"sql:{folder}", ca_file(ca), ca))]
        return steps + [describe(self._add(db, ca_file(ca), ca)) for db in self.missing_from(ca)]

    def install(self, ca: RootCert) -> None:
        policy = self._policy_to_do()
        if policy is not None:
            policy.install(ca)
        if self.certutil is None:
            return
        if not self.databases() and (folder := self._new_database()) is not None:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._check(self._cmd("-N", "-d", f"sql:{folder}", "--empty-password"))
        for db in self.missing_from(ca):
            self._check(self._add(db, ca_file(ca), ca))

    def plan_uninstall(self, ca: RootCert) -> list[str]:
        policy = self._policy_to_do()
        steps = policy.plan_uninstall(ca) if policy is not None else []
        if self.certutil is None:
            return steps
        return steps + [
            describe(self._cmd("-D", "-d", db, "-n", self.nickname(ca)))
            for db in self.databases()
            if self._has_nickname(db, self.nickname(ca))
        ]

    def uninstall(self, ca: RootCert) -> None:
        policy = self._policy_to_do()
        if policy is not None:
            policy.uninstall(ca)
        if self.certutil is None:
            return
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
    text = _read_profiles_ini(root / "profiles.ini")
    if text is not None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(text)
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


def _read_profiles_ini(ini: Path) -> str | None:
    """profiles.ini's text, or None when there is none to read (a FIFO, a folder, a file far
    too large to be one). Firefox writes a path's bytes as they are, which on Linux need not
    be UTF-8: undecodable bytes become the same surrogates os.fsdecode makes, so the path
    names the same folder."""
    try:
        data = read_regular_file(ini, MAX_PROFILES_INI_BYTES)
    except (OSError, NotRegularFileError):
        return None
    if len(data) > MAX_PROFILES_INI_BYTES:
        return None
    return data.decode("utf-8", "surrogateescape")


def _normalise(output: str) -> str:
    return output.replace("\r\n", "\n")
