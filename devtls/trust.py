"""What ``install``, ``uninstall``, ``status`` and ``env`` do, across the trust stores."""

from __future__ import annotations

import contextlib
import os
import shlex
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtls import _files, castaging
from devtls.bundle import bundle_pem
from devtls.ca import CERT_FILE, LocalCA, RootCert, resolve_caroot
from devtls.constraints import NameConstraints
from devtls.errors import CAError, DevtlsError, UsageError
from devtls.expiry import ROOT_WARN_DAYS, expiry_problem
from devtls.truststores import TrustStore, select

BUNDLE_FILE = "devtls-bundle.pem"
SHELLS = ("bash", "zsh", "fish", "powershell")
_POWERSHELL_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")


@dataclass
class StoreOutcome:
    store: str
    action: str  # installed, removed, already trusted, not there, skipped, failed, would run
    detail: str = ""
    steps: list[str] = field(default_factory=list)
    # Lines worth saying even on success (what a store could not do without more rights).
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.action == "failed"


def _explicit(requested: tuple[str, ...]) -> bool:
    return bool(requested) or bool(os.environ.get("TRUST_STORES"))


def install(
    requested: tuple[str, ...] = (),
    *,
    dry_run: bool = False,
    caroot: Path | None = None,
    constraints: NameConstraints | None = None,
) -> tuple[LocalCA, bool, list[StoreOutcome]]:
    """Create the CA if needed (with ``constraints``: only a new one) and make every selected
    store trust it."""
    stores = select(requested)
    if not dry_run:
        ca, created = LocalCA.load_or_create(caroot, constraints=constraints)
    elif _has_ca(caroot):
        if constraints is not None:
            root = caroot or resolve_caroot()
            raise CAError(
                f"{root} already holds a CA; --constrain only applies to a new one",
                "run 'devtls uninstall' and move that folder away (or set CAROOT) first",
            )
        ca, created = LocalCA.load(caroot), False
    else:
        ca, created = _load_for_dry_run(caroot, constraints)
    explicit = _explicit(requested)
    return (
        ca,
        created,
        [
            apply_to_store(store, ca, "install", dry_run=dry_run, explicit=explicit)
            for store in stores
        ],
    )


def uninstall(
    requested: tuple[str, ...] = (), *, dry_run: bool = False, caroot: Path | None = None
) -> list[StoreOutcome]:
    """Take the root out of the selected stores; the CA files stay."""
    ca = LocalCA.load(caroot)
    explicit = _explicit(requested)
    return [
        apply_to_store(s, ca, "uninstall", dry_run=dry_run, explicit=explicit)
        for s in select(requested)
    ]


def _has_ca(caroot: Path | None) -> bool:
    return ((caroot or resolve_caroot()) / CERT_FILE).exists()


def _load_for_dry_run(
    caroot: Path | None, constraints: NameConstraints | None
) -> tuple[LocalCA, bool]:
    # A dry run writes nothing, not even a new CA: plan with a throwaway one in its place.
    ca = LocalCA.generate(constraints=constraints)
    ca.path = caroot or resolve_caroot()
    return ca, True


def apply_to_store(
    store: TrustStore,
    ca: RootCert,
    action: str,
    *,
    dry_run: bool = False,
    explicit: bool = False,
) -> StoreOutcome:
    """Install or uninstall ``ca`` in one store; a failure is an outcome, never raised."""
    outcome = _apply_store(store, ca, action, dry_run, explicit)
    if not outcome.failed and outcome.action != "skipped":
        # Only the NSS store has these (the Firefox policy needs an administrator).
        notes: list[str] = getattr(store, "notes", lambda _ca, _action: [])(ca, action)
        outcome.notes += notes
    return outcome


