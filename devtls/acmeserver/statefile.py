"""The file acme-server's accounts and revoked keys live in, between runs (saved.py's bytes).

One file per listening address, in the CA's folder: ``CAROOT/acme-server/HOST-PORT.json``.
Account URLs hold the address, so the accounts of ``127.0.0.1:14000`` mean nothing at another
one, and two servers on one CA never write each other's file. With port 0 the address changes
at every start, and nothing is saved.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable
from pathlib import Path

from devtls._files import NotRegularFileError, ensure_private_dir, read_regular_file, write_atomic
from devtls.acmeserver import saved
from devtls.acmeserver.state import Store
from devtls.config import Address

FOLDER = "acme-server"


def state_path(caroot: Path, listen: Address) -> Path | None:
    if listen.port == 0:
        return None
    host = re.sub(r"[^A-Za-z0-9.-]", "_", listen.host or "any")
    return caroot / FOLDER / f"{host}-{listen.port}.json"


class StateFile:
    def __init__(self, path: Path | None, write_log: Callable[[str], None]) -> None:
        self.path = path
        self.write_log = write_log
        self.saved_revision = 0
        self._failing = False

    def describe(self) -> str:
        if self.path is None:
            return "accounts live in memory only (port 0 changes the address at every start)"
        return f"accounts and revoked keys are kept in {self.path}; orders live in memory"

    def load(self, store: Store) -> None:
        """Fill ``store`` from the file, if there is one; a file that cannot be used is moved
        aside (kept, for a look) and the server starts with no accounts."""
        if self.path is None:
            return
        if self.path.is_symlink():  # written over at the next save: said now, and kept
            self._set_aside("it is a symbolic link")
            return
        try:
            data = read_regular_file(self.path, saved.MAX_SAVED_BYTES)
        except FileNotFoundError:
            return
        except NotRegularFileError as exc:
            self._set_aside(f"it is {exc.kind}, not a regular file")
            return
        except OSError as exc:
            self._set_aside(exc.strerror or str(exc))
            return
        try:
            saved.load(store, data, dt.datetime.now(dt.timezone.utc))
        except saved.SavedStateError as exc:
            self._set_aside(str(exc))
            return
        self.saved_revision = store.revision
        self.write_log(f"{len(store.accounts)} accounts read from {self.path}")

    def save_if_changed(self, store: Store) -> None:
        if self.path is None or store.revision == self.saved_revision:
            return
        try:
            ensure_private_dir(self.path.parent)
            write_atomic(self.path, saved.dump(store), 0o600)
        except OSError as exc:
            if not self._failing:  # said once, not at every request
                self.write_log(
                    f"cannot save the accounts to {self.path} ({exc.strerror or exc}); "
                    "they live in memory until it can"
                )
            self._failing = True
            return
        self._failing = False
        self.saved_revision = store.revision

    def _set_aside(self, reason: str) -> None:
        assert self.path is not None
        aside = self.path.with_name(self.path.name + ".bad")
        try:
            os.replace(self.path, aside)
            kept = f"moved to {aside}"
        except OSError:
            kept = "left as it is"
        self.write_log(f"cannot use {self.path}: {reason}; {kept}, and no accounts are known")
