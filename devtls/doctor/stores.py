"""The trust stores, each through its real verifier where there is one.

The system store is judged by outcome: a fresh leaf must verify with the OS verifier (through
truststore, as ``devtls status`` does) and with openssl against the system bundle. Java is
asked through keytool; a store added later (WSL's Windows store) answers through the common
store interface. NSS databases are checked one by one in ``profiles``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from devtls.doctor.model import Check, Context, as_admin, bounded_runner, run_tool
from devtls.errors import DevtlsError, UsageError
from devtls.truststores import TrustStore, select

# The stores with a verifier of their own in doctor; any other answers through check_other.
CHECKED_HERE = ("system", "nss", "java")

# Variables that point OpenSSL at other roots: the system store is judged without them.
_VERIFY_PATH_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def selected_stores(ctx: Context) -> tuple[list[TrustStore], Check | None]:
    """The stores doctor looks at: all, or those of $TRUST_STORES (as install does)."""
    names = [n.strip() for n in ctx.environ.get("TRUST_STORES", "").split(",") if n.strip()]
    try:
        stores = select(names)
    except UsageError as exc:
        value = ctx.environ.get("TRUST_STORES", "")
        return [], Check(
            "stores", "fail", f"TRUST_STORES={value}: {exc.message}", "unset TRUST_STORES"
        )
    if names:
        note = Check("stores", "ok", f"checking only {', '.join(names)} (TRUST_STORES)")
        return stores, note
    return stores, None


class RecordingRunner:
    """A bounded store runner that remembers a tool that did not answer or is not there."""

    def __init__(self, timeout: float) -> None:
        self.run = bounded_runner(timeout)
        self.trouble: str | None = None

    def __call__(self, args: Sequence[str], stdin: bytes | None) -> tuple[int, str]:
        code, output = self.run(args, stdin)
        if code in (124, 127):
            self.trouble = output.strip()
        return code, output


def check_system(ctx: Context, store: TrustStore) -> Check:
    """The system store; ``ctx.system_trusted`` is set from the outcome."""
    availability = store.available()
    if not availability.available:
        return Check("store system", "skip", availability.reason)
    assert ctx.ca is not None
    from devtls.trust import verify_with_os

    by_os, why = verify_with_os(ctx.ca)
    by_openssl, bundle_note = _openssl_verdict(ctx)
    ctx.system_trusted = by_os and by_openssl is not False
    if ctx.system_trusted:
        return Check("store system", "ok", f"{why}{bundle_note}")
    anchored = False
    with contextlib.suppress(DevtlsError):
        anchored = store.is_installed(ctx.ca)
    update = getattr(getattr(store, "family", None), "update", None)
    found = f"{why}{bundle_note}" if not by_os else bundle_note.lstrip("; ")
    if anchored and update:
        anchor = getattr(store, "anchor", lambda _ca: "the anchor")(ctx.ca)
        return Check(
            "store system",
            "fail",
            f"{anchor} is there, but {found}",
            as_admin(" ".join(update)),
        )
    return Check("store system", "fail", found, "devtls install --store system")


def _openssl_verdict(ctx: Context) -> tuple[bool | None, str]:
    """openssl's verdict on a fresh leaf against the system bundle (None: cannot ask)."""
    from devtls.bundle import SYSTEM_BUNDLES

    openssl = ctx.which("openssl")
    bundle = next((b for b in SYSTEM_BUNDLES if _readable(b)), None)
    if openssl is None or bundle is None:
        return None, ""
    env = {k: v for k, v in ctx.environ.items() if k not in _VERIFY_PATH_VARIABLES}
    code, output = run_tool(
        [openssl, "verify", "-CAfile", bundle],
        ctx.probe_leaf().cert_pem(),
        timeout=ctx.timeout,
        env=env,
    )
    if code == 0:
        return True, f"; openssl verifies it against {bundle}"
    reason = next((line for line in output.splitlines() if "error" in line), output.strip())
    return False, f"; openssl rejects it against {bundle} ({reason.strip()})"


def _readable(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return b"BEGIN CERTIFICATE" in handle.read(4096)
    except OSError:
        return False


def check_java(ctx: Context) -> Check:
    from devtls.truststores.java import JavaStore

    runner = RecordingRunner(ctx.timeout)
    store = JavaStore(runner=runner, java_home=ctx.environ.get("JAVA_HOME", ""))
    availability = store.available()
    if not availability.available:
        return Check("store java", "skip", availability.reason)
    assert ctx.ca is not None
    # By fingerprint, under any alias (devtls's, mkcert's, Debian's hook's).
    fingerprints = store.fingerprints()
    if runner.trouble or fingerprints is None:
        return Check("store java", "warn", f"cannot tell: {runner.trouble or 'keytool failed'}")
    if ctx.ca.fingerprint_sha256 in fingerprints:
        return Check("store java", "ok", f"the root is in {availability.reason}")
    return Check(
        "store java",
        "fail",
        f"the root is not in {availability.reason} (Java, Gradle, Maven read it)",
        "devtls install --store java",
    )


def check_other(ctx: Context, store: TrustStore) -> Check:
    """A store doctor has no special verifier for: as the store itself reports it."""
    name = f"store {store.name}"
    availability = store.available()
    if not availability.available:
        return Check(name, "skip", availability.reason)
    assert ctx.ca is not None
    try:
        installed = store.is_installed(ctx.ca)
    except DevtlsError as exc:
        return Check(name, "warn", f"cannot tell: {exc}", None)
    if installed:
        return Check(name, "ok", f"the root is trusted ({availability.reason})")
    return Check(
        name,
        "fail",
        f"the root is not trusted ({availability.reason})",
        f"devtls install --store {store.name}",
    )


def check_wsl(ctx: Context, stores: list[TrustStore]) -> list[Check]:
    """Under WSL, browsers run on Windows: their store is not the Linux one."""
    try:
        version = ctx.proc_version.read_text(errors="replace")
    except OSError:
        return []
    if "microsoft" not in version.lower():
        return []
    if any(s.name not in CHECKED_HERE for s in stores):
        return []  # the Windows store has a store of its own, reported through check_other
    root = ctx.root_file()
    return [
        Check(
            "wsl",
            "warn",
            "this is WSL: browsers on Windows read the Windows store, which this devtls "
            "does not check from here",
            f'certutil.exe -user -addstore Root "$(wslpath -w {root})"',
        )
    ]