def _apply_store(
    store: TrustStore, ca: RootCert, action: str, dry_run: bool, explicit: bool
) -> StoreOutcome:
    availability = store.available()
    if not availability.available:
        return StoreOutcome(store.name, "failed" if explicit else "skipped", availability.reason)
    try:
        if action == "install":
            steps = store.plan_install(ca)
            if not steps:
                return StoreOutcome(store.name, "already trusted", availability.reason)
            if dry_run:
                return StoreOutcome(store.name, "would run", availability.reason, steps)
            store.install(ca)
            # Asked again: installing may have created what the store counts (an NSS database).
            return StoreOutcome(store.name, "installed", store.available().reason, steps)
        steps = store.plan_uninstall(ca)
        # Only the system store knows of copies that are not ours (mkcert's anchor file).
        leftover: list[Path] = getattr(store, "other_copies", lambda _ca: [])(ca)
        copies = ", ".join(map(str, leftover))
        note = f"still trusted through {copies} (mkcert's copy)" if leftover else ""
        if not steps:
            return StoreOutcome(store.name, "not there", note or availability.reason)
        if dry_run:
            return StoreOutcome(store.name, "would run", availability.reason, steps)
        store.uninstall(ca)
        return StoreOutcome(store.name, "removed", note or availability.reason, steps)
    except DevtlsError as exc:
        return StoreOutcome(store.name, "failed", str(exc))


# -- status ------------------------------------------------------------------------------


def status(caroot: Path | None = None) -> dict[str, Any]:
    """The CA and, per store, trusted / not trusted / unavailable, as ``status --json`` prints."""
    ca = LocalCA.load(caroot)
    stores: dict[str, dict[str, str]] = {}
    for store in select(()):
        availability = store.available()
        if not availability.available:
            stores[store.name] = {"state": "unavailable", "detail": availability.reason}
            continue
        try:
            installed = store.is_installed(ca)
        except DevtlsError as exc:
            stores[store.name] = {"state": "unavailable", "detail": str(exc)}
            continue
        detail = availability.reason
        if store.name == "system":
            # The outcome, not the file: does the OS verifier accept a fresh leaf?
            verified, why = verify_with_os(ca)
            installed = verified
            detail = f"{detail}; {why}"
            # Under WSL the system store has a Windows half, with its own verdict.
            extra = getattr(store, "status_detail", None)
            if extra is not None:
                trusted, more = extra(ca)
                installed = installed and trusted
                detail = f"{detail}; {more}"
        elif store.name == "nss" and not installed:
            missing: list[str] = getattr(store, "missing_from", lambda _ca: [])(ca)
            if missing:
                detail = f"missing from {', '.join(missing)}"
        if store.name == "nss":
            policy: str = getattr(store, "policy_state", lambda _ca: "")(ca)
            detail = f"{detail}; {policy}" if policy else detail
        stores[store.name] = {"state": "trusted" if installed else "not trusted", "detail": detail}
    constraints = ca.constraints
    return {
        "caroot": str(ca.path),
        "subject": ca.subject,
        "fingerprint_sha256": ca.fingerprint_sha256,
        "not_after": ca.not_after.isoformat(),
        # None: expires more than ROOT_WARN_DAYS from now.
        "expiry_warning": expiry_problem(ca.not_after, ROOT_WARN_DAYS),
        # None: unconstrained (mkcert's kind); else the permitted names and ranges.
        "name_constraints": constraints.entries() if constraints is not None else None,
        # Roots replaced by 'devtls ca rotate', still trusted until 'devtls uninstall --old'.
        "old_roots": [p.name for p in castaging.old_archives(ca.path or Path(), ca.cert)],
        "stores": stores,
    }


# Variables that point OpenSSL at other roots: a shell that ran `eval "$(devtls env)"` would
# otherwise report the system store as trusting the root when only the bundle does.
_VERIFY_PATH_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def verify_with_os(ca: LocalCA) -> tuple[bool, str]:
    """Handshake in memory: a new leaf from this CA against the OS verifier (truststore)."""
    saved = {name: os.environ.pop(name) for name in _VERIFY_PATH_VARIABLES if name in os.environ}
    try:
        return _verify_with_os(ca)
    finally:
        os.environ.update(saved)


