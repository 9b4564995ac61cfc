"""A small ACME client for the sans-IO tests: signs with josepy, talks to AcmeService directly."""

from __future__ import annotations

import base64
import json
from typing import Any

from acme import jws
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy import jwa, jwk

from devtls.acmeserver.service import AcmeService
from devtls.acmeserver.wire import Request, Response

BASE = "https://127.0.0.1:14000"


def header(response: Response, name: str) -> str | None:
    return next((v for k, v in response.headers if k.lower() == name.lower()), None)


def body(response: Response) -> Any:
    return json.loads(response.body)


class Client:
    def __init__(self, service: AcmeService, key_type: str = "ec") -> None:
        self.service = service
        if key_type == "ec":
            self.jwk: Any = jwk.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
            self.alg: Any = jwa.ES256
        else:
            self.jwk = jwk.JWKRSA(key=rsa.generate_private_key(65537, 2048))
            self.alg = jwa.RS256
        self.kid: str | None = None

    def get(self, path: str, method: str = "GET") -> Response:
        return self.service.handle(Request(method, path, BASE))

    def nonce(self) -> str:
        return self.service.nonces.issue()

    def signed(
        self,
        url: str,
        payload: dict[str, Any] | None,
        *,
        use_jwk: bool = False,
        nonce: str | None = None,
        key: Any = None,
        alg: Any = None,
    ) -> bytes:
        data = b"" if payload is None else json.dumps(payload).encode()
        kid = None if use_jwk or self.kid is None else self.kid
        text = nonce or self.nonce()
        raw_nonce = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        signed = jws.JWS.sign(data, key or self.jwk, alg or self.alg, raw_nonce, url=url, kid=kid)
        return signed.json_dumps().encode()

    def post(self, path: str, payload: dict[str, Any] | None, **options: Any) -> Response:
        url = path if path.startswith("https://") else BASE + path
        body_bytes = options.pop("raw", None) or self.signed(url, payload, **options)
        return self.service.handle(
            Request("POST", url[len(BASE) :], BASE, "application/jose+json", body_bytes)
        )

    def register(self) -> Response:
        response = self.post("/acme/new-account", {"termsOfServiceAgreed": True}, use_jwk=True)
        self.kid = header(response, "Location")
        return response
