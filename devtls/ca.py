"""The local root CA: where it lives, loading one (mkcert's or ours), creating one.

The folder layout is mkcert's CAROOT: ``rootCA.pem`` and ``rootCA-key.pem`` and
nothing else, so devtls and mkcert can share one CA.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from devtls import _files, castaging
from devtls._x509 import (
    MAX_COMMON_NAME,
    CAKey,
    KeyType,
    random_serial,
    signing_hash,
    user_and_host,
)
from devtls.errors import CAError

if TYPE_CHECKING:
    import ssl

    from devtls.constraints import NameConstraints
    from devtls.issue import LeafCert

CERT_FILE = castaging.CERT_FILE
KEY_FILE = castaging.KEY_FILE
# The key type of mkcert's root, so every client that accepts an mkcert root accepts ours.
CA_RSA_BITS = 3072
CA_VALIDITY_YEARS = 10


def _folder(path: str | os.PathLike[str] | None) -> Path:
    # Scripts pass a str as often as a Path; both mean the same folder.
    return resolve_caroot() if path is None else Path(path)


def resolve_caroot() -> Path:
    """``$CAROOT`` if set (mkcert reads the same variable), else the user data dir for devtls."""
    env = os.environ.get("CAROOT")
    if env:
        return Path(env).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_data_dir("devtls", appauthor=False)).absolute()


class RootCert:
    """A root certificate and where it is on disk: what a trust store needs (no key)."""

    def __init__(
        self, cert: x509.Certificate, path: Path | None = None, cert_path: Path | None = None
    ) -> None:
        self.cert = cert
        self.path = path
        self._cert_path = cert_path

    @property
    def cert_path(self) -> Path | None:
        """The file store tools import: rootCA.pem, unless this root lives in another file."""
        if self._cert_path is not None:
            return self._cert_path
        return self.path / CERT_FILE if self.path is not None else None

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint_sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex().upper()

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    @property
    def serial_number(self) -> int:
        return self.cert.serial_number

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    @property
    def constraints(self) -> NameConstraints | None:
        """The name constraints the root carries, None for an unconstrained (mkcert) root."""
        from devtls.constraints import from_certificate

        return from_certificate(self.cert)


class LocalCA(RootCert):
    """A root CA that can sign leaves: its certificate, its key, and the folder it came from."""

    def __init__(
        self,
        cert: x509.Certificate,
        key: CAKey,
        path: Path | None = None,
        cert_path: Path | None = None,
    ) -> None:
        super().__init__(cert, path, cert_path)
        self.key = key

    # -- construction -------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, recover: bool = True) -> LocalCA:
        """Load the CA in ``path`` (default: CAROOT); CAError names the file that is wrong.

        An interrupted ``devtls ca rotate`` is finished (or undone) first, unless ``recover``
        is False (the rotation itself, which holds the folder's lock and did that already).
        """
        root = _folder(path)
        if recover:
            castaging.recover(root)
        state = _folder_state(root)
        if state == "missing":
            raise CAError(f"no CA in {root}", "run 'devtls install' or 'devtls cert' to create one")
        try:
            return _load_pair(root)
        except CAError:
            if not recover:
                raise
            # Read while a rotation renamed the pair (the old certificate, the new key): once
            # more, after it is done; a folder that is really broken fails the same way again.
            castaging.recover(root)
            return _load_pair(root)

    @classmethod
    def load_or_create(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        constraints: NameConstraints | None = None,
    ) -> tuple[LocalCA, bool]:
        """Load the CA in ``path``, creating it first if the folder holds none.

        Returns the CA and whether it was created now. Two processes racing here end
        up with the same CA: creation happens under a lock on the folder. ``constraints``
        go into a CA created now; an existing CA is never changed (CAError instead).
        """
        root = _folder(path)
        castaging.recover(root)
        if _folder_state(root) == "complete":
            if constraints is not None:
                raise _constrain_existing(root)
            return _load_pair(root), False
        try:
            _files.ensure_private_dir(root)
        except OSError as exc:
            raise CAError(
                f"cannot create the CA folder {root}: {exc.strerror}",
                "set CAROOT to a folder you can write to",
            ) from None
        # A folder others can write to is refused before a CA is created in it, too.
        _close_dir(_open_folder(root))
        with _files.locked_dir(root):
            if _folder_state(root) == "complete":
                if constraints is not None:
                    raise _constrain_existing(root)
                return _load_pair(root), False
            ca = cls.generate(constraints=constraints)
            ca.path = root
            try:
                _files.write_new_pair(
                    (root / KEY_FILE, ca.key_pem(), _files.SECRET_MODE),
                    (root / CERT_FILE, ca.cert_pem(), _files.PUBLIC_MODE),
                    overwrite=False,  # a CA made meanwhile by mkcert is never replaced
                )
            except FileExistsError:
                raise CAError(
                    f"another program created a CA in {root} while devtls was creating one",
                    "run the command again to use it",
                ) from None
            except OSError as exc:
                raise CAError(
                    f"cannot write the CA into {root}: {exc.strerror}",
                    "free some space or fix the folder's permissions, then try again",
                ) from None
            return ca, True

    @classmethod
    def generate(
        cls,
        key_type: KeyType = "rsa",
        *,
        owner: str | None = None,
        constraints: NameConstraints | None = None,
        label: str = "",
    ) -> LocalCA:
        """A new root in memory, with the profile of mkcert's root (RSA 3072 unless asked).

        ``constraints`` add a critical nameConstraints extension (RFC 5280 4.2.1.10).
        ``label`` ends the common name: a rotated root gets a subject of its own, so the old
        and the new one never share a subject (OpenSSL's hashed lookups, issuer matching).
        """
        key: CAKey
        if key_type == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=CA_RSA_BITS)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        owner = owner or user_and_host()
        suffix = f" {label}" if label else ""
        common_name = f"devtls {owner}"[: MAX_COMMON_NAME - len(suffix)] + suffix
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devtls development CA"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, owner[:MAX_COMMON_NAME]),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        public_key = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public_key)
            .serial_number(random_serial())
            .not_valid_before(now)
            .not_valid_after(_add_years(now, CA_VALIDITY_YEARS))
            # pathlen 0, as mkcert: leaves are signed by the root directly.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        if constraints is not None:
            # Critical: a client that cannot enforce them must refuse the root, not ignore them.
            builder = builder.add_extension(constraints.extension(), critical=True)
        return cls(builder.sign(key, signing_hash(key)), key)

    @classmethod
    def ephemeral(cls, key_type: KeyType = "ecdsa") -> LocalCA:
        """A throwaway CA that lives only in memory, for tests and scripts."""
        return cls.generate(key_type, owner="ephemeral")

    # -- what it is -----------------------------------------------------------------------

    def key_pem(self) -> bytes:
        """The key as unencrypted PKCS#8 PEM, the format mkcert writes and reads."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def check_usable(self, now: dt.datetime | None = None) -> None:
        """Raise CAError if the root cannot sign anything a client would accept today."""
        now = now or dt.datetime.now(dt.timezone.utc)
        where = self.path / CERT_FILE if self.path else "the CA certificate"
        if now >= self.cert.not_valid_after_utc:
            raise CAError(
                f"{where} expired on {self.cert.not_valid_after_utc:%Y-%m-%d}",
                "run 'devtls ca rotate' for a new root (trusted where this one was)",
            )
        if now < self.cert.not_valid_before_utc:
            raise CAError(
                f"{where} is not valid until {self.cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                "check this machine's clock",
            )

    # -- using it -------------------------------------------------------------------------

    def issue(
        self,
        *names: str,
        key_type: KeyType = "rsa",
        client: bool = False,
        days: int | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> LeafCert:
        """Issue a leaf for ``names`` (hosts, IPs, emails, URIs); see devtls.issue.issue_leaf."""
        from devtls.issue import issue_leaf

        return issue_leaf(
            self,
            list(names),
            key_type=key_type,
            client=client,
            days=days,
            not_before=not_before,
            not_after=not_after,
        )

    def client_context(self) -> ssl.SSLContext:
        """An SSLContext for clients that trusts this CA (and only it)."""
        import ssl  # not at the top: `devtls cert` starts faster without it

        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.load_verify_locations(cadata=self.cert_pem().decode("ascii"))
        return context


def _constrain_existing(root: Path) -> CAError:
    return CAError(
        f"{root} already holds a CA; --constrain only applies to a new one (it was not changed)",
        "run 'devtls uninstall' and move that folder away (or set CAROOT) to create a new CA",
    )


def _add_years(moment: dt.datetime, years: int) -> dt.datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _folder_state(root: Path) -> Literal["missing", "complete"]:
    # lexists: a dangling symlink is reported as what it is when it is read, not as missing.
    has_cert = os.path.lexists(root / CERT_FILE)
    has_key = os.path.lexists(root / KEY_FILE)
    if has_cert and has_key:
        return "complete"
    if not has_cert and not has_key:
        return "missing"
    present, absent = (CERT_FILE, KEY_FILE) if has_cert else (KEY_FILE, CERT_FILE)
    raise CAError(
        f"the CA folder {root} holds {present} but not {absent}",
        f"restore {absent} from a backup, or move the folder away to start a new CA",
    )


def _open_folder(root: Path) -> int | None:
    try:
        return _files.open_checked_dir(root)
    except _files.UnsafeFileError as exc:
        raise CAError(exc.message, exc.hint) from None
    except OSError as exc:
        raise CAError(
            f"cannot open the CA folder {root}: {exc.strerror}",
            "check the folder's owner and permissions",
        ) from None


def _close_dir(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _read(root: Path, name: str, dir_fd: int | None) -> tuple[bytes, int]:
    """A CA file, read as ssh reads its keys (StrictModes): see _files.read_checked_file.

    The folder may be a symlink (CAROOT on another disk is common); the key may not: it is
    read only from a regular file in the folder that was checked.
    """
    is_key = name == KEY_FILE
    try:
        return _files.read_checked_file(
            root,
            name,
            dir_fd,
            fix_mode="600" if is_key else "644",
            follow_symlinks=not is_key,
        )
    except _files.UnsafeFileError as exc:
        raise CAError(exc.message, exc.hint) from None
    except OSError as exc:
        raise CAError(
            f"cannot read {root / name}: {exc.strerror}", "check the file's owner and permissions"
        ) from None


def _load_pair(root: Path) -> LocalCA:
    cert_path, key_path = root / CERT_FILE, root / KEY_FILE
    dir_fd = _open_folder(root)
    try:
        cert = _parse_ca_cert(cert_path, _read(root, CERT_FILE, dir_fd)[0])
        key_data, key_mode = _read(root, KEY_FILE, dir_fd)
    finally:
        _close_dir(dir_fd)
    key = _parse_ca_key(key_path, key_data)
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise CAError(
            f"{key_path} does not match {cert_path} (it is the key of another certificate)",
            "restore the matching pair, or move the folder away to start a new CA",
        )
    _warn_if_key_exposed(key_path, key_mode)
    return LocalCA(cert, key, root)


def _parse_ca_cert(path: Path, data: bytes) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CAError(
            f"{path} is not a PEM certificate", "restore it, or move the folder away"
        ) from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    except ValueError:
        raise CAError(f"{path} has malformed extensions", "restore it from a backup") from None
    if constraints is None or not constraints.ca:
        raise CAError(
            f"{path} is not a CA certificate (basicConstraints CA:TRUE missing)",
            "point CAROOT at a folder that holds a root CA",
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise CAError(
            f"{path} is not allowed to sign certificates (keyUsage lacks keyCertSign)",
            "point CAROOT at a folder that holds a root CA",
        )
    return cert


def _parse_ca_key(path: Path, data: bytes) -> CAKey:
    try:
        # Our own key file: the full RSA consistency check costs ~170 ms per process for
        # nothing, since a damaged key is caught below by comparing it with the certificate.
        key = serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=True
        )
    except TypeError:
        raise CAError(
            f"{path} is encrypted",
            "devtls and mkcert need an unencrypted PKCS#8 key (openssl pkcs8 -topk8 -nocrypt)",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise CAError(
            f"{path} is not a PEM private key", "restore it, or move the folder away"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CAError(
            f"{path} holds a {type(key).__name__}, which devtls cannot sign with",
            "use an RSA or ECDSA CA key",
        )
    return key


def _spki(public_key: object) -> bytes:
    assert isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _warn_if_key_exposed(key_path: Path, mode: int) -> None:
    """A key others can read is used, with a warning (writable ones were refused already).

    A warning, not ssh's refusal: mkcert never checks the mode, so mkcert users copy CA folders
    with a loose umask (backups, Docker volumes) and expect them to work; refusing would not
    make the key secret again, only stop the user. Writing, which would let someone else swap
    the key, is refused.
    """
    if os.name != "posix":  # pragma: no cover - Windows modes do not mean this
        return
    if mode & 0o077:
        import logging  # only for this rare warning: `devtls cert` starts faster without it

        logging.getLogger("devtls").warning(
            "%s is readable by other users (mode %04o); run: chmod 600 %s",
            key_path,
            mode,
            key_path,
        )
