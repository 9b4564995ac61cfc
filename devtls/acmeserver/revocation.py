"""Revocation (RFC 8555 7.6) and renewal information (RFC 9773), sans-IO."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from cryptography import x509

from devtls.acmeserver.jwsverify import b64decode, b64encode
from devtls.acmeserver.orders import spki_sha256
from devtls.acmeserver.problems import AcmeProblem, malformed
from devtls.acmeserver.state import Account
from devtls.acmeserver.wire import Request, Response, json_response, rfc3339

if TYPE_CHECKING:
    from devtls.acmeserver.service import AcmeService

REVOCATION_REASONS = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10})  # RFC 5280 5.3.1, not 7
ARI_RETRY_AFTER = "21600"  # RFC 9773 4.3: clients poll again after this many seconds


def revoke(svc: AcmeService, request: Request) -> Response:
    """RFC 8555 7.6: signed by the account that ordered it, or by the certificate's own key."""
    verified = svc.verify(request, expect="either")
    payload = verified.json()
    try:
        cert = x509.load_der_x509_certificate(
            b64decode(payload.get("certificate"), "'certificate'")
        )
    except ValueError:
        raise malformed("'certificate' is not a DER certificate") from None
    certificate_id = svc.store.certificate_by_serial.get(cert.serial_number)
    found = svc.store.certificates.get(certificate_id) if certificate_id else None
    if found is None or found.cert != cert:
        raise AcmeProblem("malformed", "this server did not issue that certificate", status=404)
    reason = payload.get("reason", 0)
    if not isinstance(reason, int) or isinstance(reason, bool) or reason not in REVOCATION_REASONS:
        raise AcmeProblem("badRevocationReason", "reason must be an RFC 5280 code other than 7")
    if verified.kid is not None:
        account: Account = svc.account_of_kid(request, verified.kid)
        if account.id != found.account_id:
            raise AcmeProblem("unauthorized", "only the account that ordered it may revoke it")
    elif spki_sha256(verified.jwk.key) != found.spki_sha256:
        raise AcmeProblem(
            "unauthorized", "the JWS key is neither an account's nor the certificate's"
        )
    if found.revoked_reason is not None:
        raise AcmeProblem("alreadyRevoked", "the certificate is revoked already")
    found.revoked_reason = reason
    svc.store.revoke_key(found.spki_sha256)
    svc.log(f"revoked the certificate with serial {cert.serial_number:x} (reason {reason})")
    return Response(200)


def cert_id(cert: x509.Certificate) -> str | None:
    """RFC 9773 4.1: base64url(authority key id) "." base64url(serial number bytes)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if aki.key_identifier is None:
        return None
    serial = cert.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big")  # DER: a sign bit
    return f"{b64encode(aki.key_identifier)}.{b64encode(serial_bytes)}"


def renewal_info(svc: AcmeService, request: Request, certificate_ident: str) -> Response:
    key_id, _, serial_text = certificate_ident.partition(".")
    serial = int.from_bytes(b64decode(serial_text, "the serial"), "big")
    b64decode(key_id, "the key identifier")
    found_id = svc.store.certificate_by_serial.get(serial)
    found = svc.store.certificates.get(found_id) if found_id else None
    if found is None or cert_id(found.cert) != certificate_ident:
        raise AcmeProblem("malformed", "this server did not issue that certificate", status=404)
    start, end = found.cert.not_valid_before_utc, found.cert.not_valid_after_utc
    now = svc.clock()
    if found.revoked_reason is not None:
        # Revoked: renew now (the window is already open).
        window = (now - dt.timedelta(hours=1), now)
    else:
        # Two thirds into its life, as certbot, lego and Caddy renew on their own.
        lifetime = end - start
        window = (start + lifetime * 2 / 3, start + lifetime * 5 / 6)
    document = {"suggestedWindow": {"start": rfc3339(window[0]), "end": rfc3339(window[1])}}
    return json_response(200, document, [("Retry-After", ARI_RETRY_AFTER)])
