"""What every doctor check returns, what they all read, and the one bounded way to run tools.

Doctor is read-only: nothing here writes a file, a store or a CA. The context carries the
environment the checks judge (the user's, or a test's) so that no check reads ``os.environ``
behind its back.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from devtls.ca import LocalCA
    from devtls.issue import LeafCert
    from devtls.truststores.base import Runner

State = Literal["ok", "warn", "fail", "skip"]
STATES: tuple[State, ...] = ("ok", "warn", "fail", "skip")

# Every tool doctor starts gets this long; they run side by side, so the whole run stays
# within a few seconds even when one of them hangs (a JVM on a loaded machine is the slowest).
TOOL_TIMEOUT = 4.0


@dataclass(frozen=True)
class Check:
    """One finding: ``found`` says what is there, ``fix`` the one command or setting to change."""

    name: str
    state: State
    found: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "found": self.found, "fix": self.fix}


@dataclass(frozen=True)
class Report:
    caroot: Path
    checks: tuple[Check, ...]

    @property
    def failed(self) -> bool:
        return any(c.state == "fail" for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def counts(self) -> dict[State, int]:
        return {state: sum(c.state == state for c in self.checks) for state in STATES}

    def as_dict(self) -> dict[str, Any]:
        return {
            "caroot": str(self.caroot),
            "ok": not self.failed,
            "counts": self.counts(),
            "checks": [c.as_dict() for c in self.checks],
        }

    def lines(self) -> list[str]:
        """The text of ``devtls doctor``: a line per check, its fix indented below it."""
        out: list[str] = []
        for check in self.checks:
            out.append(one_line(f"{check.state:<4}  {check.name}: {check.found}"))
            if check.fix:
                out.append(one_line(f"      fix: {check.fix}"))
        counts = self.counts()
        summary = f"{counts['fail']} problem(s), {counts['warn']} warning(s)"
        out.append("all well" if not counts["fail"] and not counts["warn"] else summary)
        return out


def one_line(text: str) -> str:
    """``text`` as one printable line. What a check found may come from a file, a variable or
    another program (a served certificate's names): a newline there would print a line that
    looks like a check of its own, an escape would drive the terminal; both are shown escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass
class Context:
    """What the checks look at; tests build one over a temporary HOME and CAROOT."""

    caroot: Path
    home: Path
    cwd: Path
    environ: Mapping[str, str]
    # Where a router started by `devtls run` (and a plain `devtls serve`) listens.
    default_listen: str
    proc_version: Path = Path("/proc/version")
    timeout: float = TOOL_TIMEOUT
    # The CA when it loads and can sign today; else ``ca_missing`` says why the checks that
    # need one are skipped.
    ca: LocalCA | None = None
    ca_missing: str = "no usable CA (see the ca checks above)"
    # Whether the OS verifier accepts a leaf of the CA (None: not known, e.g. no CA).
    system_trusted: bool | None = None
    # Set once system_trusted is known, while the system check runs beside the others.
    system_pending: threading.Event | None = None
    _leaf: LeafCert | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def which(self, program: str) -> str | None:
        return shutil.which(program, path=self.environ.get("PATH", os.defpath))

    def probe_leaf(self) -> LeafCert:
        """One leaf for 127.0.0.1 and localhost, minted in memory and shared by the checks."""
        assert self.ca is not None
        with self._lock:
            if self._leaf is None:
                self._leaf = self.ca.issue("localhost", "127.0.0.1", key_type="ecdsa", days=1)
            return self._leaf

    def bundle(self) -> Path:
        """Where `devtls env` writes the system roots plus the devtls root."""
        from devtls.trust import BUNDLE_FILE

        return self.caroot / BUNDLE_FILE

    def root_file(self) -> Path:
        from devtls.ca import CERT_FILE

        return self.caroot / CERT_FILE


def run_tool(
    args: Sequence[str],
    stdin: bytes | None = None,
    *,
    timeout: float = TOOL_TIMEOUT,
    env: Mapping[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> tuple[int, str]:
    """Like the stores' runner, with doctor's short timeout: exit status and output."""
    try:
        result = subprocess.run(
            list(args),
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
            env=dict(env) if env is not None else None,
            cwd="/",
            pass_fds=pass_fds,
        )
    except FileNotFoundError:
        return 127, f"{args[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, f"{args[0]}: no answer within {timeout:g} s"
    return result.returncode, (result.stdout + result.stderr).decode("utf-8", "replace")


def bounded_runner(timeout: float) -> Runner:
    """A store ``Runner`` that gives up after ``timeout`` seconds."""

    def runner(args: Sequence[str], stdin: bytes | None) -> tuple[int, str]:
        return run_tool(args, stdin, timeout=timeout)

    return runner


def quote(path: Path | str) -> str:
    return shlex.quote(str(path))


def as_admin(command: str) -> str:
    """``sudo COMMAND``, unless this already runs as root (where sudo may not even exist)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return command
    return f"sudo {command}"


def package_install(package_by_manager: Mapping[str, str]) -> str:
    """``sudo apt-get install PKG`` or the like, for the package manager found here."""
    for manager, command in (
        ("apt-get", "apt-get install {}"),
        ("dnf", "dnf install {}"),
        ("pacman", "pacman -S {}"),
        ("zypper", "zypper install {}"),
        ("brew", "brew install {}"),
    ):
        if manager in package_by_manager and shutil.which(manager):
            line = command.format(package_by_manager[manager])
            return line if manager == "brew" else as_admin(line)
    first = next(iter(package_by_manager.items()))
    return f"install {first[1]} (the package that has it on this system)"
