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
from devtls.errors import TrustStoreError
from devtls.truststores.policies import FirefoxPolicy

# Where a Firefox is installed, even before its first profile exists.
FIREFOX_BINARIES = ("firefox", "firefox-esr")
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


def check_policy(ctx: Context, policy: FirefoxPolicy | None, databases: list[str]) -> list[Check]:
    """Whether Firefox profiles made from now on trust the root: only the enterprise policy
    gives it to them (each existing profile is checked on its own)."""
    firefox = any("firefox" in db.lower() for db in databases) or any(
        ctx.which(binary) for binary in FIREFOX_BINARIES
    )
    if policy is None or ctx.ca is None or not firefox:
        return []
    name = "nss firefox policy"
    try:
        installed = policy.is_installed(ctx.ca)
    except TrustStoreError as exc:
        return [Check(name, "fail", f"{policy.location()}: {exc}", None)]
    if installed:
        return [Check(name, "ok", f"new Firefox profiles get the root from {policy.location()}")]
    from devtls.truststores.base import rerun_command

    fix = "devtls install --store nss" if policy.has_rights() else rerun_command("nss")
    return [
        Check(
            name,
            "warn",
            f"the Firefox policy ({policy.location()}) does not name the root: a profile "
            "created from now on will not trust it",
            fix,
        )
    ]


def check_profiles(ctx: Context, policy: FirefoxPolicy | None = None) -> list[Check]:
    from devtls.truststores.nss import NSSStore

    runner = RecordingRunner(ctx.timeout)
    store = NSSStore(runner=runner, home=ctx.home)
    store.certutil = ctx.which("certutil")
    databases = store.databases()
    later = check_policy(ctx, policy, databases)
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
                ),
                *later,
            ]
        return [Check("nss", "skip", "no Firefox or Chromium profile found"), *later]
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
        return no_certutil + [Check(n, "skip", "not checked (no certutil)") for n in names] + later
    assert ctx.ca is not None
    missing = set(store.missing_from(ctx.ca))
    if runner.trouble:
        return [Check("nss", "warn", f"cannot tell: {runner.trouble}", None), *later]
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
    return checks + later


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
