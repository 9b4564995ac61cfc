"""Accounts, orders, authorizations, challenges and certificates, in memory and bounded.

Accounts and the revoked keys are what a restart must not forget (saved.py turns them into
bytes; ``revision`` tells the server when to write them again); orders, authorizations and
certificates live only in memory. Each kind of object has a ceiling; past it the expired and
finished ones are dropped first (for accounts: the least recently used with no order in
memory), and a request that would still exceed it is refused with ``rateLimited``, so a client
looping on newAccount or newOrder cannot grow the process.
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
        # Counts the changes to what is saved: accounts and revoked keys.
        self.revision = 0

    def changed(self) -> None:
        """An account's contacts or status changed in place."""
        self.revision += 1

    def used(self, account: Account) -> None:
        """The account signed a request: it goes last in the order accounts are forgotten."""
        self.accounts.items.move_to_end(account.id)

    def add_account(self, account: Account, now: dt.datetime) -> None:
        if len(self.accounts) >= self.accounts.limit:
            self._forget_idle_account(now)
        self.accounts.add(account.id, account)
        self.account_by_thumbprint[account.thumbprint] = account.id
        self.revision += 1

    def _forget_idle_account(self, now: dt.datetime) -> None:
        """Make room: the least recently used account with no order in memory goes (its
        client must register again). A full table of accounts would otherwise refuse every new
        client for good, accounts being saved across restarts; one with an order under way is
        kept."""
        self.prune(now)
        idle = next((a for a in self.accounts.items.values() if not a.orders), None)
        if idle is not None:
            self.accounts.drop([idle.id])
            self.account_by_thumbprint.pop(idle.thumbprint, None)

    def rekey(self, account: Account, jwk: Any, thumbprint: str) -> None:
        self.account_by_thumbprint.pop(account.thumbprint, None)
        account.jwk, account.thumbprint = jwk, thumbprint
        self.account_by_thumbprint[thumbprint] = account.id
        self.revision += 1

    def add_order(self, order: Order, authzs: list[Authorization], now: dt.datetime) -> None:
        if not self._room_for(authzs):
            self.prune(now)
        # Still full: the oldest pending orders go. An order is finished in seconds, so the
        # oldest are the abandoned ones, and a client ordering in a loop (never finishing)
        # cannot keep every other client out for the day its orders would live.
        while not self._room_for(authzs) and self.orders.items:
            self._drop_order(next(iter(self.orders.items)))
        self.orders.add(order.id, order)
        for authz in authzs:
            self.authzs.add(authz.id, authz)
            for challenge in authz.challenges:
                self.challenges[challenge.id] = challenge

    def _room_for(self, authzs: list[Authorization]) -> bool:
        return len(self.orders) < self.orders.limit and (
            len(self.authzs) + len(authzs) <= self.authzs.limit
        )

    def _drop_order(self, order_id: str) -> None:
        order = self.orders.items.pop(order_id)
        used = {a for o in self.orders.items.values() for a in o.authz_ids}
        for authz_id in order.authz_ids:
            authz = self.authzs.items.pop(authz_id, None) if authz_id not in used else None
            for challenge in authz.challenges if authz is not None else []:
                self.challenges.pop(challenge.id, None)
        account = self.accounts.get(order.account_id)
        if account is not None and order_id in account.orders:
            account.orders.remove(order_id)

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
        self.revision += 1
        while len(self.revoked_keys) > MAX_REVOKED_KEYS:
            self.revoked_keys.popitem(last=False)
