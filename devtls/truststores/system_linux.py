"""The Linux system store: an anchor file plus the distribution's update command.

The family is recognised the way mkcert does it, by the anchors folder that exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from devtls.ca import RootCert
from devtls.errors import TrustStoreError
from devtls.truststores.base import (
    Availability,
    Privileges,
    Runner,
    describe,
    entry_name,
    mkcert_name,
    rerun_command,
    run_command,
)


@dataclass(frozen=True)
class Family:
    name: str
    anchors: Path
    suffix: str
    update: tuple[str, ...]


_UPDATE_CA_CERTIFICATES = ("update-ca-certificates",)
FAMILIES = (
    Family(
        "RHEL/Fedora",
        Path("/etc/pki/ca-trust/source/anchors"),
        ".pem",
        ("update-ca-trust", "extract"),
    ),
    Family(
        "Debian/Ubuntu", Path("/usr/local/share/ca-certificates"), ".crt", _UPDATE_CA_CERTIFICATES
    ),
    Family(
        "Arch",
        Path("/etc/ca-certificates/trust-source/anchors"),
        ".crt",
        ("trust", "extract-compat"),
    ),
    Family("openSUSE", Path("/usr/share/pki/trust/anchors"), ".pem", _UPDATE_CA_CERTIFICATES),
)

# Debian's ca-certificates-java hook copies new anchors into this keystore under
# "debian:<name>.pem" and never removes them again.
DEBIAN_JAVA_KEYSTORE = Path("/etc/ssl/certs/java/cacerts")
DEBIAN_CERTS_DIR = Path("/etc/ssl/certs")


class LinuxSystemStore:
    name = "system"

    def __init__(self, runner: Runner = run_command, root: Path = Path("/")) -> None:
        self.runner = runner
        self.root = root  # tests may point the store at a copy of the file system layout
        self.privileges = Privileges(runner, rerun_command(self.name))
        self.family = next(
            (f for f in FAMILIES if self._path(f.anchors).is_dir()),
            None,
        )

    def _path(self, path: Path) -> Path:
        return self.root / path.relative_to("/")

    def available(self) -> Availability:
        if self.family is None:
            return Availability(
                False, "unknown Linux distribution: no CA anchors folder found (" +
                ", ".join(str(f.anchors) for f in FAMILIES) + ")"
            )  # fmt: skip
        return Availability(True, f"{self.family.name}: {self.family.anchors}")

    def anchor(self, ca: RootCert) -> Path:
        assert self.family is not None
        return self._path(self.family.anchors) / f"{entry_name(ca)}{self.family.suffix}"

    def mkcert_anchor(self, ca: RootCert) -> Path:
        assert self.family is not None
        return self._path(self.family.anchors) / (
            mkcert_name(ca).replace(" ", "_") + self.family.suffix
        )

    def is_installed(self, ca: RootCert) -> bool:
        return any(_holds(path, ca) for path in (self.anchor(ca), self.mkcert_anchor(ca)))

    def plan_install(self, ca: RootCert) -> list[str]:
        if self.is_installed(ca):
            return []
        assert self.family is not None
        return [f"write {self.anchor(ca)} (the root, PEM, 0644)", describe(self.family.update)]

    def install(self, ca: RootCert) -> None:
        if self.is_installed(ca):
            return
        assert self.family is not None
        anchor = self.anchor(ca)
        self.privileges.prefix()  # without the rights, stop before anything is written
        self.privileges.write_file(anchor, ca.cert_pem())
        try:
            self.privileges.run(self.family.update, what="updating the system trust store")
        except TrustStoreError:
            # Never leave an anchor behind that the failed update did not take in.
            self.privileges.remove_file(anchor)
            self.runner([*self.privileges.prefix(), *self.family.update], None)
            raise

    def plan_uninstall(self, ca: RootCert) -> list[str]:
        anchor = self.anchor(ca)
        if not anchor.exists():
            return []
        assert self.family is not None
        steps = [f"remove {anchor}", describe(self.family.update)]
        links = self._debian_links(anchor)
        steps += [f"remove {link} (a link update-ca-certificates leaves behind)" for link in links]
        if self._debian_java_alias_present(anchor):
            steps.append(describe(self._java_delete(anchor)))
        return steps

    def uninstall(self, ca: RootCert) -> None:
        anchor = self.anchor(ca)
        if not anchor.exists():
            return
        assert self.family is not None
        links = self._debian_links(anchor)
        java_alias = self._debian_java_alias_present(anchor)
        self.privileges.remove_file(anchor)
        self.privileges.run(self.family.update, what="updating the system trust store")
        # update-ca-certificates (without --fresh, which would rewrite every other entry)
        # leaves the links to a removed anchor, and the Java hook keeps its copy.
        for link in links:
            if link.is_symlink() and not link.exists():
                self.privileges.remove_file(link)
        self._close_hash_gaps(links)
        if java_alias:
            self.privileges.run(self._java_delete(anchor), what="removing the root from Java")

    def other_copies(self, ca: RootCert) -> list[Path]:
        """Copies of this root that are not ours to remove (mkcert's)."""
        mkcert = self.mkcert_anchor(ca)
        return [mkcert] if _holds(mkcert, ca) else []

    # -- Debian specifics ---------------------------------------------------------------

    def _debian_links(self, anchor: Path) -> list[Path]:
        certs = self._path(DEBIAN_CERTS_DIR)
        if not certs.is_dir():
            return []
        name_link = certs / (anchor.stem + ".pem")
        links = [name_link] if name_link.is_symlink() else []
        for entry in certs.iterdir():
            if entry.is_symlink() and os.readlink(entry) in (name_link.name, str(name_link)):
                links.append(entry)
        return links

    def _close_hash_gaps(self, removed: list[Path]) -> None:
        """Renumber HASH.1, HASH.2... after removing HASH.0: OpenSSL stops at the first gap.

        Roots with the same subject (two devtls CAs of one user) share a hash; taking one
        out must not hide the other from -CApath lookups.
        """
        certs = self._path(DEBIAN_CERTS_DIR)
        for prefix in {link.name.split(".")[0] for link in removed if link.suffix[1:].isdigit()}:
            remaining = sorted(
                (p for p in certs.glob(f"{prefix}.[0-9]*") if p.suffix[1:].isdigit()),
                key=lambda p: int(p.suffix[1:]),
            )
            for index, link in enumerate(remaining):
                wanted = certs / f"{prefix}.{index}"
                if link != wanted and link.is_symlink():
                    target = os.readlink(link)
                    self.privileges.run(["ln", "-s", target, str(wanted)], what="relinking")
                    self.privileges.remove_file(link)

    def _java_alias(self, anchor: Path) -> str:
        return f"debian:{anchor.stem}.pem"

    def _java_delete(self, anchor: Path) -> list[str]:
        return [
            "keytool", "-delete", "-noprompt", "-alias", self._java_alias(anchor),
            "-keystore", str(self._path(DEBIAN_JAVA_KEYSTORE)), "-storepass", "changeit",
        ]  # fmt: skip

    def _debian_java_alias_present(self, anchor: Path) -> bool:
        keystore = self._path(DEBIAN_JAVA_KEYSTORE)
        if not keystore.exists():
            return False
        code, _ = self.runner(
            ["keytool", "-list", "-alias", self._java_alias(anchor), "-keystore", str(keystore),
             "-storepass", "changeit"],
            None,
        )  # fmt: skip
        return code == 0


def _holds(path: Path, ca: RootCert) -> bool:
    """Whether the file holds this very root (compared as DER, not by name)."""
    try:
        return ca.cert in x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return False
