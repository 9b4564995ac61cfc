"""Challenge answers: the pure checks (RFC 8737, RFC 8555 8.3) and validation over loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from devtls.acmeserver import challenges as checks
from devtls.acmeserver.allowlist import AllowList, Identifier, parse_identifier
from devtls.acmeserver.problems import AcmeProblem
from devtls.acmeserver.service import AcmeService
from devtls.acmeserver.validate import ValidationPorts, validate
from devtls.acmeserver.wire import Request, ValidationJob
from devtls.ca import LocalCA
from tests.routerprocess import free_ports

KEY_AUTH = "token.thumbprint"
NAME = Identifier("dns", "app.localhost")


def alpn_cert(names: list[str], digest: bytes, *, critical: bool = True) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme")])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.UnrecognizedExtension(checks.ID_PE_ACME_IDENTIFIER, b"\x04\x20" + digest),
                       critical=critical)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(Encoding.DER)


def test_tls_alpn01_certificate_checks() -> None:
    digest = hashlib.sha256(KEY_AUTH.encode()).digest()
    checks.check_tls_alpn01(alpn_cert([NAME.value], digest), "acme-tls/1", NAME, KEY_AUTH)
    wrong = [
        (alpn_cert([NAME.value], digest), "http/1.1"),
        (alpn_cert([NAME.value], b"\x00" * 32), "acme-tls/1"),
        (alpn_cert([NAME.value], digest, critical=False), "acme-tls/1"),
        (alpn_cert([NAME.value, "b.localhost"], digest), "acme-tls/1"),
        (alpn_cert(["other.localhost"], digest), "acme-tls/1"),
    ]
    for der, alpn in wrong:
        with pytest.raises(AcmeProblem):
            checks.check_tls_alpn01(der, alpn, NAME, KEY_AUTH)


def test_http01_body_checks() -> None:
    checks.check_http01(200, KEY_AUTH.encode() + b"\n", KEY_AUTH)
    for status, body in ((404, KEY_AUTH.encode()), (200, b"something else")):
        with pytest.raises(AcmeProblem, match=r"did not answer|answered") as caught:
            checks.check_http01(status, body, KEY_AUTH)
        assert caught.value.kind == "incorrectResponse"


def test_ip_identifiers_use_the_reverse_name() -> None:
    assert checks.sni_for(Identifier("ip", "127.0.0.1")) == "1.0.0.127.in-addr.arpa"
    assert checks.host_header(Identifier("ip", "::1")) == "[::1]"


async def answer_with(body: bytes, port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def test_http01_over_loopback_for_a_localhost_name() -> None:
    http_port, tls_port = free_ports(2)
    ports = ValidationPorts(http_port, tls_port)
    job = ValidationJob("c", "http-01", NAME, "token", KEY_AUTH)

    async def scenario() -> list[AcmeProblem | None]:
        results = [await validate(job, ports)]  # nothing listens
        server = await answer_with(KEY_AUTH.encode(), http_port)
        results.append(await validate(job, ports))
        server.close()
        await server.wait_closed()
        server = await answer_with(b"wrong", http_port)
        results.append(await validate(job, ports))
        server.close()
        await server.wait_closed()
        return results

    nothing, right, wrong = asyncio.run(scenario())
    assert nothing is not None
    assert nothing.kind == "connection"
    assert f"port {http_port}" in nothing.detail
    assert right is None
    assert wrong is not None
    assert wrong.kind == "incorrectResponse"


def test_environment_sets_the_validation_ports() -> None:
    assert ValidationPorts.from_env({}) == ValidationPorts(80, 443)
    env = {"DEVTLS_ACME_HTTP_PORT": "5002", "DEVTLS_ACME_TLS_PORT": "5001"}
    assert ValidationPorts.from_env(env) == ValidationPorts(5002, 5001)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12))  # fmt: skip
def test_parse_identifier_parses_or_raises_a_problem(raw: object) -> None:
    try:
        identifier = parse_identifier(raw)
    except AcmeProblem:
        return
    assert identifier.type in ("dns", "ip")


_CA = LocalCA.ephemeral()


@settings(max_examples=200)
@given(st.binary(max_size=600), st.sampled_from(["/acme/new-account", "/acme/new-order",
                                                 "/acme/key-change", "/acme/revoke-cert"]))  # fmt: skip
def test_any_body_gets_a_problem_never_an_exception(body: bytes, path: str) -> None:
    service = AcmeService(lambda: _CA, AllowList.parse(()), days=7)
    response = service.handle(Request("POST", path, "https://127.0.0.1:14000",
                                      "application/jose+json", body))  # fmt: skip
    assert 400 <= response.status < 500
    assert response.content_type == "application/problem+json"


def test_http01_for_an_ip_identifier_goes_to_that_address() -> None:
    http_port, tls_port = free_ports(2)
    job = ValidationJob("c", "http-01", Identifier("ip", "127.0.0.1"), "token", KEY_AUTH)

    async def scenario() -> AcmeProblem | None:
        server = await answer_with(KEY_AUTH.encode(), http_port)
        try:
            return await validate(job, ValidationPorts(http_port, tls_port))
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) is None
