"""The Windows system store: the current user's ROOT store, through ``certutil -user``.

Untested on real machines so far: the commands are checked against a recorded runner.
Windows asks the user to confirm adding a root in a dialog.
"""

from __future__ import annotations

from devtls.ca import RootCert
from devtls.truststores.base import Availability, CommandStore, Runner, ca_file, run_command


class WindowsSystemStore(CommandStore):
    name = "system"

    def __init__(self, runner: Runner = run_command) -> None:
        self.runner = runner

    def available(self) -> Availability:
        return Availability(True, "the current user's ROOT store")

    def _serial(self, ca: RootCert) -> str:
        return f"{ca.serial_number:x}"

    def is_installed(self, ca: RootCert) -> bool:
        code, _ = self.runner(["certutil", "-user", "-verifystore", "Root", self._serial(ca)], None)
        return code == 0

    def add_command(self, ca: RootCert) -> list[str]:
        return ["certutil", "-user", "-addstore", "Root", str(ca_file(ca))]

    def remove_commands(self, ca: RootCert) -> list[list[str]]:
        return [["certutil", "-user", "-delstore", "Root", self._serial(ca)]]
