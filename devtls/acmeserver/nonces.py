"""Replay nonces (RFC 8555 6.5): each is accepted once, and only while it is remembered."""

from __future__ import annotations

import secrets
from collections import OrderedDict

# Unused nonces kept; past this the oldest is forgotten (its client gets badNonce and retries
# with the fresh nonce that comes with the error, as every client does).
MAX_NONCES = 10_000
NONCE_BYTES = 16


class NonceStore:
    def __init__(self, limit: int = MAX_NONCES) -> None:
        self._limit = limit
        self._issued: OrderedDict[str, None] = OrderedDict()

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(NONCE_BYTES)
        self._issued[nonce] = None
        while len(self._issued) > self._limit:
            self._issued.popitem(last=False)
        return nonce

    def consume(self, nonce: str) -> bool:
        """Whether ``nonce`` was issued here and not used yet; it cannot be used again."""
        return self._issued.pop(nonce, False) is None

    def __len__(self) -> int:
        return len(self._issued)
