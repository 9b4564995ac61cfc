"""The files of a root being replaced (``devtls ca rotate``), and finishing an interrupted swap.

A rotation writes the new pair beside the old under fixed names (``rootCA-key.pem.rotating``,
``rootCA.pem.rotating``), fully and flushed, then renames the key, then the certificate,
into mkcert's two names. A crash can leave three states, each told apart by what is left:

- both staged files: no rename happened; the old pair is whole. The rotation is undone (the
  staged files removed): its new root may already be in some trust stores, but its key is
  gone with it, so nothing can be signed under it.
- only the staged certificate: the key was renamed, the certificate not. It is renamed now,
  if it matches the key in place (it always does, unless someone edited the folder meanwhile).
- none: nothing to do.

The retired root's certificate is kept as ``rootCA-YYYYMMDD.pem`` (the date of the rotation)
until ``devtls uninstall --old``; its key is not kept: leaves it signed verify without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devtls import _files
from devtls.errors import CAError

CERT_FILE = "rootCA.pem"
KEY_FILE = "rootCA-key.pem"
STAGED_SUFFIX = ".rotating"
ARCHIVE = re.compile(r"^rootCA-(\d{8})(?:-(\d{1,3}))?\.pem$")
MAX_ARCHIVES_PER_DAY = 100

log = logging.getLogger("devtls")


def staged(root: Path, name: str) -> Path:
    return root / (name + STAGED_SUFFIX)


def pending(root: Path) -> bool:
    """Whether an interrupted rotation left files behind (two stats: cheap on every load)."""
    return any(os.path.lexists(staged(root, name)) for name in (CERT_FILE, KEY_FILE))


def finish_interrupted(root: Path) -> str | None:
    """Bring the folder back to one whole pair; the caller holds ``locked_dir(root)``.

    Returns what was done (for a warning), or None when nothing was left over.
    """
    cert_staged, key_staged = staged(root, CERT_FILE), staged(root, KEY_FILE)
    has_cert, has_key = os.path.lexists(cert_staged), os.path.lexists(key_staged)
    try:
        if has_cert and has_key:
            cert_staged.unlink()
            key_staged.unlink()
            current = _read_cert(root / CERT_FILE)
            for archive in archives(root):
                if current is not None and _read_cert(archive) == current:
                    archive.unlink()  # a copy of the root that stays current is no old root
            _files.fsync_dir(root)
            return "undid an interrupted 'devtls ca rotate' (it had not replaced the root yet)"
        if has_cert or has_key:
            staged_file, name = (cert_staged, CERT_FILE) if has_cert else (key_staged, KEY_FILE)
            other = root / (KEY_FILE if has_cert else CERT_FILE)
            if not _pair_matches(*((staged_file, other) if has_cert else (other, staged_file))):
                raise CAError(
                    f"{staged_file} is left from an interrupted 'devtls ca rotate' and does not "
                    f"match {other}",
                    "restore the CA folder from a backup, or move it away to start a new CA",
                )
            os.replace(staged_file, root / name)
            _files.fsync_dir(root)
            return "finished an interrupted 'devtls ca rotate' (the new root is in place)"
    except OSError as exc:
        raise CAError(
            f"cannot finish an interrupted 'devtls ca rotate' in {root}: {exc.strerror}",
            "check the folder's permissions, then run the command again",
        ) from None
    return None


def recover(root: Path) -> None:
    """``finish_interrupted`` under the folder's lock, if anything is left over.

    A rotation running now holds the lock; this waits for it, and then finds nothing to do.
    """
    if not pending(root):
        return
    try:
        with _files.locked_dir(root):
            done = finish_interrupted(root)
    except OSError as exc:
        raise CAError(
            f"cannot open {root} to finish an interrupted 'devtls ca rotate': {exc.strerror}",
            "run the command again as the CA folder's owner",
        ) from None
    if done is not None:
        log.warning("%s in %s", done, root)


def archives(root: Path) -> list[Path]:
    """The retired roots kept in the folder, oldest first."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    found = [(m.group(1), int(m.group(2) or 1), n) for n in names if (m := ARCHIVE.match(n))]
    return [root / name for _, _, name in sorted(found)]


def old_archives(root: Path, current: x509.Certificate) -> list[Path]:
    """``archives`` without copies of the current root (left by a rotation that failed)."""
    return [path for path in archives(root) if _read_cert(path) != current]


def archive_path(root: Path, day: str) -> Path:
    """``rootCA-YYYYMMDD.pem``, else ``-2``, ``-3``... when rotated more than once that day."""
    for index in range(1, MAX_ARCHIVES_PER_DAY + 1):
        name = f"rootCA-{day}.pem" if index == 1 else f"rootCA-{day}-{index}.pem"
        if not os.path.lexists(root / name):
            return root / name
    raise CAError(
        f"{root} already holds {MAX_ARCHIVES_PER_DAY} roots retired today",
        "run 'devtls uninstall --old' first",
    )


def _read_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _pair_matches(cert_path: Path, key_path: Path) -> bool:
    cert = _read_cert(cert_path)
    try:
        key = serialization.load_pem_private_key(
            key_path.read_bytes(), password=None, unsafe_skip_rsa_key_validation=True
        )
    except (OSError, ValueError, TypeError):
        return False
    if cert is None:
        return False
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    with contextlib.suppress(ValueError, TypeError):
        return bool(
            cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)
        )
    return False
