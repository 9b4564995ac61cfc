"""What a challenge response must be (RFC 8555 8.3, RFC 8737, RFC 8738): pure checks.

The network side (validate.py) fetches the http-01 body or the tls-alpn-01 certificate and
hands them here; each check returns nothing or raises AcmeProblem saying what was wrong.
"""

from __future__ import annotations

import hashlib
import ipaddress

from cryptography import x509

from devtls.acmeserver.allowlist import Identifier
from devtls.acmeserver.problems import AcmeProblem

HTTP01 = "http-01"
TLS_ALPN01 = "tls-alpn-01"
CHALLENGE_TYPES = (HTTP01, TLS_ALPN01)
ACME_TLS_ALPN = "acme-tls/1"
# RFC 8737 3: the critical extension that carries the key authorization digest.
ID_PE_ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
HTTP01_PATH = "/.well-known/acme-challenge/"
# A key authorization is a 43-character token, a dot and a 43-character thumbprint.
MAX_HTTP01_BODY = 1024


def key_authorization(token: str, account_thumbprint: str) -> str:
    return f"{token}.{account_thumbprint}"


def sni_for(identifier: Identifier) -> str:
    """The server name a tls-alpn-01 check sends: the name, or an IP's reverse name (RFC 8738 6)."""
    if identifier.type == "ip":
        return ipaddress.ip_address(identifier.value).reverse_pointer
    return identifier.value


def host_header(identifier: Identifier) -> str:
    if identifier.type == "ip" and ":" in identifier.value:
        return f"[{identifier.value}]"
    return identifier.value


def check_http01(status: int, body: bytes, expected: str) -> None:
    if status != 200:
        raise AcmeProblem("incorrectResponse", f"the challenge URL answered {status}, not 200")
    # RFC 8555 8.3: trailing whitespace is allowed.
    if body.rstrip(b" \t\r\n") != expected.encode():
        raise AcmeProblem(
            "incorrectResponse", "the challenge URL did not answer the key authorization"
        )


def check_tls_alpn01(
    der: bytes | None, alpn: str | None, identifier: Identifier, expected: str
) -> None:
    if alpn != ACME_TLS_ALPN:
        raise AcmeProblem("tls", f"the server did not negotiate ALPN {ACME_TLS_ALPN}")
    if der is None:
        raise AcmeProblem("tls", "the server sent no certificate")
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        extension = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    except x509.ExtensionNotFound as exc:
        raise AcmeProblem(
            "incorrectResponse",
            f"the challenge certificate lacks an extension ({exc.oid.dotted_string})",
        ) from None
    except ValueError:
        raise AcmeProblem("incorrectResponse", "the challenge certificate cannot be read") from None
    names: list[str] = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    addresses = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    # RFC 8737 3: exactly one subjectAltName, the identifier.
    if len(list(san)) != 1 or (names if identifier.type == "dns" else addresses) != [
        identifier.value
    ]:
        raise AcmeProblem(
            "incorrectResponse",
            f"the challenge certificate must name {identifier.value} and nothing else",
        )
    if not extension.critical:
        raise AcmeProblem("incorrectResponse", "the acmeIdentifier extension must be critical")
    digest = hashlib.sha256(expected.encode()).digest()
    value = extension.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    # DER OCTET STRING (tag 4, length 32) of the digest.
    if raw != b"\x04\x20" + digest:
        raise AcmeProblem(
            "incorrectResponse", "the acmeIdentifier extension does not match the key authorization"
        )
