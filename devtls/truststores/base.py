"""What every trust store offers, and the one way they run commands.

A store answers: is it here (and if not, why), is our root in it, and how to put it in or
take it out. ``plan_*`` lists the exact commands and file changes without doing them, for
``--dry-run``. Commands go through a ``Runner`` so tests can record them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from devtls.ca import RootCert
from devtls.errors import TrustStoreError

# What a command run for a store returns: exit status and combined output.
Runner = Callable[[Sequence[str], bytes | None], tuple[int, str]]


def run_command(args: Sequence[str], stdin: bytes | None = None) -> tuple[int, str]:
    try:
        result = subprocess.run(
            list(args), input=stdin, capture_output=True, timeout=300, check=False
        )
    except FileNotFoundError:
        return 127, f"{args[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, f"{args[0]}: timed out"
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    return result.returncode, output


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str = ""


class TrustStore(Protocol):
    name: str

    def available(self) -> Availability: ...
    def is_installed(self, ca: RootCert) -> bool: ...
    def plan_install(self, ca: RootCert) -> list[str]: ...
    def install(self, ca: RootCert) -> None: ...
    def plan_uninstall(self, ca: RootCert) -> list[str]: ...
    def uninstall(self, ca: RootCert) -> None: ...


def entry_name(ca: RootCert) -> str:
    """A name for our root in a store, unique per CA so several CAROOTs can coexist."""
    return f"devtls_{ca.fingerprint_sha256[:16].lower()}"


def mkcert_name(ca: RootCert) -> str:
    """The name mkcert gives the same root (its caUniqueName), so we can see it is there."""
    return f"mkcert development CA {ca.serial_number}"


def describe(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


def last_line(output: str, code: int) -> str:
    """The line of a tool's output that says what went wrong (usually its last)."""
    return output.strip().splitlines()[-1] if output.strip() else f"exit status {code}"


def run_checked(runner: Runner, args: Sequence[str], *, what: str | None = None) -> str:
    """Run a store command; a failure is one TrustStoreError line naming the command."""
    code, output = runner(args, None)
    if code != 0:
        raise TrustStoreError(f"{what or describe(args)} failed: {last_line(output, code)}")
    return output


class CommandStore:
    """A store changed only by running commands (macOS, Windows): subclasses name them."""

    runner: Runner

    def is_installed(self, ca: RootCert) -> bool:
        raise NotImplementedError

    def add_command(self, ca: RootCert) -> list[str]:
        raise NotImplementedError

    def remove_commands(self, ca: RootCert) -> list[list[str]]:
        raise NotImplementedError

    def plan_install(self, ca: RootCert) -> list[str]:
        return [] if self.is_installed(ca) else [describe(self.add_command(ca))]

    def install(self, ca: RootCert) -> None:
        if not self.is_installed(ca):
            run_checked(self.runner, self.add_command(ca))

    def plan_uninstall(self, ca: RootCert) -> list[str]:
        if not self.is_installed(ca):
            return []
        return [describe(command) for command in self.remove_commands(ca)]

    def uninstall(self, ca: RootCert) -> None:
        if self.is_installed(ca):
            for command in self.remove_commands(ca):
                run_checked(self.runner, command)


def ca_file(ca: RootCert) -> Path:
    """The CA certificate file that store tools import (they read files, not memory)."""
    path = ca.cert_path
    if path is None:
        raise TrustStoreError("this CA has no folder", "install a CA loaded from CAROOT")
    return path


class Privileges:
    """Runs commands that need root: directly as root, through sudo on a terminal, else refuses.

    ``rerun_hint`` is the exact command a user should run as an administrator instead.
    """

    def __init__(self, runner: Runner, rerun_hint: str) -> None:
        self.runner = runner
        self.rerun_hint = rerun_hint

    def prefix(self) -> list[str]:
        if not hasattr(os, "geteuid") or os.geteuid() == 0:
            return []
        if sys.stdin is not None and sys.stdin.isatty() and shutil.which("sudo"):
            return ["sudo"]
        raise TrustStoreError(
            "this needs administrator rights",
            f"run as an administrator: {self.rerun_hint}",
        )

    def run(self, args: Sequence[str], stdin: bytes | None = None, *, what: str) -> str:
        code, output = self.runner([*self.prefix(), *args], stdin)
        if code != 0:
            raise TrustStoreError(f"{what} failed ({describe(args)}): {last_line(output, code)}")
        return output

    def write_file(self, path: Path, data: bytes) -> None:
        prefix = self.prefix()
        if not prefix:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            tmp.chmod(0o644)
            tmp.replace(path)
            return
        self.run(["tee", str(path)], data, what=f"writing {path}")

    def remove_file(self, path: Path) -> None:
        if not self.prefix():
            path.unlink(missing_ok=True)
            return
        self.run(["rm", "-f", str(path)], what=f"removing {path}")


def rerun_command(store: str, action: str = "install") -> str:
    """`sudo CAROOT=... /path/to/devtls install --store system`, keeping this CAROOT."""
    from devtls.ca import resolve_caroot

    program = shutil.which("devtls") or f"{sys.executable} -m devtls"
    return f"sudo CAROOT={shlex.quote(str(resolve_caroot()))} {program} {action} --store {store}"
