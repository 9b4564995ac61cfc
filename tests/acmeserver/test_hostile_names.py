"""Identifiers and Host headers that try to slip past acme-server's checks."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable

import pytest

from devtls.acmeserver import state
from devtls.acmeserver.allowlist import AllowList, parse_identifier
from devtls.acmeserver.problems import AcmeProblem
from devtls.acmeserver.service import AcmeService
from devtls.ca import LocalCA
from tests.acmeserver.conftest import AcmeServerProcess
from tests.acmeserver.fakeclient import Client, body, header

ERR = "urn:ietf:params:acme:error:"


@pytest.mark.parametrize(
    "value", ["::1%lo", "::1%1", "fe80::1%eth0", "::1%\n\x1b[31mforged log line"]
)
def test_an_ip_identifier_with_a_zone_is_malformed(value: str) -> None:
    # RFC 8738 3: an IP identifier is the RFC 5952 text of an address; a zone is no part of
    # it (a certificate cannot hold one), and its text is anything the client likes.
    with pytest.raises(AcmeProblem) as caught:
        parse_identifier({"type": "ip", "value": value})
    assert caught.value.kind == "malformed"
    assert "\n" not in caught.value.detail
    assert "\x1b" not in caught.value.detail


def test_an_order_for_a_zoned_loopback_address_is_refused() -> None:
    service = AcmeService(LocalCA.ephemeral, AllowList.parse(()), days=7)
    client = Client(service)
    assert client.register().status == 201
    value = "::1%\n\x1b[31mforged log line"
    answer = client.post("/acme/new-order", {"identifiers": [{"type": "ip", "value": value}]})
    assert answer.status == 400
    assert body(answer)["type"] == ERR + "malformed"
    assert not service.store.orders.items
    assert not service.jobs


def test_an_ipv6_host_header_is_answered(
    acme_server_factory: Callable[..., AcmeServerProcess],
) -> None:
    # A client of an acme-server on [::1] sends "Host: [::1]:PORT", as it must (RFC 3986 3.2.2).
    server = acme_server_factory("--listen", "[::1]:0")
    assert server.directory.startswith("https://[::1]:"), server.directory
    context = ssl.create_default_context(cafile=str(server.root))
    with urllib.request.urlopen(server.directory, context=context, timeout=15) as answer:
        directory = json.loads(answer.read())
    assert directory["newNonce"] == server.directory.replace("/directory", "/acme/new-nonce")


def test_a_loop_of_new_accounts_does_not_lock_others_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test suite that registers a fresh account per run fills the table in time (accounts
    # are saved across restarts); the server must still take the next client, forgetting an
    # idle account, not refuse every new account for good.
    monkeypatch.setattr(state, "MAX_ACCOUNTS", 8)
    service = AcmeService(LocalCA.ephemeral, AllowList.parse(()), days=7)
    busy = Client(service)
    assert busy.register().status == 201
    order = busy.post("/acme/new-order", {"identifiers": [{"type": "dns", "value": "a.test"}]})
    assert order.status == 201
    for _ in range(7):
        assert Client(service).register().status == 201
    late = Client(service)
    assert late.register().status == 201, late_body(late)
    assert len(service.store.accounts) <= 8
    # The account in the middle of an order is not the one forgotten.
    assert busy.post(header(order, "Location") or "", None).status == 200


def test_the_account_forgotten_is_the_least_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "MAX_ACCOUNTS", 3)
    service = AcmeService(LocalCA.ephemeral, AllowList.parse(()), days=7)
    first, second, third = Client(service), Client(service), Client(service)
    for client in (first, second, third):
        assert client.register().status == 201
    # The oldest account renews now and then: it is in use, the second one is not.
    assert first.post(first.kid or "", None).status == 200
    assert Client(service).register().status == 201
    assert first.post(first.kid or "", None).status == 200
    assert body(second.post(second.kid or "", None))["type"].endswith(":accountDoesNotExist")
    assert third.post(third.kid or "", None).status == 200


def late_body(client: Client) -> object:
    return body(client.post("/acme/new-account", {"termsOfServiceAgreed": True}, use_jwk=True))


def test_a_loop_of_new_orders_does_not_lock_others_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pending orders live a day: a client that orders and never finishes, in a loop, would
    # otherwise leave every other client rateLimited for that day.
    monkeypatch.setattr(state, "MAX_ORDERS", 4)
    monkeypatch.setattr(state, "MAX_AUTHZS", 8)
    service = AcmeService(LocalCA.ephemeral, AllowList.parse(()), days=7)
    looping, other = Client(service), Client(service)
    assert looping.register().status == 201
    assert other.register().status == 201
    names = [{"type": "dns", "value": "a.test"}, {"type": "dns", "value": "b.test"}]
    for _ in range(10):
        assert looping.post("/acme/new-order", {"identifiers": names}).status == 201
    created = other.post("/acme/new-order", {"identifiers": names[:1]})
    assert created.status == 201, body(created)
    assert len(service.store.orders) <= 4
    assert len(service.store.authzs) <= 8
    assert len(service.store.challenges) <= 16
    assert other.post(header(created, "Location") or "", None).status == 200
