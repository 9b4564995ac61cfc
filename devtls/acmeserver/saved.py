"""What ``devtls acme-server`` keeps across restarts: accounts and the revoked keys.

certbot and lego keep their account's URL and key and renew with them; told
``accountDoesNotExist`` after a restart, they fail instead of registering again. So accounts
(public key, contacts, status) outlive the process, and so does the list of revoked keys (a
revoked key stays refused). Orders, authorizations and certificates do not: a renewal makes
a new order.

Sans-IO: bytes out of a Store, a Store filled from bytes. The bytes come from devtls's own
file, but are read as untrusted (damaged, or edited by hand): every record is checked as the
request that made it was, and one bad record refuses the whole file.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from devtls.acmeserver import jwsverify
from devtls.acmeserver.problems import AcmeProblem
from devtls.acmeserver.service import parse_contact
from devtls.acmeserver.state import MAX_ACCOUNTS, MAX_REVOKED_KEYS, Account, Store

FORMAT = 1
# 1000 accounts with 8192-bit RSA keys and ten contacts each, and every revoked key, fit.
MAX_SAVED_BYTES = 8 * 1024 * 1024
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SPKI_SHA256 = re.compile(r"[0-9a-f]{64}")
# The JWS algorithm whose key checks a saved key must pass again.
_ALG_OF_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


class SavedStateError(ValueError):
    """The saved state cannot be used; the message says why."""


def dump(store: Store) -> bytes:
    accounts = [
        {
            "id": account.id,
            "jwk": account.jwk.public_key().to_json(),
            "contact": list(account.contact),
            "status": account.status,
        }
        for account in store.accounts.items.values()
    ]
    saved = {"format": FORMAT, "accounts": accounts, "revoked_keys": list(store.revoked_keys)}
    return json.dumps(saved, indent=1).encode() + b"\n"


def load(store: Store, data: bytes, now: dt.datetime) -> None:
    """Fill an empty ``store`` from ``data``; SavedStateError leaves it empty."""
    if len(data) > MAX_SAVED_BYTES:
        raise SavedStateError(f"it is over {MAX_SAVED_BYTES // (1024 * 1024)} MiB")
    try:
        saved = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise SavedStateError("it is not JSON") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise SavedStateError(f"it is not format {FORMAT} of this file")
    accounts, revoked = saved.get("accounts"), saved.get("revoked_keys")
    if not isinstance(accounts, list) or len(accounts) > MAX_ACCOUNTS:
        raise SavedStateError(f"'accounts' is not a list of at most {MAX_ACCOUNTS}")
    if not isinstance(revoked, list) or len(revoked) > MAX_REVOKED_KEYS:
        raise SavedStateError(f"'revoked_keys' is not a list of at most {MAX_REVOKED_KEYS}")
    restored = [_account(record, n) for n, record in enumerate(accounts)]
    for key in revoked:
        if not isinstance(key, str) or not _SPKI_SHA256.fullmatch(key):
            raise SavedStateError("'revoked_keys' holds something that is not a SHA-256")
    ids = [account.id for account in restored]
    thumbprints = [account.thumbprint for account in restored]
    if len(set(ids)) != len(ids) or len(set(thumbprints)) != len(thumbprints):
        raise SavedStateError("two accounts have the same id or the same key")
    for account in restored:
        store.add_account(account, now)
    for key in revoked:
        store.revoke_key(key)


def _account(record: object, n: int) -> Account:
    where = f"account {n + 1}"
    if not isinstance(record, dict) or set(record) != {"id", "jwk", "contact", "status"}:
        raise SavedStateError(f"{where} is not an object of id, jwk, contact and status")
    account_id, raw_key, status = record["id"], record["jwk"], record["status"]
    if not isinstance(account_id, str) or not _ACCOUNT_ID.fullmatch(account_id):
        raise SavedStateError(f"{where} has a malformed id")
    if status not in ("valid", "deactivated"):
        raise SavedStateError(f"{where} has the status {str(status)[:16]!r}")
    alg = "RS256" if isinstance(raw_key, dict) and raw_key.get("kty") == "RSA" else None
    if isinstance(raw_key, dict) and raw_key.get("kty") == "EC":
        alg = _ALG_OF_CURVE.get(str(raw_key.get("crv")))
    try:
        if alg is None:
            raise AcmeProblem("badPublicKey", "not an RSA key or an EC key on P-256/384/521")
        jwk: Any = jwsverify.load_jwk(raw_key, alg)
        contact = parse_contact({"contact": record["contact"]})
    except AcmeProblem as problem:
        raise SavedStateError(f"{where}: {problem.detail}") from None
    return Account(account_id, jwk, jwsverify.thumbprint(jwk), contact, status)
