"""The plain values the protocol side and the network side exchange."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from devtls.acmeserver.allowlist import Identifier


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    base: str  # "https://host:port", from the request's validated Host
    content_type: str | None = None
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ValidationJob:
    challenge_id: str
    type: str
    identifier: Identifier
    token: str
    key_authorization: str


def json_response(
    status: int, document: object, headers: list[tuple[str, str]] | None = None
) -> Response:
    body = json.dumps(document, indent=2).encode()
    return Response(status, body, "application/json", list(headers or []))


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
