"""Leaf certificates signed by the local CA: the profile, PEM and PKCS#12 output, SSL contexts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devtls import _files
from devtls._x509 import MAX_COMMON_NAME, KeyType, random_serial, signing_hash, user_and_host
from devtls.errors import IssueError, UsageError
from devtls.names import Name, NameKind, parse_names

if TYPE_CHECKING:
    import ssl

    from devtls.ca import LocalCA

# Apple (https://support.apple.com/en-us/102028) rejects TLS server certificates valid for
# more than 825 days, also under private roots; browsers follow the same rule. mkcert stays
# just under it; devtls uses the limit itself as the default and the maximum.
MAX_LEAF_DAYS = 825
DEFAULT_LEAF_DAYS = MAX_LEAF_DAYS
# Clocks of VMs and containers drift; a leaf that starts a little earlier is not refused
# for being "not yet valid". The lifetime is counted from this earlier start.
NOT_BEFORE_SLACK = dt.timedelta(hours=1)
LEAF_RSA_BITS = 2048
PKCS12_PASSWORD = b"changeit"  # mkcert's, and Java's default keystore password
# Mozilla's "intermediate" profile (https://wiki.mozilla.org/Security/Server_Side_TLS):
# AEAD suites only, forward secrecy only; TLS 1.3 suites are always AEAD.
MOZILLA_INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    ]
)

LeafKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class LeafCert:
    """An issued certificate, its key (absent when a CSR was signed) and the CA that signed it."""

    cert: x509.Certificate
    key: LeafKey | None
    ca_cert: x509.Certificate
    names: tuple[Name, ...]

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self._key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def pkcs12(self, *, legacy: bool = False, password: bytes = PKCS12_PASSWORD) -> bytes:
        """PKCS#12 with the key, the leaf and the CA.

        The default encoding (PBES2, AES-256, SHA-256 MAC) opens in OpenSSL 3, Node >= 17
        and Java >= 8u301 without flags; ``legacy`` gives mkcert's 3DES/SHA-1 encoding for
        older Windows and Java.
        """
        from cryptography.hazmat.primitives.serialization import pkcs12

        if legacy:
            encryption = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                .hmac_hash(hashes.SHA1())  # noqa: S303 - the point of the legacy encoding
                .build(password)
            )
        else:
            encryption = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                .hmac_hash(hashes.SHA256())
                .build(password)
            )
        friendly = str(self.names[0]).encode() if self.names else None
        return pkcs12.serialize_key_and_certificates(
            friendly, self._key(), self.cert, [self.ca_cert], encryption
        )

    def write_pem(
        self, cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str] | None
    ) -> None:
        """Write the certificate (0644) and, if there is one, the key (0600): both or neither.

        A full disk or any other failure leaves neither file (and an older pair as it was):
        never a key without its certificate.
        """
        cert_path = Path(cert_file)
        if key_file is None or self.key is None:
            cert_pem = self.cert_pem()
            _write(
                str(cert_path),
                lambda: _files.write_atomic(cert_path, cert_pem, _files.PUBLIC_MODE),
            )
            return
        key_path = Path(key_file)
        _write(
            f"{cert_path} and {key_path}",
            lambda: _files.write_new_pair(
                (cert_path, self.cert_pem(), _files.PUBLIC_MODE),
                (key_path, self.key_pem(), _files.SECRET_MODE),
            ),
        )

    def write_pkcs12(self, p12_file: str | os.PathLike[str], *, legacy: bool = False) -> None:
        """Write the PKCS#12 file 0600: it holds the private key."""
        p12_path = Path(p12_file)
        data = self.pkcs12(legacy=legacy)
        _write(str(p12_path), lambda: _files.write_atomic(p12_path, data, _files.SECRET_MODE))

    def server_context(self) -> ssl.SSLContext:
        """A server SSLContext serving this leaf: TLS 1.2+, Mozilla intermediate suites."""
        return server_context_from_pem(self.cert_pem(), self.key_pem())

    def client_context(self) -> ssl.SSLContext:
        """A client SSLContext that trusts the CA and presents this leaf (mutual TLS): issue
        it with ``client=True``, so it carries the clientAuth usage servers ask for."""
        import ssl

        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca_pem().decode())
        _load_pair(context, self.cert_pem(), self.key_pem())
        return context

    def _key(self) -> LeafKey:
        if self.key is None:
            raise IssueError("this certificate was issued for a CSR; its key is not here")
        return self.key


