"""The JWS of every ACME POST (RFC 8555 6.2-6.5), checked with josepy.

Checked in this order: flattened JSON serialization, a protected header with an allowed
``alg``, ``url`` equal to the URL requested, exactly one of ``jwk`` and ``kid``, a nonce this
server issued and nobody used, then the signature. Everything that fails is an AcmeProblem;
nothing else leaves this module, whatever the bytes were.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devtls.acmeserver.nonces import NonceStore
from devtls.acmeserver.problems import AcmeProblem, malformed

# RFC 8555 6.2: servers must accept ES256 and should accept EdDSA; RS256 is what certbot
# signs with by default. HMAC ("HS256") and "none" are refused: a public key is no secret.
ALLOWED_ALGS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
CURVE_OF_ALG = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192


@dataclass(frozen=True)
class Verified:
    """A POST whose JWS checked out."""

    payload: bytes
    jwk: Any  # josepy.JWK, public
    kid: str | None
    protected: dict[str, Any]

    @property
    def is_post_as_get(self) -> bool:
        return self.payload == b""

    def json(self) -> dict[str, Any]:
        """The payload as a JSON object (an empty payload is not one: POST-as-GET)."""
        try:
            value = json.loads(self.payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise malformed("the JWS payload is not JSON") from None
        if not isinstance(value, dict):
            raise malformed("the JWS payload is not a JSON object")
        return value


def b64decode(text: object, what: str) -> bytes:
    if not isinstance(text, str) or "=" in text:
        raise malformed(f"{what} is not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise malformed(f"{what} is not base64url") from None


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def crypto_key(jwk: Any) -> Any:
    """The cryptography key inside a josepy JWK (which wraps it to compare keys)."""
    inner = getattr(jwk, "key", None)
    return getattr(inner, "_wrapped", inner)


def thumbprint(jwk: Any) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url: the account's part of key authorizations."""
    return b64encode(jwk.thumbprint())


def thumbprint_of(raw: object) -> str | None:
    """The thumbprint of a JWK given as JSON, or None if it is not one (members in any order)."""
    from josepy import jwk as jwk_module

    if not isinstance(raw, dict):
        return None
    try:
        return thumbprint(jwk_module.JWK.from_json(raw))
    except Exception:  # josepy raises several kinds on bad input; all mean "not a key"
        return None


def parse_flattened(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JWS object and its decoded protected header."""
    try:
        outer = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise malformed("the request body is not JSON") from None
    if not isinstance(outer, dict) or set(outer) != {"protected", "payload", "signature"}:
        raise malformed(
            "the body must be a flattened JWS: exactly 'protected', 'payload' and 'signature'"
        )
    try:
        protected = json.loads(b64decode(outer["protected"], "the protected header"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise malformed("the protected header is not JSON") from None
    if not isinstance(protected, dict):
        raise malformed("the protected header is not a JSON object")
    b64decode(outer["payload"], "the payload")
    b64decode(outer["signature"], "the signature")
    return outer, protected


def check_alg(protected: dict[str, Any]) -> str:
    alg = protected.get("alg")
    if alg not in ALLOWED_ALGS:
        raise AcmeProblem(
            "badSignatureAlgorithm",
            f"alg {str(alg)[:16]!r} is not accepted; use one of {', '.join(ALLOWED_ALGS)}",
        )
    return str(alg)


def load_jwk(raw: object, alg: str) -> Any:
    """A public JWK of a type and size that fits ``alg``."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from josepy import jwk as jwk_module

    if not isinstance(raw, dict) or raw.get("kty") not in ("RSA", "EC"):
        raise AcmeProblem("badPublicKey", "the jwk must be an RSA or EC public key")
    if "d" in raw:
        raise AcmeProblem("badPublicKey", "the jwk holds a private key; send the public key only")
    try:
        key = jwk_module.JWK.from_json(raw)
    except Exception:  # josepy raises several kinds on bad input; all mean one thing here
        raise AcmeProblem("badPublicKey", "the jwk cannot be read") from None
    public = crypto_key(key)
    if alg.startswith(("RS", "PS")):
        if not isinstance(public, rsa.RSAPublicKey):
            raise AcmeProblem("badPublicKey", f"{alg} needs an RSA key")
        if not MIN_RSA_BITS <= public.key_size <= MAX_RSA_BITS:
            raise AcmeProblem(
                "badPublicKey", f"RSA keys of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits only"
            )
    elif (
        not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != CURVE_OF_ALG[alg]
    ):
        raise AcmeProblem("badPublicKey", f"{alg} needs an EC key on {CURVE_OF_ALG[alg]}")
    return key


def verify_signature(outer: dict[str, Any], key: Any) -> bytes:
    """The payload, once the signature verifies with ``key``."""
    from acme import jws

    try:
        parsed = jws.JWS.from_json(outer)
        good = parsed.verify(key)
    except Exception:  # a signature of the wrong length, an undecodable field...
        good = False
    if not good:
        raise AcmeProblem("malformed", "the JWS signature does not verify")
    return bytes(parsed.payload)


def verify_request(
    body: bytes,
    url: str,
    nonces: NonceStore,
    key_for_kid: Callable[[str], Any],
    *,
    expect: str = "kid",
) -> Verified:
    """Check one ACME POST; ``expect`` is "kid", "jwk" or "either" (revokeCert)."""
    outer, protected = parse_flattened(body)
    alg = check_alg(protected)
    if protected.get("url") != url:
        raise AcmeProblem("unauthorized", "the JWS 'url' is not the URL this request went to")
    has_jwk, has_kid = "jwk" in protected, "kid" in protected
    if has_jwk == has_kid:
        raise malformed("the protected header needs exactly one of 'jwk' and 'kid'")
    if expect == "jwk" and not has_jwk:
        raise malformed("this request is signed with the account key itself: use 'jwk'")
    if expect == "kid" and not has_kid:
        raise malformed("this request is signed as an account: use 'kid' with the account URL")
    nonce = protected.get("nonce")
    if not isinstance(nonce, str) or not nonces.consume(nonce):
        raise AcmeProblem("badNonce", "the nonce is unknown or used; take the one of this answer")
    if has_kid:
        kid = protected["kid"]
        if not isinstance(kid, str):
            raise malformed("'kid' must be the account URL")
        key = key_for_kid(kid)
        load_jwk(key.to_partial_json(), alg)  # the account's key must fit this alg too
    else:
        kid = None
        key = load_jwk(protected["jwk"], alg)
    payload = verify_signature(outer, key)
    return Verified(payload, key, kid, protected)


def verify_inner(outer_payload: bytes, url: str) -> Verified:
    """The inner JWS of a key rollover (RFC 8555 7.3.5): signed by the new key, no nonce."""
    outer, protected = parse_flattened(outer_payload)
    alg = check_alg(protected)
    if "jwk" not in protected or "kid" in protected:
        raise malformed("the inner JWS carries the new key as 'jwk' and no 'kid'")
    if "nonce" in protected:
        raise malformed("the inner JWS of a key change has no nonce")
    if protected.get("url") != url:
        raise malformed("the inner JWS 'url' is not the keyChange URL")
    key = load_jwk(protected["jwk"], alg)
    payload = verify_signature(outer, key)
    return Verified(payload, key, None, protected)