def _verify_with_os(ca: LocalCA) -> tuple[bool, str]:
    import truststore

    leaf = ca.issue("localhost", key_type="ecdsa", days=1)
    server = leaf.server_context()
    client = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server, server_hostname="localhost")
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    try:
        for _ in range(8):
            for side in (client_side, server_side):
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.do_handshake()
            if client_side.version() is not None and server_side.version() is not None:
                break
        client_side.do_handshake()
    except ssl.SSLCertVerificationError as exc:
        return False, f"the OS verifier rejects a fresh leaf: {exc.verify_message or exc}"
    except ssl.SSLError as exc:
        return False, f"the OS verifier rejects a fresh leaf: {exc.reason or exc}"
    return True, "a fresh leaf verifies with the OS verifier"


# -- env ----------------------------------------------------------------------------------


def default_shell() -> str:
    if sys.platform == "win32":
        return "powershell"
    name = Path(os.environ.get("SHELL", "bash")).name
    return name if name in SHELLS else "bash"


def write_bundle(ca: LocalCA) -> Path:
    """System roots plus the devtls root, next to the CA; rewritten only when it changed."""
    assert ca.path is not None
    bundle = ca.path / BUNDLE_FILE
    # The roots 'devtls ca rotate' replaced stay trusted here too, until 'uninstall --old'.
    content = bundle_pem(ca, _old_root_pems(ca))
    try:
        current = bundle.read_bytes()
    except OSError:
        current = None
    if current != content:
        _files.write_atomic(bundle, content, _files.PUBLIC_MODE)
    return bundle


def _old_root_pems(ca: LocalCA) -> list[bytes]:
    assert ca.path is not None
    pems = []
    for path in castaging.old_archives(ca.path, ca.cert):
        with contextlib.suppress(OSError):
            pems.append(path.read_bytes())
    return pems


def refresh_bundle(ca: LocalCA) -> None:
    """Rewrite the bundle if ``devtls env`` made one: the roots it holds changed."""
    assert ca.path is not None
    if (ca.path / BUNDLE_FILE).exists():
        write_bundle(ca)


def env_lines(shell: str | None = None, caroot: Path | None = None) -> list[str]:
    shell = shell or default_shell()
    if shell not in SHELLS:
        raise UsageError(f"unknown shell {shell!r}", "use bash, zsh, fish or powershell")
    variables = env_variables(LocalCA.load(caroot))
    return [_export(shell, name, value) for name, value in variables.items()]


def docker_env_lines(caroot: Path | None = None) -> list[str]:
    """What ``devtls env --docker`` prints: Dockerfile and compose lines for this CA's root."""
    from devtls.dockerenv import docker_lines

    ca = LocalCA.load(caroot)
    assert ca.path is not None
    return docker_lines(ca.path / CERT_FILE, ca.fingerprint_sha256)


def env_variables(ca: LocalCA) -> dict[str, str]:
    """What ``devtls env`` sets (``devtls run`` gives them to its child too)."""
    assert ca.path is not None
    bundle = write_bundle(ca)
    return {
        # Node adds these to its own roots, so the devtls root alone is right here.
        "NODE_EXTRA_CA_CERTS": str(ca.path / CERT_FILE),
        # OpenSSL-based tools (Python's ssl, Ruby), requests and curl replace their roots with
        # this file, so it holds the system roots too. curl reads only its own variable: a
        # Debian curl ignores SSL_CERT_FILE.
        "SSL_CERT_FILE": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "CURL_CA_BUNDLE": str(bundle),
    }


def _export(shell: str, name: str, value: str) -> str:
    if shell == "fish":
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"set -gx {name} '{escaped}';"
    if shell == "powershell":
        # PowerShell ends a verbatim string on the typographic single quotes too (its
        # language specification, 2.3.5.2); each of them is written twice, as the ASCII one.
        escaped = "".join(c * 2 if c in _POWERSHELL_QUOTES else c for c in value)
        return f"$Env:{name} = '{escaped}'"
    return f"export {name}={shlex.quote(value)}"
