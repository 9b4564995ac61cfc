"""RFC 7807 problem documents with the ACME error types (RFC 8555 6.7)."""

from __future__ import annotations

from typing import Any

ERROR_PREFIX = "urn:ietf:params:acme:error:"

# The HTTP status each ACME error type is answered with (RFC 8555 6.7 leaves most to the server;
# these are the ones Boulder and Pebble use, which clients are tested against).
STATUS = {
    "accountDoesNotExist": 400,
    "alreadyRevoked": 400,
    "badCSR": 400,
    "badNonce": 400,
    "badPublicKey": 400,
    "badRevocationReason": 400,
    "badSignatureAlgorithm": 400,
    "caa": 403,
    "connection": 400,
    "dns": 400,
    "incorrectResponse": 403,
    "invalidContact": 400,
    "malformed": 400,
    "orderNotReady": 403,
    "rateLimited": 429,
    "rejectedIdentifier": 400,
    "serverInternal": 500,
    "tls": 400,
    "unauthorized": 403,
    "unsupportedContact": 400,
    "unsupportedIdentifier": 400,
    "userActionRequired": 403,
}


class AcmeProblem(Exception):
    """An error answered to the client as an ACME problem document."""

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        status: int | None = None,
        identifier: dict[str, str] | None = None,
        subproblems: list[AcmeProblem] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.status = status or STATUS.get(kind, 400)
        self.identifier = identifier
        self.subproblems = subproblems or []
        self.headers = headers or []

    def to_json(self, *, nested: bool = False) -> dict[str, Any]:
        document: dict[str, Any] = {"type": ERROR_PREFIX + self.kind, "detail": self.detail}
        if not nested:
            document["status"] = self.status
        if self.identifier is not None:
            document["identifier"] = self.identifier
        if self.subproblems:
            document["subproblems"] = [p.to_json(nested=True) for p in self.subproblems]
        return document


def malformed(detail: str) -> AcmeProblem:
    return AcmeProblem("malformed", detail)
