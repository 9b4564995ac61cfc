"""The ACME protocol side (RFC 8555) without a network: JWS checks, nonces, the state machine."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from acme import jws
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from josepy import jwa, jwk

from devtls.acmeserver import revocation
from devtls.acmeserver.allowlist import AllowList
from devtls.acmeserver.jwsverify import crypto_key
from devtls.acmeserver.service import AcmeService
from devtls.acmeserver.wire import Request
from devtls.ca import LocalCA
from tests.acmeserver.fakeclient import BASE, Client, body, header

ERR = "urn:ietf:params:acme:error:"


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.ephemeral()


@pytest.fixture
def service(ca: LocalCA) -> AcmeService:
    return AcmeService(lambda: ca, AllowList.parse(()), days=7)


@pytest.fixture
def client(service: AcmeService) -> Client:
    client = Client(service)
    assert client.register().status == 201
    return client


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def csr_for(*names: str, key: Any = None) -> tuple[str, Any]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return b64(csr.public_bytes(serialization.Encoding.DER)), key


def problem(response: Any, kind: str, status: int | None = None) -> dict[str, Any]:
    document = body(response)
    assert document["type"] == ERR + kind, document
    assert header(response, "Replay-Nonce")
    if status is not None:
        assert response.status == status
    return document


def validated_order(service: AcmeService, client: Client, *names: str) -> dict[str, Any]:
    """An order whose challenges were answered and (as the network side would) found valid."""
    identifiers = [{"type": "dns", "value": n} for n in names]
    created = client.post("/acme/new-order", {"identifiers": identifiers})
    assert created.status == 201, created.body
    order = body(created)
    order["url"] = header(created, "Location")
    for authz_url in order["authorizations"]:
        authz = body(client.post(authz_url, None))
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        assert client.post(challenge["url"], {}).status == 200
    for job in service.jobs:
        service.complete_validation(job.challenge_id, None)
    service.jobs.clear()
    return order


def issue(service: AcmeService, client: Client, *names: str, key: Any = None) -> Any:
    order = validated_order(service, client, *names)
    csr, key = csr_for(*names, key=key)
    return client.post(order["finalize"], {"csr": csr}), order, key


# -- directory and nonces -----------------------------------------------------------------


def test_directory_and_nonces(client: Client) -> None:
    directory = body(client.get("/directory"))
    assert directory["newNonce"] == BASE + "/acme/new-nonce"
    assert directory["meta"]["externalAccountRequired"] is False
    assert {"newAccount", "newOrder", "revokeCert", "keyChange", "renewalInfo"} <= set(directory)
    head = client.get("/acme/new-nonce", "HEAD")
    get = client.get("/acme/new-nonce")
    assert (head.status, get.status) == (200, 204)
    assert header(head, "Replay-Nonce") != header(get, "Replay-Nonce")
    assert header(get, "Link") == f'<{BASE}/directory>;rel="index"'
    missing = client.get("/nowhere")
    assert missing.status == 404
    assert header(missing, "Replay-Nonce")


# -- JWS ------------------------------------------------------------------------------------


def test_accounts_with_es256_and_rs256(service: AcmeService) -> None:
    for key_type in ("ec", "rsa"):
        client = Client(service, key_type)
        created = client.register()
        assert created.status == 201
        assert body(created)["status"] == "valid"
        again = client.post("/acme/new-account", {"termsOfServiceAgreed": True}, use_jwk=True)
        assert again.status == 200
        assert header(again, "Location") == client.kid


def test_only_return_existing(service: AcmeService) -> None:
    stranger = Client(service)
    refused = stranger.post("/acme/new-account", {"onlyReturnExisting": True}, use_jwk=True)
    problem(refused, "accountDoesNotExist", 400)


def test_a_bad_signature_is_refused(client: Client) -> None:
    data = json.loads(client.signed(BASE + "/acme/new-order", {"identifiers": []}))
    signature = bytearray(base64.urlsafe_b64decode(data["signature"] + "=="))
    signature[5] ^= 1
    data["signature"] = b64(bytes(signature))
    refused = client.post("/acme/new-order", None, raw=json.dumps(data).encode())
    assert "signature" in problem(refused, "malformed", 400)["detail"]


def test_a_nonce_is_accepted_once(client: Client) -> None:
    nonce = client.nonce()
    raw = client.signed(BASE + f"/acme/acct/{client.kid.rsplit('/', 1)[1]}", None, nonce=nonce)
    path = client.kid[len(BASE) :]
    assert client.post(path, None, raw=raw).status == 200
    replayed = client.post(path, None, raw=raw)
    problem(replayed, "badNonce", 400)


def test_an_unknown_nonce_is_bad(client: Client) -> None:
    refused = client.post(client.kid, None, nonce="bm90LWlzc3VlZA")
    problem(refused, "badNonce", 400)


def test_the_signed_url_must_be_the_url_requested(client: Client) -> None:
    raw = client.signed(BASE + "/acme/new-order", {"identifiers": []})
    refused = client.post(client.kid, None, raw=raw)
    problem(refused, "unauthorized", 403)


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_alg_none_and_hmac_are_refused(client: Client, alg: str) -> None:
    protected = {"alg": alg, "nonce": client.nonce(), "url": BASE + "/acme/new-order",
                 "kid": client.kid}  # fmt: skip
    raw = json.dumps({
        "protected": b64(json.dumps(protected).encode()),
        "payload": b64(json.dumps({"identifiers": [{"type": "dns", "value": "a.test"}]}).encode()),
        "signature": b64(b"x"),
    }).encode()  # fmt: skip
    problem(client.post("/acme/new-order", None, raw=raw), "badSignatureAlgorithm", 400)


def test_an_unknown_account_is_refused(service: AcmeService) -> None:
    stranger = Client(service)
    stranger.kid = BASE + "/acme/acct/nobody"
    refused = stranger.post(
        "/acme/new-order", {"identifiers": [{"type": "dns", "value": "a.test"}]}
    )
    problem(refused, "accountDoesNotExist", 400)


def test_jwk_and_kid_are_not_interchangeable(client: Client) -> None:
    as_jwk = client.post("/acme/new-order", {"identifiers": []}, use_jwk=True)
    assert "kid" in problem(as_jwk, "malformed", 400)["detail"]
    key = jwk.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    wrong_key = client.post("/acme/new-order", {"identifiers": []}, key=key)
    problem(wrong_key, "malformed", 400)
    wrong_type = client.service.handle(
        Request("POST", "/acme/new-order", BASE, "application/json", b"{}")
    )
    assert wrong_type.status == 415


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b'{"protected": 1, "payload": "", "signature": ""}',
     b'{"protected": "!!", "payload": "", "signature": ""}',
     b'{"protected": "e30", "payload": "", "signature": "", "header": {}}',
     b'{"payload": "", "signatures": []}', b'{"protected": "W10", "payload": "", "signature": ""}'],
)  # fmt: skip
def test_malformed_jws_is_one_problem(client: Client, raw: bytes) -> None:
    problem(client.post("/acme/new-order", None, raw=raw), "malformed", 400)


# -- orders -----------------------------------------------------------------------------------


def test_a_name_outside_the_allow_list_is_rejected(client: Client) -> None:
    refused = client.post(
        "/acme/new-order", {"identifiers": [{"type": "dns", "value": "example.com"}]}
    )
    document = problem(refused, "rejectedIdentifier", 400)
    assert "allow-list" in document["detail"]
    both = client.post("/acme/new-order", {"identifiers": [
        {"type": "dns", "value": "example.com"}, {"type": "ip", "value": "192.0.2.1"}]})  # fmt: skip
    assert len(problem(both, "rejectedIdentifier")["subproblems"]) == 2
    wildcard = client.post(
        "/acme/new-order", {"identifiers": [{"type": "dns", "value": "*.a.test"}]}
    )
    assert "dns-01" in problem(wildcard, "rejectedIdentifier")["detail"]
    other = client.post(
        "/acme/new-order", {"identifiers": [{"type": "email", "value": "a@b.test"}]}
    )
    problem(other, "unsupportedIdentifier")


def test_allow_replaces_the_default() -> None:
    allow = AllowList.parse(["*.corp.example", "10.0.0.0/8"])
    ca = LocalCA.ephemeral()
    service = AcmeService(lambda: ca, allow, days=1)
    client = Client(service)
    client.register()
    assert client.post("/acme/new-order", {"identifiers": [
        {"type": "dns", "value": "a.b.corp.example"}, {"type": "ip", "value": "10.1.2.3"}]}
    ).status == 201  # fmt: skip
    problem(
        client.post("/acme/new-order", {"identifiers": [{"type": "dns", "value": "localhost"}]}),
        "rejectedIdentifier",
    )


def test_the_whole_flow_issues_a_short_lived_chain(
    service: AcmeService, client: Client, ca: LocalCA
) -> None:
    done, order, _ = issue(service, client, "app.localhost", "b.test")
    assert done.status == 200, done.body
    finished = body(done)
    assert finished["status"] == "valid"
    cert_response = client.post(finished["certificate"], None)
    assert cert_response.content_type == "application/pem-certificate-chain"
    chain = x509.load_pem_x509_certificates(cert_response.body)
    assert chain[1] == ca.cert
    leaf = chain[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"app.localhost", "b.test"}
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == dt.timedelta(days=7)
    listing = body(client.post(f"{client.kid}/orders", None))
    assert order["url"] in listing["orders"]
    # POST-as-GET, not GET.
    assert client.get(order["url"][len(BASE) :]).status == 405


def test_finalize_before_validation_is_not_ready(client: Client) -> None:
    created = body(
        client.post("/acme/new-order", {"identifiers": [{"type": "dns", "value": "a.test"}]})
    )
    csr, _ = csr_for("a.test")
    problem(client.post(created["finalize"], {"csr": csr}), "orderNotReady", 403)


def test_csr_names_must_equal_the_order(service: AcmeService, client: Client) -> None:
    order = validated_order(service, client, "a.test")
    for names in (("a.test", "b.test"), ("b.test",)):
        csr, _ = csr_for(*names)
        problem(client.post(order["finalize"], {"csr": csr}), "badCSR", 400)
    # The account key is not a certificate key.
    csr, _ = csr_for("a.test", key=crypto_key(client.jwk))
    problem(client.post(order["finalize"], {"csr": csr}), "badCSR", 400)


def test_a_failed_challenge_invalidates_the_order(service: AcmeService, client: Client) -> None:
    from devtls.acmeserver.problems import AcmeProblem

    created = client.post("/acme/new-order", {"identifiers": [{"type": "dns", "value": "a.test"}]})
    order = body(created)
    authz = body(client.post(order["authorizations"][0], None))
    client.post(authz["challenges"][1]["url"], {})
    (job,) = service.jobs
    assert job.type == "tls-alpn-01"
    assert job.key_authorization.startswith(job.token + ".")
    service.complete_validation(job.challenge_id, AcmeProblem("connection", "no answer"))
    authz = body(client.post(order["authorizations"][0], None))
    assert authz["status"] == "invalid"
    assert authz["challenges"][1]["error"]["type"] == ERR + "connection"
    assert body(client.post(header(created, "Location"), None))["status"] == "invalid"


# -- accounts: update, rollover, deactivation ------------------------------------------------


def test_account_update_and_deactivation(service: AcmeService, client: Client) -> None:
    updated = client.post(client.kid, {"contact": ["mailto:dev@example.test"]})
    assert body(updated)["contact"] == ["mailto:dev@example.test"]
    problem(client.post(client.kid, {"contact": ["tel:123"]}), "unsupportedContact")
    assert body(client.post(client.kid, {"status": "deactivated"}))["status"] == "deactivated"
    refused = client.post("/acme/new-order", {"identifiers": [{"type": "dns", "value": "a.test"}]})
    problem(refused, "unauthorized", 401)


def test_key_rollover(service: AcmeService, client: Client) -> None:
    new_key = jwk.JWKEC(key=ec.generate_private_key(ec.SECP384R1()))
    url = BASE + "/acme/key-change"
    inner = jws.JWS.sign(
        json.dumps({"account": client.kid, "oldKey": client.jwk.public_key().to_json()}).encode(),
        new_key, jwa.ES384, None, url=url,
    )  # fmt: skip
    rolled = client.post("/acme/key-change", json.loads(inner.json_dumps()))
    assert rolled.status == 200, rolled.body
    # The old key no longer signs for the account; the new one does.
    old = client.post(client.kid, None)
    assert old.status == 400
    assert body(old)["type"] in (ERR + "malformed", ERR + "badPublicKey")
    client.jwk, client.alg = new_key, jwa.ES384
    assert client.post(client.kid, None).status == 200


# -- revocation and renewal information ------------------------------------------------------


def test_revocation_by_account_and_its_key_refused_later(
    service: AcmeService, client: Client
) -> None:
    done, _, key = issue(service, client, "a.test")
    chain = client.post(body(done)["certificate"], None).body
    leaf = x509.load_pem_x509_certificates(chain)[0]
    der = b64(leaf.public_bytes(serialization.Encoding.DER))
    other = Client(service)
    other.register()
    problem(other.post("/acme/revoke-cert", {"certificate": der}), "unauthorized", 403)
    problem(
        client.post("/acme/revoke-cert", {"certificate": der, "reason": 7}), "badRevocationReason"
    )
    assert client.post("/acme/revoke-cert", {"certificate": der, "reason": 1}).status == 200
    problem(client.post("/acme/revoke-cert", {"certificate": der}), "alreadyRevoked")
    # The revoked certificate's key cannot be certified again.
    order = validated_order(service, client, "a.test")
    csr, _ = csr_for("a.test", key=key)
    assert "revoked" in problem(client.post(order["finalize"], {"csr": csr}), "badCSR")["detail"]
    ident = revocation.cert_id(leaf)
    assert ident is not None
    window = body(client.get(f"/acme/renewal-info/{ident}"))["suggestedWindow"]
    assert window["start"] < window["end"]


def test_revocation_by_the_certificate_key(service: AcmeService, client: Client) -> None:
    done, _, key = issue(service, client, "b.test")
    leaf = x509.load_pem_x509_certificates(client.post(body(done)["certificate"], None).body)[0]
    der = b64(leaf.public_bytes(serialization.Encoding.DER))
    holder = Client(service)
    holder.jwk = jwk.JWKEC(key=key)
    assert holder.post("/acme/revoke-cert", {"certificate": der}, use_jwk=True).status == 200


def test_renewal_info_window(service: AcmeService, client: Client) -> None:
    done, _, _ = issue(service, client, "c.test")
    leaf = x509.load_pem_x509_certificates(client.post(body(done)["certificate"], None).body)[0]
    answer = client.get(f"/acme/renewal-info/{revocation.cert_id(leaf)}")
    assert answer.status == 200
    assert header(answer, "Retry-After")
    window = body(answer)["suggestedWindow"]
    start = dt.datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
    assert leaf.not_valid_before_utc < start < leaf.not_valid_after_utc
    assert client.get("/acme/renewal-info/AAAA.AAAA").status == 404


def test_every_resource_reads_as_the_acme_library_reads_it(
    service: AcmeService, client: Client
) -> None:
    """The resource objects parse with acme.messages, the classes certbot and serve --acme use."""
    from acme import messages

    directory = messages.Directory.from_json(body(client.get("/directory")))
    assert directory.meta.external_account_required is False
    account = messages.Registration.from_json(body(client.post(client.kid, None)))
    assert account.status == "valid"  # Registration keeps it as the text
    done, order, _ = issue(service, client, "a.test")
    parsed = messages.Order.from_json(body(done))
    assert parsed.status == messages.STATUS_VALID
    assert [i.value for i in parsed.identifiers] == ["a.test"]
    authz = messages.Authorization.from_json(body(client.post(order["authorizations"][0], None)))
    assert authz.status == messages.STATUS_VALID
    assert any(
        c.chall.typ == "http-01" and c.status == messages.STATUS_VALID for c in authz.challenges
    )
    error = messages.Error.from_json(body(client.post("/acme/new-order", {"identifiers": []})))
    assert error.code == "malformed"
