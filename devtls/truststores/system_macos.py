"""The macOS system store: the user's login keychain, trusted for SSL (``security`` tool).

Untested on real machines so far: the commands are checked against a recorded runner.
"""

from __future__ import annotations

from pathlib import Path

from devtls.ca import RootCert
from devtls.truststores.base import Availability, CommandStore, Runner, ca_file, run_command


class MacOSSystemStore(CommandStore):
    name = "system"

    def __init__(self, runner: Runner = run_command, home: Path | None = None) -> None:
        self.runner = runner
        self.keychain = (home or Path.home()) / "Library" / "Keychains" / "login.keychain-db"

    def available(self) -> Availability:
        return Availability(True, f"login keychain {self.keychain}")

    def _sha1(self, ca: RootCert) -> str:
        from cryptography.hazmat.primitives import hashes

        return ca.cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - keychain's id

    def is_installed(self, ca: RootCert) -> bool:
        code, output = self.runner(
            ["security", "find-certificate", "-a", "-Z", str(self.keychain)], None
        )
        return code == 0 and self._sha1(ca) in output.upper()

    def add_command(self, ca: RootCert) -> list[str]:
        # -r trustRoot with the SSL and basic X.509 policies: what browsers and curl check.
        return [
            "security", "add-trusted-cert", "-r", "trustRoot", "-p", "ssl", "-p", "basic",
            "-k", str(self.keychain), str(ca_file(ca)),
        ]  # fmt: skip

    def remove_commands(self, ca: RootCert) -> list[list[str]]:
        return [
            ["security", "remove-trusted-cert", str(ca_file(ca))],
            ["security", "delete-certificate", "-Z", self._sha1(ca), str(self.keychain)],
        ]
