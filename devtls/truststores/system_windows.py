"""The Windows system store: the current user's ROOT store, through ``certutil -user``.

Untested on real machines so far: the commands are checked against a recorded runner.
Windows asks the user to confirm adding a root in a dialog.
"""

from __future__ import annotations

from devtls.ca import LocalCA
from devtls.truststores.base import (
    Availability,
    Runner,
    ca_file,
    describe,
    run_checked,
    run_command,
)


class WindowsSystemStore:
    name = "system"

    def __init__(self, runner: Runner = run_command) -> None:
        self.runner = runner

    def available(self) -> Availability:
        return Availability(True, "the current user's ROOT store")

    def _serial(self, ca: LocalCA) -> str:
        return f"{ca.serial_number:x}"

    def is_installed(self, ca: LocalCA) -> bool:
        code, _ = self.runner(["certutil", "-user", "-verifystore", "Root", self._serial(ca)], None)
        return code == 0

    def _add(self, ca: LocalCA) -> list[str]:
        return ["certutil", "-user", "-addstore", "Root", str(ca_file(ca))]

    def _remove(self, ca: LocalCA) -> list[str]:
        return ["certutil", "-user", "-delstore", "Root", self._serial(ca)]

    def plan_install(self, ca: LocalCA) -> list[str]:
        return [] if self.is_installed(ca) else [describe(self._add(ca))]

    def install(self, ca: LocalCA) -> None:
        if not self.is_installed(ca):
            run_checked(self.runner, self._add(ca))

    def plan_uninstall(self, ca: LocalCA) -> list[str]:
        return [describe(self._remove(ca))] if self.is_installed(ca) else []

    def uninstall(self, ca: LocalCA) -> None:
        if self.is_installed(ca):
            run_checked(self.runner, self._remove(ca))
