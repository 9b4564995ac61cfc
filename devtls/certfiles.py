"""What ``devtls cert`` does: check the request, load or create the CA, issue, write the files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devtls._x509 import KeyType
from devtls.ca import LocalCA
from devtls.errors import UsageError
from devtls.issue import LeafCert, check_days, issue_leaf, sign_csr
from devtls.names import default_file_names, parse_names, wildcard_warnings


@dataclass(frozen=True)
class CertRequest:
    """What ``devtls cert`` was asked for; None for a file means mkcert's default name."""

    names: tuple[str, ...] = ()
    key_type: KeyType = "rsa"
    client: bool = False
    pkcs12: bool = False
    pkcs12_legacy: bool = False
    csr_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    p12_file: Path | None = None
    days: int | None = None


@dataclass(frozen=True)
class CertResult:
    leaf: LeafCert
    ca: LocalCA
    ca_created: bool
    files: tuple[Path, ...]
    warnings: tuple[str, ...]


def make_cert_files(request: CertRequest, caroot: Path | None = None) -> CertResult:
    """Everything ``devtls cert`` does: validate, load or create the CA, issue, write."""
    # Validate all input before the CA is created or anything is written.
    check_days(request.days)
    if request.csr_file is not None:
        if request.names:
            raise UsageError("NAMEs cannot be given with --csr", "the names come from the CSR")
        if request.pkcs12 or request.pkcs12_legacy:
            raise UsageError("--pkcs12 cannot be used with --csr", "devtls does not hold its key")
        try:
            csr_pem = request.csr_file.read_bytes()
        except OSError as exc:
            raise UsageError(
                f"cannot read the CSR {request.csr_file}: {exc.strerror}",
                "give the path of a CSR file (PEM or DER), e.g. made with openssl req -new",
            ) from None
        names = []
    else:
        names = parse_names(list(request.names))
    ca, created = LocalCA.load_or_create(caroot)
    if request.csr_file is not None:
        leaf = sign_csr(ca, csr_pem, client=request.client, days=request.days)
        names = list(leaf.names)
    else:
        leaf = issue_leaf(
            ca, names, key_type=request.key_type, client=request.client, days=request.days
        )
    defaults = default_file_names(names, client=request.client)
    written: list[Path]
    if request.pkcs12 or request.pkcs12_legacy:
        p12_file = request.p12_file or Path(defaults.p12)
        leaf.write_pkcs12(p12_file, legacy=request.pkcs12_legacy)
        written = [p12_file]
    else:
        cert_file = request.cert_file or Path(defaults.cert)
        key_file = None if leaf.key is None else request.key_file or Path(defaults.key)
        leaf.write_pem(cert_file, key_file)
        written = [cert_file] + ([key_file] if key_file else [])
    return CertResult(leaf, ca, created, tuple(written), tuple(wildcard_warnings(names)))
