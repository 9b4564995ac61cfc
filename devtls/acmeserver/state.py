"""Accounts, orders, authorizations, challenges and certificates, in memory and bounded.

Nothing is written to disk: a restart forgets accounts (clients register again on their
own) and the revocation list. Each kind of object has a ceiling; past it the expired and
finished ones are dropped first, and a request that would still exceed it is refused with
``rateLimited``, so a client looping on newAccount or newOrder cannot grow the process.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from cryptography import x509

from devtls.acmeserver.allowlist import Identifier
from devtls.acmeserver.problems import AcmeProblem

MAX_ACCOUNTS = 1_000
MAX_ORDERS = 5_000
MAX_AUTHZS = 10_000
MAX_CERTIFICATES = 5_000
MAX_REVOKED_KEYS = 10_000
MAX_IDENTIFIERS_PER_ORDER = 100  # Let's Encrypt's limit of names per certificate
MAX_CONTACTS = 10
# Pending orders and authorizations live a day; valid authorizations are not reused, so a
# renewal is validated again (the point of a test CA).
ORDER_LIFETIME = dt.timedelta(hours=24)

T = TypeVar("T")


def new_id() -> str:
    # Unguessable: an order's or certificate's URL is no secret, but need not be enumerable.
    return secrets.token_urlsafe(12)


@dataclass
class Account:
    id: str
    jwk: Any  # josepy.JWK (public)
    thumbprint: str
    contact: tuple[str, ...]
    status: str = "valid"
    orders: list[str] = field(default_factory=list)


@dataclass
class Challenge:
    id: str
    authz_id: str
    type: str
    token: str
    status: str = "pending"
    validated: dt.datetime | None = None
    error: AcmeProblem | None = None


@dataclass
class Authorization:
    id: str
    account_id: str
    identifier: Identifier
    expires: dt.datetime
    challenges: list[Challenge]
    status: str = "pending"


@dataclass
class Order:
    id: str
    account_id: str
    identifiers: tuple[Identifier, ...]
    expires: dt.datetime
    authz_ids: tuple[str, ...]
    status: str = "pending"
    certificate_id: str | None = None
    error: AcmeProblem | None = None
    replaces: str | None = None


@dataclass
class Certificate:
    id: str
    account_id: str
    cert: x509.Certificate
    chain_pem: bytes
    spki_sha256: str
    revoked_reason: int | None = None


class Bounded(Generic[T]):
    """Objects by id, oldest first, at most ``limit`` of them."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.items: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str) -> T | None:
        return self.items.get(key)

    def add(self, key: str, item: T, *, evict: bool = False) -> None:
        if len(self.items) >= self.limit:
            if not evict:
                raise AcmeProblem(
                    "rateLimited",
                    f"this server holds {self.limit} {self.what} in memory already; restart it",
                    headers=[("Retry-After", "60")],
                )
            self.items.popitem(last=False)
        self.items[key] = item

    def drop(self, keys: list[str]) -> None:
        for key in keys:
            self.items.pop(key, None)

    def __len__(self) -> int:
        return len(self.items)


class Store:
    def __init__(self) -> None:
        self.accounts: Bounded[Account] = Bounded(MAX_ACCOUNTS, "accounts")
        self.account_by_thumbprint: dict[str, str] = {}
        self.orders: Bounded[Order] = Bounded(MAX_ORDERS, "orders")
        self.authzs: Bounded[Authorization] = Bounded(MAX_AUTHZS, "authorizations")
        self.challenges: dict[str, Challenge] = {}
        # Certificates are kept for download and revocation; the oldest go first.
        self.certificates: Bounded[Certificate] = Bounded(MAX_CERTIFICATES, "certificates")
        self.certificate_by_serial: dict[int, str] = {}
        # SHA-256 of the SubjectPublicKeyInfo of every revoked certificate: refused at finalize.
        self.revoked_keys: OrderedDict[str, None] = OrderedDict()

    def add_account(self, account: Account) -> None:
        self.accounts.add(account.id, account)
        self.account_by_thumbprint[account.thumbprint] = account.id

    def rekey(self, account: Account, jwk: Any, thumbprint: str) -> None:
        self.account_by_thumbprint.pop(account.thumbprint, None)
        account.jwk, account.thumbprint = jwk, thumbprint
        self.account_by_thumbprint[thumbprint] = account.id

    def add_order(self, order: Order, authzs: list[Authorization], now: dt.datetime) -> None:
        if len(self.orders) + 1 > self.orders.limit or len(self.authzs) + len(authzs) > (
            self.authzs.limit
        ):
            self.prune(now)
        self.orders.add(order.id, order)
        for authz in authzs:
            self.authzs.add(authz.id, authz)
            for challenge in authz.challenges:
                self.challenges[challenge.id] = challenge

    def prune(self, now: dt.datetime) -> None:
        """Forget expired and finished orders, and the authorizations only they used."""
        gone = [
            o.id
            for o in self.orders.items.values()
            if o.expires <= now or o.status in ("valid", "invalid")
        ]
        self.orders.drop(gone)
        used = {a for o in self.orders.items.values() for a in o.authz_ids}
        stale = [a.id for a in self.authzs.items.values() if a.id not in used]
        for authz_id in stale:
            authz = self.authzs.items.pop(authz_id)
            for challenge in authz.challenges:
                self.challenges.pop(challenge.id, None)
        for account in self.accounts.items.values():
            account.orders = [o for o in account.orders if o in self.orders.items]

    def add_certificate(self, certificate: Certificate) -> None:
        if len(self.certificates) >= self.certificates.limit:
            oldest = next(iter(self.certificates.items.values()))
            self.certificate_by_serial.pop(oldest.cert.serial_number, None)
        self.certificates.add(certificate.id, certificate, evict=True)
        self.certificate_by_serial[certificate.cert.serial_number] = certificate.id

    def revoke_key(self, spki_sha256: str) -> None:
        self.revoked_keys[spki_sha256] = None
        while len(self.revoked_keys) > MAX_REVOKED_KEYS:
            self.revoked_keys.popitem(last=False)
