"""Orders, authorizations, challenges, finalization and certificates (RFC 8555 7.4-7.5).

Sans-IO. Each handler takes the AcmeService, the request and
the ids from its URL, and returns a Response or raises AcmeProblem.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devtls.acmeserver import challenges as checks
from devtls.acmeserver.allowlist import Identifier, parse_identifier
from devtls.acmeserver.jwsverify import b64decode
from devtls.acmeserver.problems import AcmeProblem, malformed
from devtls.acmeserver.state import (
    MAX_IDENTIFIERS_PER_ORDER,
    ORDER_LIFETIME,
    Authorization,
    Certificate,
    Challenge,
    Order,
    new_id,
)
from devtls.acmeserver.wire import Request, Response, ValidationJob, json_response, rfc3339
from devtls.errors import CAError, IssueError

if TYPE_CHECKING:
    from devtls.acmeserver.jwsverify import Verified
    from devtls.acmeserver.service import AcmeService

MIN_CSR_RSA_BITS = 2048


def spki_sha256(public_key: Any) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


# -- orders ---------------------------------------------------------------------------------


def new_order(svc: AcmeService, request: Request) -> Response:
    verified, account = svc.signed_by_account(request)
    payload = verified.json()
    raw = payload.get("identifiers")
    if not isinstance(raw, list) or not raw:
        raise malformed("'identifiers' must be a non-empty list")
    if len(raw) > MAX_IDENTIFIERS_PER_ORDER:
        raise malformed(f"at most {MAX_IDENTIFIERS_PER_ORDER} identifiers per order")
    if "notBefore" in payload or "notAfter" in payload:
        raise malformed(
            "this server sets the validity itself (acme-server --days):"
            " leave out notBefore and notAfter"
        )
    identifiers: list[Identifier] = []
    refused: list[AcmeProblem] = []
    for item in raw:
        try:
            identifier = parse_identifier(item)
        except AcmeProblem as problem:
            refused.append(problem)
            continue
        if not svc.allow.allows(identifier):
            refused.append(
                AcmeProblem(
                    "rejectedIdentifier",
                    f"{identifier.value} is not on this server's allow-list"
                    f" ({svc.allow.describe()})",
                    identifier=identifier.to_json(),
                )
            )
        elif identifier not in identifiers:
            identifiers.append(identifier)
    if refused:
        if len(refused) == 1:
            raise refused[0]
        kinds = {p.kind for p in refused}
        raise AcmeProblem(
            kinds.pop() if len(kinds) == 1 else "malformed",
            f"{len(refused)} identifiers were refused (see subproblems)",
            subproblems=refused,
        )
    replaces = payload.get("replaces")
    if replaces is not None and not isinstance(replaces, str):
        raise malformed("'replaces' is a certificate identifier (RFC 9773)")
    now = svc.clock()
    expires = now + ORDER_LIFETIME
    authzs = [
        Authorization(new_id(), account.id, identifier, expires, []) for identifier in identifiers
    ]
    for authz in authzs:
        # RFC 8737 and RFC 8738: both challenges work for IP addresses too.
        authz.challenges = [
            Challenge(new_id(), authz.id, kind, secrets.token_urlsafe(32))
            for kind in checks.CHALLENGE_TYPES
        ]
    order = Order(new_id(), account.id, tuple(identifiers), expires, tuple(a.id for a in authzs))
    order.replaces = replaces
    svc.store.add_order(order, authzs, now)
    account.orders.append(order.id)
    return _order_response(svc, request, order, 201)


def _owned_order(svc: AcmeService, request: Request, order_id: str) -> tuple[Verified, Order]:
    verified, account = svc.signed_by_account(request)
    order = svc.store.orders.get(order_id)
    if order is None or order.account_id != account.id:
        raise AcmeProblem("malformed", "no such order (a restart forgets them)", status=404)
    return verified, order


def refresh(svc: AcmeService, order: Order) -> None:
    now = svc.clock()
    if order.status in ("pending", "ready") and order.expires <= now:
        order.status = "invalid"
        order.error = AcmeProblem("malformed", "the order expired")
    if order.status != "pending":
        return
    statuses = []
    for authz_id in order.authz_ids:
        authz = svc.store.authzs.get(authz_id)
        statuses.append(authz.status if authz is not None and authz.expires > now else "expired")
    if any(s != "valid" and s not in ("pending",) for s in statuses):
        order.status = "invalid"
        order.error = AcmeProblem("unauthorized", "an authorization of this order failed")
    elif all(s == "valid" for s in statuses):
        order.status = "ready"


def order_json(svc: AcmeService, request: Request, order: Order) -> dict[str, Any]:
    refresh(svc, order)
    document: dict[str, Any] = {
        "status": order.status,
        "expires": rfc3339(order.expires),
        "identifiers": [i.to_json() for i in order.identifiers],
        "authorizations": [svc.url(request, f"/acme/authz/{a}") for a in order.authz_ids],
        "finalize": svc.url(request, f"/acme/order/{order.id}/finalize"),
    }
    if order.certificate_id is not None:
        document["certificate"] = svc.url(request, f"/acme/cert/{order.certificate_id}")
    if order.error is not None:
        document["error"] = order.error.to_json(nested=True)
    if order.replaces is not None:
        document["replaces"] = order.replaces
    return document


def _order_response(svc: AcmeService, request: Request, order: Order, status: int) -> Response:
    location = svc.url(request, f"/acme/order/{order.id}")
    return json_response(status, order_json(svc, request, order), [("Location", location)])


def order(svc: AcmeService, request: Request, order_id: str) -> Response:
    verified, found = _owned_order(svc, request, order_id)
    if not verified.is_post_as_get:
        raise malformed("an order is fetched with POST-as-GET (an empty payload)")
    return _order_response(svc, request, found, 200)


# -- authorizations and challenges ------------------------------------------------------------


def _owned_authz(
    svc: AcmeService, request: Request, authz_id: str
) -> tuple[Verified, Authorization]:
    verified, account = svc.signed_by_account(request)
    authz = svc.store.authzs.get(authz_id)
    if authz is None or authz.account_id != account.id:
        raise AcmeProblem("malformed", "no such authorization (a restart forgets them)", status=404)
    if authz.status == "pending" and authz.expires <= svc.clock():
        authz.status = "expired"
    return verified, authz


def challenge_json(svc: AcmeService, request: Request, challenge: Challenge) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": challenge.type,
        "url": svc.url(request, f"/acme/chall/{challenge.id}"),
        "status": challenge.status,
        "token": challenge.token,
    }
    if challenge.validated is not None:
        document["validated"] = rfc3339(challenge.validated)
    if challenge.error is not None:
        document["error"] = challenge.error.to_json(nested=True)
    return document


def authorization(svc: AcmeService, request: Request, authz_id: str) -> Response:
    verified, authz = _owned_authz(svc, request, authz_id)
    if not verified.is_post_as_get:
        status = verified.json().get("status")
        if status != "deactivated":  # RFC 8555 7.5.2: the only change a client may ask
            raise malformed("an authorization's status can only be changed to 'deactivated'")
        if authz.status in ("pending", "valid"):
            authz.status = "deactivated"
    document = {
        "identifier": authz.identifier.to_json(),
        "status": authz.status,
        "expires": rfc3339(authz.expires),
        "challenges": [challenge_json(svc, request, c) for c in authz.challenges],
    }
    return json_response(200, document)


def challenge(svc: AcmeService, request: Request, challenge_id: str) -> Response:
    found = svc.store.challenges.get(challenge_id)
    if found is None:
        svc.signed_by_account(request)  # a bad JWS is reported as such first
        raise AcmeProblem("malformed", "no such challenge (a restart forgets them)", status=404)
    verified, authz = _owned_authz(svc, request, found.authz_id)
    if not verified.is_post_as_get:
        verified.json()  # "{}" says: validate now (RFC 8555 7.5.1)
        if found.status == "pending" and authz.status == "pending":
            account = svc.store.accounts.get(authz.account_id)
            assert account is not None
            found.status = "processing"
            svc.jobs.append(
                ValidationJob(
                    found.id,
                    found.type,
                    authz.identifier,
                    found.token,
                    checks.key_authorization(found.token, account.thumbprint),
                )
            )
    up = svc.url(request, f"/acme/authz/{authz.id}")
    return json_response(200, challenge_json(svc, request, found), [("Link", f'<{up}>;rel="up"')])


def complete_validation(svc: AcmeService, challenge_id: str, problem: AcmeProblem | None) -> None:
    found = svc.store.challenges.get(challenge_id)
    if found is None or found.status != "processing":
        return
    authz = svc.store.authzs.get(found.authz_id)
    if problem is None:
        found.status, found.validated = "valid", svc.clock()
        if authz is not None and authz.status == "pending":
            authz.status = "valid"
    else:
        found.status, found.error = "invalid", problem
        if authz is not None and authz.status == "pending":
            authz.status = "invalid"


# -- finalization and certificates ---------------------------------------------------------------


def csr_identifiers(csr: x509.CertificateSigningRequest) -> set[Identifier]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    except ValueError:
        raise AcmeProblem("badCSR", "the CSR has malformed extensions") from None
    found: set[Identifier] = set()
    for entry in san:
        if isinstance(entry, x509.DNSName):
            found.add(Identifier("dns", entry.value.lower()))
        elif isinstance(entry, x509.IPAddress):
            found.add(Identifier("ip", str(entry.value)))
        else:
            raise AcmeProblem(
                "badCSR", f"the CSR asks for a {type(entry).__name__}; only DNS and IP"
            )
    for attribute in csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        value = str(attribute.value).lower()
        if Identifier("dns", value) not in found and Identifier("ip", value) not in found:
            raise AcmeProblem("badCSR", "the CSR's common name is not one of its subjectAltNames")
    return found


def finalize(svc: AcmeService, request: Request, order_id: str) -> Response:
    verified, found = _owned_order(svc, request, order_id)
    refresh(svc, found)
    if found.status != "ready":
        raise AcmeProblem("orderNotReady", f"the order is {found.status}, not ready")
    payload = verified.json()
    try:
        csr = x509.load_der_x509_csr(b64decode(payload.get("csr"), "'csr'"))
    except ValueError:
        raise AcmeProblem("badCSR", "the CSR is not DER") from None
    if not csr.is_signature_valid:
        raise AcmeProblem("badCSR", "the CSR's signature does not verify")
    if csr_identifiers(csr) != set(found.identifiers):
        wanted = ", ".join(sorted(i.value for i in found.identifiers))
        raise AcmeProblem("badCSR", f"the CSR's names must be exactly the order's: {wanted}")
    public_key = csr.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_CSR_RSA_BITS:
            raise AcmeProblem("badCSR", f"RSA keys of at least {MIN_CSR_RSA_BITS} bits only")
    elif not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name not in (
        "secp256r1",
        "secp384r1",
    ):
        raise AcmeProblem("badCSR", "the CSR's key must be RSA, or ECDSA on P-256 or P-384")
    key_hash = spki_sha256(public_key)
    account = svc.store.accounts.get(found.account_id)
    assert account is not None
    if key_hash == spki_sha256(account.jwk.key):
        raise AcmeProblem("badCSR", "the certificate key must not be the account key")
    if key_hash in svc.store.revoked_keys:
        raise AcmeProblem("badCSR", "this key belongs to a revoked certificate; use a new key")
    from devtls.issue import sign_csr

    try:
        ca = svc.ca()
        leaf = sign_csr(
            ca, csr.public_bytes(serialization.Encoding.DER), days=svc.days, common_name_only=True
        )
    except IssueError as exc:
        raise AcmeProblem("badCSR", exc.message) from None
    except CAError as exc:
        raise AcmeProblem("serverInternal", f"the local CA cannot sign: {exc.message}") from None
    certificate = Certificate(
        new_id(), account.id, leaf.cert, leaf.cert_pem() + ca.cert_pem(), key_hash
    )
    svc.store.add_certificate(certificate)
    found.status, found.certificate_id = "valid", certificate.id
    names = ", ".join(i.value for i in found.identifiers)
    svc.log(f"issued a certificate for {names} (valid until {leaf.not_after:%Y-%m-%d %H:%M} UTC)")
    return _order_response(svc, request, found, 200)


def certificate(svc: AcmeService, request: Request, certificate_id: str) -> Response:
    verified, account = svc.signed_by_account(request)
    found = svc.store.certificates.get(certificate_id)
    if found is None or found.account_id != account.id:
        raise AcmeProblem("malformed", "no such certificate", status=404)
    if not verified.is_post_as_get:
        raise malformed("a certificate is fetched with POST-as-GET (an empty payload)")
    return Response(200, found.chain_pem, "application/pem-certificate-chain")
