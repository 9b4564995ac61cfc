"""``devtls hosts sync`` and ``devtls hosts clean``: the devtls block of the system hosts file.

The text is changed by devtls.hostsfile; this module finds the file, the names (the running
router's route hosts, or the names given), and reads and writes. A file that would not
change is not written.
"""

from __future__ import annotations

import difflib
import os
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from devtls import hostsfile
from devtls._files import PUBLIC_MODE, replace_keeping_metadata, write_atomic
from devtls.errors import DevtlsError, UsageError

# Set to use another file than the system's (tests, a chroot, a container image being built).
HOSTS_FILE_ENV = "DEVTLS_HOSTS_FILE"
# Ad-blocking hosts lists reach a few MiB; a file much larger than that is not a hosts file.
MAX_HOSTS_FILE_BYTES = 64 * 1024 * 1024


def hosts_file_path() -> Path:
    override = os.environ.get(HOSTS_FILE_ENV)
    if override:
        return Path(override)
    if sys.platform == "win32":  # pragma: no cover - Windows
        root = os.environ.get("SYSTEMROOT", r"C:\Windows")
        return Path(root, "System32", "drivers", "etc", "hosts")
    return Path("/etc/hosts")  # Linux, the BSDs and macOS alike


@dataclass(frozen=True)
class HostsChange:
    """What a sync or a clean does (or, with ``dry_run``, would do) to the hosts file."""

    path: Path
    before: str
    after: str
    old_names: tuple[str, ...]  # in the block before
    names: tuple[str, ...]  # in the block after
    skipped: tuple[str, ...]  # given, but not for a hosts file (wildcards, IPs)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> list[str]:
        def lines(text: str) -> list[str]:
            # Bytes that are not UTF-8 are shown as U+FFFD: a terminal cannot print them.
            shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return [line.rstrip("\r\n") for line in hostsfile.split_lines(shown)]

        return list(
            difflib.unified_diff(
                lines(self.before), lines(self.after), str(self.path), str(self.path), lineterm=""
            )
        )


def sync(names: tuple[str, ...] = (), *, dry_run: bool = False) -> HostsChange:
    """Write the block for ``names``, or without names for the running router's route hosts."""
    picked = hostsfile.host_names(names) if names else _route_host_names()
    path = hosts_file_path()
    before = _read(path)
    change = HostsChange(
        path,
        before,
        hostsfile.sync(before, picked.names, str(path)),
        hostsfile.names_in_block(before, str(path)),
        picked.names,
        picked.skipped,
    )
    if not dry_run and change.changed:
        # As root the router (the user's) cannot be asked: the names are given instead.
        rerun = ("sync", *picked.names) if picked.names else ("clean",)
        _write(path, change.after, rerun)
    return change


def clean(*, dry_run: bool = False) -> HostsChange:
    """Remove the block, and nothing else."""
    path = hosts_file_path()
    before = _read(path)
    after = hostsfile.clean(before, str(path))
    change = HostsChange(path, before, after, hostsfile.names_in_block(before, str(path)), (), ())
    if not dry_run and change.changed:
        _write(path, after, ("clean",))
    return change


def report(change: HostsChange, *, dry_run: bool = False) -> list[str]:
    """What ``devtls hosts sync|clean`` prints about ``change``."""
    if dry_run and change.changed:
        return [f"would change {change.path}:", *change.diff()]
    if change.names:
        listed = ", ".join(change.names)
        if not change.changed:
            return [f"{change.path} already names {listed}: nothing to do"]
        return [f"wrote {change.path}: {listed} on 127.0.0.1"]
    if not change.changed:
        return [f"{change.path} has no devtls block: nothing to do"]
    count = len(change.old_names)
    return [
        f"removed the devtls block ({count} name{'s' if count != 1 else ''}) from {change.path}"
    ]


def _route_host_names() -> hostsfile.HostNames:
    from devtls.control_client import NotRunning, list_routes

    try:
        listing = list_routes()
    except NotRunning as exc:
        raise DevtlsError(
            exc.message,
            "start one with 'devtls serve', or name the hosts: devtls hosts sync app.localhost",
        ) from None
    routes = listing.get("routes")
    hosts = [
        route.get("host") for route in (routes if isinstance(routes, list) else [])
        if isinstance(route, dict)
    ]  # fmt: skip
    # "*" is the route for every host, which no hosts file line can name.
    texts = [host for host in hosts if isinstance(host, str) and host not in ("", "*")]
    try:
        return hostsfile.host_names(texts)
    except UsageError as exc:  # the router's own answer, checked like anyone's
        raise DevtlsError(f"the router listed a route host that is not a name: {exc}") from None


def _read(path: Path) -> str:
    try:
        info = path.stat()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise DevtlsError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise DevtlsError(f"{path} is not a regular file", f"point {HOSTS_FILE_ENV} at a file")
    if info.st_size > MAX_HOSTS_FILE_BYTES:
        raise DevtlsError(
            f"{path} is larger than {MAX_HOSTS_FILE_BYTES // 2**20} MiB, too large for a hosts file"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DevtlsError(f"cannot read {path}: {exc.strerror or exc}") from None
    # Bytes that are not UTF-8 (a Latin-1 comment) pass through unchanged.
    return data.decode("utf-8", "surrogateescape")


def _write(path: Path, text: str, rerun: tuple[str, ...]) -> None:
    """Write ``text``; a missing privilege names the command (``devtls hosts RERUN...``)
    that does the same as an administrator."""
    data = text.encode("utf-8", "surrogateescape")
    # A symbolic link (a hosts file kept elsewhere) stays one: its target is replaced.
    target = path.resolve()
    try:
        if target.exists():
            replace_keeping_metadata(target, data)
        else:
            write_atomic(target, data, PUBLIC_MODE)
    except PermissionError:
        raise DevtlsError(
            f"cannot write {path}: permission denied", _admin_hint(("hosts", *rerun))
        ) from None
    except OSError as exc:
        raise DevtlsError(f"cannot write {path}: {exc.strerror or exc}") from None


def _admin_hint(args: tuple[str, ...]) -> str:
    command = [*_devtls_command(), *args]
    if sys.platform == "win32":  # pragma: no cover - Windows
        return f"run it again as an administrator: {subprocess.list2cmdline(command)}"
    override = os.environ.get(HOSTS_FILE_ENV)
    # sudo resets the environment: the file devtls was told to use is passed on explicitly.
    prefix = ["sudo", "env", f"{HOSTS_FILE_ENV}={override}"] if override else ["sudo"]
    return f"run it again as root: {shlex.join([*prefix, *command])}"


def _devtls_command() -> list[str]:
    """How to start this devtls again, by absolute path (sudo does not keep PATH)."""
    program = sys.argv[0] if sys.argv else ""
    if Path(program).stem == "devtls":
        found = shutil.which(program)
        if found:
            return [os.path.abspath(found)]
    return [sys.executable, "-m", "devtls"]
