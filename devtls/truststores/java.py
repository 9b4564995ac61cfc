"""The JDK's ``cacerts``, through ``keytool`` (password ``changeit``, as every JDK ships it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from devtls.ca import RootCert
from devtls.truststores.base import (
    Availability,
    Privileges,
    Runner,
    ca_file,
    describe,
    entry_name,
    mkcert_name,
    rerun_command,
    run_checked,
    run_command,
)

STOREPASS = "changeit"
# For a one-off listing: a JVM without the optimising compiler starts in half the time, and
# without perf data it leaves no hsperfdata file in the temp folder.
QUICK_JVM = ("-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC", "-J-XX:-UsePerfData")


def find_java(java_home: str | None = None) -> tuple[Path | None, Path | None]:
    """keytool and cacerts: from $JAVA_HOME, else from the keytool on PATH (symlinks followed)."""
    home = java_home if java_home is not None else os.environ.get("JAVA_HOME")
    keytool: Path | None = None
    if home:
        candidate = Path(home) / "bin" / ("keytool.exe" if os.name == "nt" else "keytool")
        keytool = candidate if candidate.exists() else None
        jdk = Path(home)
    else:
        found = shutil.which("keytool")
        if found is None:
            return None, None
        keytool = Path(found)
        jdk = Path(found).resolve().parent.parent
    # JDK 9 and later keep cacerts in lib/security; JDK 8 under jre/.
    for relative in ("lib/security/cacerts", "jre/lib/security/cacerts"):
        if (jdk / relative).exists():
            return keytool or Path("keytool"), jdk / relative
    return keytool, None


class JavaStore:
    name = "java"

    def __init__(self, runner: Runner = run_command, java_home: str | None = None) -> None:
        self.runner = runner
        self.keytool, self.cacerts = find_java(java_home)
        self.privileges = Privileges(runner, rerun_command(self.name))

    def available(self) -> Availability:
        if self.keytool is None:
            return Availability(False, "no Java found (set JAVA_HOME or put keytool on PATH)")
        if self.cacerts is None:
            return Availability(False, f"no cacerts found for {self.keytool}")
        return Availability(True, str(self.cacerts))

    def alias(self, ca: RootCert) -> str:
        return entry_name(ca)

    def _aliases(self, ca: RootCert) -> list[str]:
        # mkcert's alias and the one Debian's ca-certificates-java hook gives system anchors.
        return [self.alias(ca), mkcert_name(ca), f"debian:{entry_name(ca)}.pem"]

    def _keytool(self, *args: str) -> list[str]:
        assert self.keytool is not None
        assert self.cacerts is not None
        return [str(self.keytool), *args, "-keystore", str(self.cacerts), "-storepass", STOREPASS]

    def _has(self, alias: str) -> bool:
        code, _ = self.runner(self._keytool("-list", "-alias", alias), None)
        return code == 0

    def is_installed(self, ca: RootCert) -> bool:
        return any(self._has(alias) for alias in self._aliases(ca))

    def fingerprints(self) -> set[str] | None:
        """The SHA-256 fingerprints of every entry, from one keytool run (a JVM start is the
        slow part; looking up each alias costs one each). None when keytool fails."""
        code, output = self.runner(self._keytool(*QUICK_JVM, "-list"), None)
        if code != 0:
            return None
        marker = "(SHA-256):"
        return {
            line.split(marker, 1)[1].strip().replace(":", "").upper()
            for line in output.splitlines()
            if marker in line
        }

    def _import(self, ca: RootCert) -> list[str]:
        return self._keytool(
            "-importcert", "-noprompt", "-alias", self.alias(ca), "-file", str(ca_file(ca))
        )

    def plan_install(self, ca: RootCert) -> list[str]:
        return [] if self.is_installed(ca) else [describe(self._import(ca))]

    def install(self, ca: RootCert) -> None:
        if self.is_installed(ca):
            return
        self._as_needed(self._import(ca), what="adding the root to Java")

    def plan_uninstall(self, ca: RootCert) -> list[str]:
        return [
            describe(self._keytool("-delete", "-noprompt", "-alias", alias))
            for alias in (self.alias(ca),)
            if self._has(alias)
        ]

    def uninstall(self, ca: RootCert) -> None:
        if self._has(self.alias(ca)):
            self._as_needed(
                self._keytool("-delete", "-noprompt", "-alias", self.alias(ca)),
                what="removing the root from Java",
            )

    def _as_needed(self, args: list[str], *, what: str) -> None:
        """Run directly when cacerts is writable; otherwise it needs administrator rights."""
        assert self.cacerts is not None
        if os.access(self.cacerts, os.W_OK):
            run_checked(self.runner, args, what=what)
            return
        self.privileges.run(args, what=what)
