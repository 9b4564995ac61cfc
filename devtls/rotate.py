"""``devtls ca rotate`` and ``devtls uninstall --old``: replace the root, move trust, retire it.

The new root takes mkcert's two file names, so every tool reading CAROOT uses it from then on;
the old certificate stays as ``rootCA-YYYYMMDD.pem`` (see devtls.castaging for the files and
for what a crash leaves). Trust moves store by store: the new root is installed in exactly the
stores that trusted the old one (asked before anything changes), and the old one stays trusted
there, so the leaves it signed keep working until ``uninstall --old``.

Order, so that no moment leaves a CA that clients reject or a folder that cannot be loaded:
copy the old certificate to its archive name; write the new pair under staged names; install
the new root in the stores (if one fails, undo it all: the old root stays as it was); rename
the key, then the certificate, into place.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from devtls import _files, castaging
from devtls.ca import CERT_FILE, KEY_FILE, LocalCA, RootCert, resolve_caroot
from devtls.errors import CAError, DevtlsError, TrustStoreError
from devtls.trust import StoreOutcome, apply_to_store, refresh_bundle
from devtls.truststores import TrustStore, select


@dataclass
class Rotation:
    old: RootCert  # as archived
    new: LocalCA
    # Stores that trusted the old root and now trust the new one too.
    outcomes: list[StoreOutcome]
    # Stores where the old root was not trusted: left alone.
    untouched: list[StoreOutcome] = field(default_factory=list)


def rotate(caroot: Path | None = None, *, now: dt.datetime | None = None) -> Rotation:
    """Replace the root in ``caroot``; TrustStoreError (and nothing changed) if a store fails."""
    root = caroot or resolve_caroot()
    now = now or dt.datetime.now(dt.timezone.utc)
    LocalCA.load(root)  # a missing or broken CA is its own one-line error, before the lock
    with _files.locked_dir(root):
        castaging.finish_interrupted(root)
        old = LocalCA.load(root, recover=False)
        stores = select(())
        trusted, untouched = _where_trusted(stores, old)
        new = LocalCA.generate(
            "rsa" if isinstance(old.key, rsa.RSAPrivateKey) else "ecdsa",
            constraints=old.constraints,
            label=f"{now:%Y-%m-%d %H:%M}",
        )
        archive = castaging.archive_path(root, f"{now:%Y%m%d}")
        cert_staged = castaging.staged(root, CERT_FILE)
        key_staged = castaging.staged(root, KEY_FILE)
        # The store tools import the new root from its staged file until it is renamed.
        staged_ca = LocalCA(new.cert, new.key, root, cert_path=cert_staged)
        try:
            _write(archive, old.cert_pem(), _files.PUBLIC_MODE)
            _write(key_staged, new.key_pem(), _files.SECRET_MODE)
            _write(cert_staged, new.cert_pem(), _files.PUBLIC_MODE)
            outcomes = [apply_to_store(store, staged_ca, "install") for store in trusted]
            failed = [o for o in outcomes if o.failed]
            if failed:
                raise TrustStoreError(
                    f"the root was not rotated: {failed[0].store}: {failed[0].detail}",
                    "fix that store (or leave it out with TRUST_STORES) and run "
                    "'devtls ca rotate' again",
                )
        except BaseException:
            # Back to where it was: the old root alone, in the folder and in the stores.
            for store in trusted:
                apply_to_store(store, staged_ca, "uninstall")
            for path in (cert_staged, key_staged, archive):
                path.unlink(missing_ok=True)
            raise
        try:
            os.replace(key_staged, root / KEY_FILE)
            os.replace(cert_staged, root / CERT_FILE)
            _files.fsync_dir(root)
        except OSError as exc:
            raise CAError(
                f"cannot put the new root in place in {root}: {exc.strerror}",
                "run 'devtls status': the next command finishes or undoes the rotation",
            ) from None
    new.path = root
    refresh_bundle(new)  # devtls env's bundle: the new root beside the old ones
    return Rotation(RootCert(old.cert, root, archive), new, outcomes, untouched)


def _where_trusted(
    stores: list[TrustStore], old: LocalCA
) -> tuple[list[TrustStore], list[StoreOutcome]]:
    trusted: list[TrustStore] = []
    untouched: list[StoreOutcome] = []
    for store in stores:
        availability = store.available()
        if not availability.available:
            untouched.append(StoreOutcome(store.name, "skipped", availability.reason))
            continue
        try:
            installed = store.is_installed(old)
        except DevtlsError as exc:
            untouched.append(StoreOutcome(store.name, "skipped", str(exc)))
            continue
        if installed:
            trusted.append(store)
        else:
            untouched.append(
                StoreOutcome(store.name, "skipped", "the old root was not trusted there")
            )
    return trusted, untouched


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        _files.write_atomic(path, data, mode)
    except OSError as exc:
        raise CAError(
            f"cannot write {path}: {exc.strerror}; the root was not rotated",
            "free some space or fix the folder's permissions, then try again",
        ) from None


# -- retiring the old roots ----------------------------------------------------------------


@dataclass
class Retired:
    archive: Path
    outcomes: list[StoreOutcome]
    deleted: bool


def old_roots(caroot: Path | None = None) -> list[RootCert]:
    """The kept roots of earlier rotations (never the current one)."""
    root = caroot or resolve_caroot()
    current = LocalCA.load(root)
    found: list[RootCert] = []
    for path in castaging.old_archives(root, current.cert):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            raise CAError(
                f"{path} is not a PEM certificate", "delete it if it is not a root you trust"
            ) from None
        found.append(RootCert(cert, root, path))
    return found


def uninstall_old(
    requested: tuple[str, ...] = (), *, dry_run: bool = False, caroot: Path | None = None
) -> list[Retired]:
    """Take every old root out of the stores; delete its file once no store failed.

    With ``--store`` the files stay (other stores may still hold them).
    """
    retired: list[Retired] = []
    explicit = bool(requested) or bool(os.environ.get("TRUST_STORES"))
    for old in old_roots(caroot):
        outcomes = [
            apply_to_store(store, old, "uninstall", dry_run=dry_run, explicit=explicit)
            for store in select(requested)
        ]
        delete = not dry_run and not requested and not any(o.failed for o in outcomes)
        assert old.cert_path is not None
        if delete:
            old.cert_path.unlink(missing_ok=True)
        retired.append(Retired(old.cert_path, outcomes, delete))
    if any(r.deleted for r in retired):
        refresh_bundle(LocalCA.load(caroot))
    return retired