def server_tls_context() -> ssl.SSLContext:
    """A server SSLContext with devtls's protocol floor and cipher suites, no certificate yet."""
    # Imported here, not at the top: `devtls cert` starts faster without ssl.
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(MOZILLA_INTERMEDIATE_CIPHERS)
    # No client-initiated renegotiation (a CPU-exhaustion vector), no TLS compression (CRIME).
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    )
    return context


def server_context_from_pem(chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context (devtls's TLS profile) for a PEM chain and key held in memory."""
    context = server_tls_context()
    _load_pair(context, chain_pem, key_pem)
    return context


def _load_pair(context: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="devtls-") as tmp:
        # The ssl module loads keys only from files; the folder is private to this user.
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        _files.write_atomic(cert_file, chain_pem, _files.PUBLIC_MODE)
        _files.write_atomic(key_file, key_pem, _files.SECRET_MODE)
        context.load_cert_chain(cert_file, key_file)


def _write(what: str, write: Callable[[], None]) -> None:
    try:
        write()
    except OSError as exc:
        raise IssueError(
            f"cannot write {what}: {exc.strerror or exc}; nothing was written",
            "choose a folder you can write to (--cert-file/--key-file/--p12-file), or free space",
        ) from None


def check_days(days: int | None) -> int:
    if days is None:
        return DEFAULT_LEAF_DAYS
    if not 1 <= days <= MAX_LEAF_DAYS:
        raise UsageError(
            f"--days {days} is out of range",
            f"use 1 to {MAX_LEAF_DAYS}: Apple and browsers reject longer-lived TLS certificates",
        )
    return days


def generate_leaf_key(key_type: KeyType) -> LeafKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=LEAF_RSA_BITS)
    raise UsageError(f"unknown key type {key_type!r}", "use 'rsa' or 'ecdsa'")


def issue_leaf(
    ca: LocalCA,
    names: list[str] | list[Name],
    *,
    key_type: KeyType = "rsa",
    client: bool = False,
    days: int | None = None,
    now: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> LeafCert:
    """Issue a leaf for ``names`` with mkcert's profile (see README for the details).

    ``not_before``/``not_after`` set the validity exactly (``days`` then only applies to the
    end left open); dates in the past give an expired or not-yet-valid leaf, for tests of
    clients that must refuse one.
    """
    parsed = parse_names([str(n) for n in names])
    lifetime = check_days(days)
    ca.check_usable(now)
    validity = _validity(ca, lifetime, now, not_before, not_after)
    key = generate_leaf_key(key_type)
    subject = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devtls development certificate"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, user_and_host()[:MAX_COMMON_NAME]),
    ]
    cert = _sign(ca, x509.Name(subject), key.public_key(), parsed, client=client, validity=validity)
    return LeafCert(cert, key, ca.cert, tuple(parsed))


def _validity(
    ca: LocalCA,
    days: int,
    now: dt.datetime | None,
    not_before: dt.datetime | None,
    not_after: dt.datetime | None,
) -> tuple[dt.datetime, dt.datetime]:
    if not_before is None and not_after is None:
        start = (now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0) - NOT_BEFORE_SLACK
        return start, min(start + dt.timedelta(days=days), ca.cert.not_valid_after_utc)
    lifetime = dt.timedelta(days=days)
    if not_before is None:
        assert not_after is not None
        not_before = not_after - lifetime
    if not_after is None:
        not_after = not_before + lifetime
    if not_before.tzinfo is None or not_after.tzinfo is None:
        raise UsageError(
            "not_before and not_after must be aware datetimes",
            "give a time zone, e.g. datetime.now(timezone.utc)",
        )
    if not_after <= not_before:
        raise UsageError("not_after must come after not_before", "swap or fix the two dates")
    if not_after - not_before > dt.timedelta(days=MAX_LEAF_DAYS):
        raise UsageError(
            f"the validity is longer than {MAX_LEAF_DAYS} days",
            "Apple and browsers reject longer-lived TLS certificates; shorten it",
        )
    return not_before.replace(microsecond=0), min(not_after, ca.cert.not_valid_after_utc)


def sign_csr(
    ca: LocalCA,
    csr_pem: bytes,
    *,
    client: bool = False,
    days: int | None = None,
    now: dt.datetime | None = None,
    common_name_only: bool = False,
) -> LeafCert:
    """Sign a CSR: its signature must verify; names come from its subjectAltName (else its CN).

    Only the names, the subject and the public key are taken from the CSR; extensions it asks
    for (a CA flag, say) are not copied, so a CSR cannot turn into a CA certificate. With
    ``common_name_only`` the subject keeps its common name alone: what an ACME order
    validated says nothing of the organisation or country a CSR may claim.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        try:
            csr = x509.load_der_x509_csr(csr_pem)
        except ValueError:
            raise IssueError(
                "the CSR is neither PEM nor DER", "pass a file made by 'openssl req -new'"
            ) from None
    if not csr.is_signature_valid:
        raise IssueError("the CSR's signature does not verify", "create the CSR again")
    lifetime = check_days(days)
    ca.check_usable(now)
    names = _csr_names(csr)
    public_key = csr.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise IssueError(
            f"the CSR holds a {type(public_key).__name__}", "use an RSA or ECDSA key in the CSR"
        )
    subject = csr.subject if len(csr.subject) else x509.Name([])
    if common_name_only:
        subject = x509.Name(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[:1])
    validity = _validity(ca, lifetime, now, None, None)
    cert = _sign(ca, subject, public_key, names, client=client, validity=validity)
    return LeafCert(cert, None, ca.cert, tuple(names))


def _csr_names(csr: x509.CertificateSigningRequest) -> list[Name]:
    texts: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except ValueError as exc:
        raise IssueError(f"the CSR has malformed extensions: {exc}") from None
    if san is not None:
        for general_name in san:
            if isinstance(general_name, x509.IPAddress):
                texts.append(str(general_name.value))
            elif isinstance(
                general_name, x509.DNSName | x509.RFC822Name | x509.UniformResourceIdentifier
            ):
                texts.append(general_name.value)
            else:
                raise IssueError(
                    f"the CSR asks for a {type(general_name).__name__}, "
                    "which devtls does not issue",
                    "request DNS names, IPs, emails or URIs",
                )
    else:
        common_names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        texts = [str(attr.value) for attr in common_names]
    if not texts:
        raise IssueError(
            "the CSR requests no names", "add them as subjectAltName (openssl req -addext ...)"
        )
    return parse_names(texts)


def _general_name(name: Name) -> x509.GeneralName:
    if name.kind is NameKind.IP:
        return x509.IPAddress(ipaddress.ip_address(name.value))
    if name.kind is NameKind.EMAIL:
        return x509.RFC822Name(name.value)
    if name.kind is NameKind.URI:
        return x509.UniformResourceIdentifier(name.value)
    return x509.DNSName(name.value)


def _sign(
    ca: LocalCA,
    subject: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    names: list[Name],
    *,
    client: bool,
    validity: tuple[dt.datetime, dt.datetime],
) -> x509.Certificate:
    constraints = ca.constraints
    if constraints is not None:
        # Before signing: a leaf the root's own constraints forbid is refused by every client.
        constraints.check(names)
    start, end = validity
    usages = []
    if any(n.kind is not NameKind.EMAIL for n in names):
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if any(n.kind is NameKind.EMAIL for n in names):
        usages.append(ExtendedKeyUsageOID.EMAIL_PROTECTION)
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # RSA key transport (S/MIME, old TLS) needs it; ECDSA keys must not carry it.
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]),
            # RFC 5280 4.2.1.6: critical when the subject is empty.
            critical=len(subject) == 0,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(ca), critical=False)
    )
    return builder.sign(ca.key, signing_hash(ca.key))


def _authority_key_id(ca: LocalCA) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
