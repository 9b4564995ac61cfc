"""Every Firefox and Chromium NSS database of the user, one by one.

The databases are the ones ``install --store nss`` knows (Chromium's, snap's, flatpak's and
every Firefox profile). For each: is the root there (certutil), and does NSS itself accept a
fresh leaf (vfychain, when libnss3-tools has it).
"""

from __future__ import annotations

import os
from pathlib import Path

from devtls.doctor.model import Check, Context, package_install, quote, run_tool
from devtls.doctor.stores import RecordingRunner

NSS_TOOLS = {
    "apt-get": "libnss3-tools",
    "dnf": "nss-tools",
    "pacman": "nss",
    "zypper": "mozilla-nss-tools",
    "brew": "nss",
}


def label(db: str, home: Path) -> str:
    """``Firefox (snap) ~/snap/firefox/...`` for a certutil database name."""
    folder = db.split(":", 1)[1] if ":" in db else db
    path = Path(folder)
    try:
        shown = f"~/{path.relative_to(home)}"
    except ValueError:
        shown = str(path)
    browser = "Firefox" if "firefox" in folder.lower() else "Chromium"
    if "/snap/" in f"{folder}/":
        browser += " (snap)"
    elif "/.var/app/" in folder:
        browser += " (flatpak)"
    return f"{browser} {shown}"


def check_profiles(ctx: Context) -> list[Check]:
    from devtls.truststores.nss import NSSStore

    runner = RecordingRunner(ctx.timeout)
    store = NSSStore(runner=runner, home=ctx.home)
    store.certutil = ctx.which("certutil")
    databases = store.databases()
    if not databases:
        availability = store.available()
        if availability.available:
            # A Chromium-family browser without a database yet: install creates one.
            return [
                Check(
                    "nss",
                    "warn",
                    "a Chromium-family browser is installed but has no NSS database yet",
                    "devtls install --store nss",
                )
            ]
        return [Check("nss", "skip", "no Firefox or Chromium profile found")]
    names = [f"profile {label(db, ctx.home)}" for db in databases]
    if store.certutil is None:
        no_certutil = [
            Check(
                "nss certutil",
                "fail",
                f"certutil is missing: {len(databases)} browser database(s) cannot be checked "
                "or given the root",
                package_install(NSS_TOOLS),
            )
        ]
        return no_certutil + [Check(n, "skip", "not checked (no certutil)") for n in names]
    assert ctx.ca is not None
    missing = set(store.missing_from(ctx.ca))
    if runner.trouble:
        return [Check("nss", "warn", f"cannot tell: {runner.trouble}", None)]
    vfychain = ctx.which("vfychain")
    checks: list[Check] = []
    for db, name in zip(databases, names, strict=True):
        if db in missing:
            checks.append(
                Check(
                    name, "fail", "the root is not in this database", "devtls install --store nss"
                )
            )
            continue
        checks.append(_verify(ctx, vfychain, db, name, store.nickname(ctx.ca)))
    return checks


def _verify(ctx: Context, vfychain: str | None, db: str, name: str, nickname: str) -> Check:
    if vfychain is None or not hasattr(os, "memfd_create"):
        return Check(name, "ok", "the root is there (no vfychain here to verify a leaf with)")
    # vfychain reads a regular file only (not a pipe): the leaf goes in a memory file.
    fd = os.memfd_create("devtls-doctor-leaf")
    try:
        os.write(fd, ctx.probe_leaf().cert_pem())
        code, output = run_tool(
            [vfychain, "-d", db, "-u", "1", "-a", f"/dev/fd/{fd}"],
            timeout=ctx.timeout,
            pass_fds=(fd,),
        )
    finally:
        os.close(fd)
    if code == 0:
        return Check(name, "ok", "the root is there and NSS verifies a fresh leaf (vfychain)")
    reason = next((line.strip() for line in output.splitlines() if "ERROR" in line), "")
    return Check(
        name,
        "fail",
        f"the root is there but NSS rejects a fresh leaf{': ' + reason if reason else ''}",
        f"certutil -M -d {quote(db)} -n {quote(nickname)} -t C,,",
    )
