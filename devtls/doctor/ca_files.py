"""The CA folder and its two files: there, yours, private, parseable, not expiring.

Read-only: a missing CA is a finding (``devtls install`` makes one), never created here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from devtls._files import file_kind
from devtls.ca import CERT_FILE, KEY_FILE, LocalCA
from devtls.doctor.model import Check, Context, State, as_admin, quote
from devtls.errors import CAError
from devtls.expiry import ROOT_WARN_DAYS, expiry_problem


def check_ca(ctx: Context, now: dt.datetime | None = None) -> list[Check]:
    """The CA checks; ``ctx.ca`` is set when the CA loads."""
    root = ctx.caroot
    cert, key = root / CERT_FILE, root / KEY_FILE
    if not os.path.lexists(cert) and not os.path.lexists(key):
        where = "no CA folder" if not os.path.lexists(root) else "no CA in"
        return [Check("ca", "fail", f"{where} {root} (CAROOT)", "devtls install")]
    checks = [_folder(root)]
    for path in (cert, key):
        if not os.path.lexists(path):
            other = cert if path == key else key
            checks.append(
                Check(
                    "ca",
                    "fail",
                    f"{root} holds {other.name} but not {path.name}",
                    f"restore {path.name} from a backup, or start anew: "
                    f"mv {quote(root)} {quote(str(root) + '.old')} && devtls install",
                )
            )
            return checks
    checks += [_cert_file(cert), _key_file(key)]
    try:
        with _quiet_key_warning():
            ctx.ca = LocalCA.load(root)
    except CAError as exc:
        checks.append(Check("ca", "fail", exc.message, exc.hint))
        return checks
    checks.append(_expiry(ctx.ca, root, now))
    if checks[-1].state == "fail":
        # It cannot sign the leaves the other checks verify with.
        ctx.ca, ctx.ca_missing = None, "the root cannot sign today (see the ca root check)"
    return checks


def _owner_problem(info: os.stat_result, path: Path) -> Check | None:
    if os.name != "posix" or info.st_uid in (os.geteuid(), 0):
        return None  # Windows has ACLs, not owners and mode bits
    me = _user_name(os.geteuid())
    recursive = "-R " if stat.S_ISDIR(info.st_mode) else ""
    return Check(
        "ca folder" if stat.S_ISDIR(info.st_mode) else f"ca {path.name}",
        "fail",
        f"{path} belongs to {_user_name(info.st_uid)}, not to you ({me})",
        as_admin(f"chown {recursive}{me} {quote(path)}"),
    )


def _folder(root: Path) -> Check:
    try:
        info = os.stat(root)
    except OSError as exc:
        return Check("ca folder", "fail", f"cannot open {root}: {exc.strerror}", None)
    problem = _owner_problem(info, root)
    if problem is not None:
        return problem
    mode = stat.S_IMODE(info.st_mode)
    if os.name != "posix":
        return Check("ca folder", "ok", str(root))
    fix = f"chmod 700 {quote(root)}"
    if mode & 0o022:
        who = "others" if mode & 0o002 else "its group"
        return Check("ca folder", "fail", f"{root} is writable by {who} (mode {mode:04o})", fix)
    if mode & 0o077:
        return Check("ca folder", "warn", f"{root} is open to other users (mode {mode:04o})", fix)
    return Check("ca folder", "ok", f"{root} (mode {mode:04o}, yours)")


def _cert_file(path: Path) -> Check:
    try:
        info = os.stat(path)
    except OSError as exc:
        return Check(f"ca {path.name}", "fail", f"cannot read {path}: {exc.strerror}", None)
    if not stat.S_ISREG(info.st_mode):
        return _not_a_file(info, path)
    problem = _owner_problem(info, path)
    if problem is not None:
        return problem
    mode = stat.S_IMODE(info.st_mode)
    if os.name == "posix" and mode & 0o022:
        return Check(
            f"ca {path.name}",
            "fail",
            f"{path} is writable by other users (mode {mode:04o})",
            f"chmod 644 {quote(path)}",
        )
    return Check(f"ca {path.name}", "ok", f"mode {mode:04o}")


def _key_file(path: Path) -> Check:
    name = f"ca {path.name}"
    try:
        info = os.lstat(path)
    except OSError as exc:
        return Check(name, "fail", f"cannot read {path}: {exc.strerror}", None)
    if stat.S_ISLNK(info.st_mode):
        return Check(
            name,
            "fail",
            f"{path} is a symbolic link (devtls reads a CA key only from a file)",
            f"cp --remove-destination $(readlink -f {quote(path)}) {quote(path)}",
        )
    if not stat.S_ISREG(info.st_mode):
        return _not_a_file(info, path)
    problem = _owner_problem(info, path)
    if problem is not None:
        return problem
    mode = stat.S_IMODE(info.st_mode)
    if os.name == "posix" and mode & 0o077:
        return Check(
            name,
            "fail",
            f"the CA key is readable by other users (mode {mode:04o})",
            f"chmod 600 {quote(path)}",
        )
    return Check(name, "ok", f"mode {mode:04o}, yours")


def _not_a_file(info: os.stat_result, path: Path) -> Check:
    """A FIFO, a device or a folder in a CA file's place: its mode is not the CA's to fix (a
    chmod through a link to /dev/zero would change the device)."""
    root = path.parent
    return Check(
        f"ca {path.name}",
        "fail",
        f"{path} is {file_kind(info.st_mode)}, not a file",
        f"restore {path.name} from a backup in its place, or start anew: "
        f"mv {quote(root)} {quote(str(root) + '.old')} && devtls install",
    )


def _expiry(ca: LocalCA, root: Path, now: dt.datetime | None) -> Check:
    now = now or dt.datetime.now(dt.timezone.utc)
    subject = ca.cert.subject.rfc4514_string()
    renew = f"devtls uninstall && mv {quote(root)} {quote(str(root) + '.old')} && devtls install"
    if now < ca.cert.not_valid_before_utc:
        return Check(
            "ca root",
            "fail",
            f"{subject} is not valid until {ca.cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "set this machine's clock right (timedatectl set-ntp true)",
        )
    problem = expiry_problem(ca.not_after, ROOT_WARN_DAYS, now)
    if problem is None:
        return Check("ca root", "ok", f"{subject}, valid until {ca.not_after:%Y-%m-%d}")
    state: State = "fail" if ca.not_after <= now else "warn"
    return Check("ca root", state, f"the root {problem}", renew)


@contextlib.contextmanager
def _quiet_key_warning() -> Iterator[None]:
    """Loading warns about a key others can read; doctor reports that as a check instead."""
    logger = logging.getLogger("devtls")
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"
