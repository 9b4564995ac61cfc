"""The ACME server's protocol (RFC 8555), sans-IO: a request in, a response out.

Routing, the common headers (Replay-Nonce and the index Link on every answer), problem
documents, the directory, nonces and accounts live here; orders, challenges, certificates and
revocation in orders.py. Challenge validation needs the network: a challenge answered by the
client becomes a ``ValidationJob`` in ``jobs``, which the server runs and reports back with
``complete_validation``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devtls.acmeserver import jwsverify, orders, revocation
from devtls.acmeserver.allowlist import AllowList
from devtls.acmeserver.nonces import NonceStore
from devtls.acmeserver.problems import AcmeProblem, malformed
from devtls.acmeserver.state import MAX_CONTACTS, Account, Store, new_id
from devtls.acmeserver.wire import Request, Response, ValidationJob, json_response

if TYPE_CHECKING:
    from devtls.ca import LocalCA

JOSE_JSON = "application/jose+json"
MAX_CONTACT_LENGTH = 320
_ID = r"[A-Za-z0-9_-]{1,64}"
_CERT_ID = r"[A-Za-z0-9_.-]{1,512}"


class AcmeService:
    def __init__(
        self,
        ca: Callable[[], LocalCA],
        allow: AllowList,
        *,
        days: int,
        clock: Callable[[], dt.datetime] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.ca = ca
        self.log = log or (lambda line: None)
        self.allow = allow
        self.days = days
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.nonces = NonceStore()
        self.store = Store()
        self.jobs: list[ValidationJob] = []
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = [
            ("GET", re.compile(r"/directory"), self._directory),
            ("HEAD", re.compile(r"/acme/new-nonce"), self._new_nonce),
            ("GET", re.compile(r"/acme/new-nonce"), self._new_nonce),
            ("POST", re.compile(r"/acme/new-account"), self._new_account),
            ("POST", re.compile(rf"/acme/acct/({_ID})"), self._account),
            ("POST", re.compile(rf"/acme/acct/({_ID})/orders"), self._account_orders),
            ("POST", re.compile(r"/acme/key-change"), self._key_change),
            ("POST", re.compile(r"/acme/new-order"), orders.new_order),
            ("POST", re.compile(rf"/acme/order/({_ID})"), orders.order),
            ("POST", re.compile(rf"/acme/order/({_ID})/finalize"), orders.finalize),
            ("POST", re.compile(rf"/acme/authz/({_ID})"), orders.authorization),
            ("POST", re.compile(rf"/acme/chall/({_ID})"), orders.challenge),
            ("POST", re.compile(rf"/acme/cert/({_ID})"), orders.certificate),
            ("POST", re.compile(r"/acme/revoke-cert"), revocation.revoke),
            (
                "GET",
                re.compile(r"/acme/renewal-info/([A-Za-z0-9_.-]{1,512})"),
                revocation.renewal_info,
            ),
        ]

    # -- the frame of every answer --------------------------------------------------------

    def handle(self, request: Request) -> Response:
        try:
            response = self._dispatch(request)
        except AcmeProblem as problem:
            response = self.problem_response(problem)
        except Exception as exc:  # a bug here must cost one request, not the server
            self.log(f"internal error on {request.method} {request.path[:100]}: {exc!r}"[:300])
            response = self.problem_response(
                AcmeProblem("serverInternal", "the server failed on this request")
            )
        response.headers.append(("Replay-Nonce", self.nonces.issue()))
        response.headers.append(("Link", f'<{request.base}/directory>;rel="index"'))
        return response

    @staticmethod
    def problem_response(problem: AcmeProblem) -> Response:
        body = json.dumps(problem.to_json(), indent=2).encode()
        return Response(problem.status, body, "application/problem+json", list(problem.headers))

    def _dispatch(self, request: Request) -> Response:
        known = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            known = True
            if method == request.method:
                if method == "POST" and (request.content_type or "").split(";")[0].strip() != (
                    JOSE_JSON
                ):
                    raise AcmeProblem("malformed", f"POST bodies must be {JOSE_JSON}", status=415)
                return self._call(handler, request, match.groups())
        if known:
            allowed = "POST" if request.path != "/directory" else "GET"
            raise AcmeProblem(
                "malformed",
                f"{request.method} is not allowed here",
                status=405,
                headers=[("Allow", allowed)],
            )
        raise AcmeProblem("malformed", f"no such resource: {request.path[:100]}", status=404)

    def _call(
        self, handler: Callable[..., Response], request: Request, groups: tuple[str | Any, ...]
    ) -> Response:
        if getattr(handler, "__self__", None) is self:
            return handler(request, *groups)
        return handler(self, request, *groups)

    # -- helpers for handlers ----------------------------------------------------------------

    def url(self, request: Request, path: str) -> str:
        return request.base + path

    def verify(self, request: Request, *, expect: str = "kid") -> jwsverify.Verified:
        url = self.url(request, request.path)
        return jwsverify.verify_request(
            request.body, url, self.nonces, lambda kid: self._key_for(request, kid), expect=expect
        )

    def _key_for(self, request: Request, kid: str) -> Any:
        return self.account_of_kid(request, kid).jwk

    def account_of_kid(self, request: Request, kid: str) -> Account:
        prefix = self.url(request, "/acme/acct/")
        account = self.store.accounts.get(kid[len(prefix) :]) if kid.startswith(prefix) else None
        if account is None:
            raise AcmeProblem(
                "accountDoesNotExist", "no account has this URL (a restart forgets them)"
            )
        if account.status != "valid":
            raise AcmeProblem("unauthorized", f"the account is {account.status}", status=401)
        return account

    def signed_by_account(self, request: Request) -> tuple[jwsverify.Verified, Account]:
        verified = self.verify(request)
        assert verified.kid is not None
        return verified, self.account_of_kid(request, verified.kid)

    # -- directory and nonces ---------------------------------------------------------------

    def _directory(self, request: Request) -> Response:
        url = self.url
        return json_response(
            200,
            {
                "newNonce": url(request, "/acme/new-nonce"),
                "newAccount": url(request, "/acme/new-account"),
                "newOrder": url(request, "/acme/new-order"),
                "revokeCert": url(request, "/acme/revoke-cert"),
                "keyChange": url(request, "/acme/key-change"),
                "renewalInfo": url(request, "/acme/renewal-info"),
                "meta": {"externalAccountRequired": False},
            },
        )

    def _new_nonce(self, request: Request) -> Response:
        # RFC 8555 7.2: 200 for HEAD, 204 for GET.
        return Response(200 if request.method == "HEAD" else 204)

    # -- accounts ---------------------------------------------------------------------------

    def account_json(self, request: Request, account: Account) -> dict[str, Any]:
        return {
            "status": account.status,
            "contact": list(account.contact),
            "orders": self.url(request, f"/acme/acct/{account.id}/orders"),
        }

    def _account_response(self, request: Request, account: Account, status: int) -> Response:
        location = self.url(request, f"/acme/acct/{account.id}")
        return json_response(status, self.account_json(request, account), [("Location", location)])

    def _new_account(self, request: Request) -> Response:
        verified = self.verify(request, expect="jwk")
        payload = verified.json()
        thumbprint = jwsverify.thumbprint(verified.jwk)
        existing_id = self.store.account_by_thumbprint.get(thumbprint)
        if existing_id is not None:
            existing = self.store.accounts.get(existing_id)
            assert existing is not None
            if existing.status != "valid":
                raise AcmeProblem("unauthorized", "this key's account is deactivated", status=401)
            return self._account_response(request, existing, 200)
        if payload.get("onlyReturnExisting") is True:
            raise AcmeProblem("accountDoesNotExist", "no account has this key")
        if payload.get("externalAccountBinding") is not None:
            raise malformed("this server needs no external account binding; leave it out")
        account = Account(new_id(), verified.jwk, thumbprint, parse_contact(payload))
        self.store.add_account(account)
        return self._account_response(request, account, 201)

    def _account(self, request: Request, account_id: str) -> Response:
        verified, account = self.signed_by_account(request)
        if account.id != account_id:
            raise AcmeProblem("unauthorized", "this is another account's URL")
        if not verified.is_post_as_get:
            payload = verified.json()
            if "contact" in payload:
                account.contact = parse_contact(payload)
            status = payload.get("status")
            if status == "deactivated":  # RFC 8555 7.3.6
                account.status = "deactivated"
            elif status is not None and status != account.status:
                raise malformed("an account's status can only be changed to 'deactivated'")
        return self._account_response(request, account, 200)

    def _account_orders(self, request: Request, account_id: str) -> Response:
        verified, account = self.signed_by_account(request)
        if account.id != account_id:
            raise AcmeProblem("unauthorized", "this is another account's URL")
        if not verified.is_post_as_get:
            raise malformed("the orders list is fetched with POST-as-GET (an empty payload)")
        urls = [self.url(request, f"/acme/order/{o}") for o in account.orders]
        return json_response(200, {"orders": urls})

    def _key_change(self, request: Request) -> Response:
        """RFC 8555 7.3.5: the outer JWS by the old key, the inner by the new one."""
        verified, account = self.signed_by_account(request)
        inner = jwsverify.verify_inner(verified.payload, self.url(request, request.path))
        payload = inner.json()
        if payload.get("account") != verified.kid:
            raise malformed("the inner payload's 'account' is not the signing account")
        if jwsverify.thumbprint_of(payload.get("oldKey")) != account.thumbprint:
            raise malformed("the inner payload's 'oldKey' is not the account's current key")
        thumbprint = jwsverify.thumbprint(inner.jwk)
        taken = self.store.account_by_thumbprint.get(thumbprint)
        if taken is not None:
            location = self.url(request, f"/acme/acct/{taken}")
            raise AcmeProblem(
                "malformed",
                "the new key belongs to an account already",
                status=409,
                headers=[("Location", location)],
            )
        self.store.rekey(account, inner.jwk, thumbprint)
        return self._account_response(request, account, 200)

    # -- validation results -------------------------------------------------------------------

    def complete_validation(self, challenge_id: str, problem: AcmeProblem | None) -> None:
        orders.complete_validation(self, challenge_id, problem)


def parse_contact(payload: dict[str, Any]) -> tuple[str, ...]:
    contact = payload.get("contact", [])
    if not isinstance(contact, list) or not all(isinstance(c, str) for c in contact):
        raise AcmeProblem("invalidContact", "'contact' is a list of mailto: URLs")
    if len(contact) > MAX_CONTACTS:
        raise AcmeProblem("invalidContact", f"at most {MAX_CONTACTS} contacts")
    for item in contact:
        if not item.startswith("mailto:") or len(item) > MAX_CONTACT_LENGTH:
            raise AcmeProblem("unsupportedContact", "only mailto: contacts are supported")
        if any(ord(c) < 0x21 or c in ",<>" for c in item) or "@" not in item:
            raise AcmeProblem("invalidContact", f"{item[:64]!r} is not one email address")
    return tuple(contact)
