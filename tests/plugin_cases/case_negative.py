"""The negative helpers fail the way each client library reports the case."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import httpx
import pytest
import requests
import urllib3
import websockets
from apps import wsgi_app

# devtls_https options -> (OpenSSL's verify code, its message).
CASES = {
    "expired": ({"expired": True}, 10, "certificate has expired"),
    "not_yet_valid": ({"not_yet_valid": True}, 9, "certificate is not yet valid"),
    "hostname": ({"names": ("wrong.test",)}, 62, "Hostname mismatch"),
    "untrusted": ({"untrusted": True}, 20, "unable to get local issuer certificate"),
}


def verify_error(exc: BaseException) -> ssl.SSLCertVerificationError:
    """The ssl error under a library's own exception (its cause, reason or argument)."""
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        todo.extend(e for e in [*linked, *current.args] if isinstance(e, BaseException))
    raise AssertionError(f"no certificate verification error in {exc!r}")


@pytest.fixture(params=sorted(CASES))
def case(request, devtls_https, devtls_trust):
    options, code, message = CASES[request.param]
    return devtls_https(wsgi_app, **options), code, message


def test_httpx(case):
    server, code, message = case
    with pytest.raises(httpx.ConnectError, match=message) as caught:
        httpx.get(server.url)
    assert verify_error(caught.value).verify_code == code


def test_requests(case):
    server, code, message = case
    with pytest.raises(requests.exceptions.SSLError, match=message) as caught:
        requests.get(server.url, timeout=30)
    assert verify_error(caught.value).verify_code == code


def test_urllib3(case):
    server, code, _message = case
    with urllib3.PoolManager() as pool, pytest.raises(urllib3.exceptions.SSLError) as caught:
        pool.request("GET", server.url, retries=False)
    assert verify_error(caught.value).verify_code == code


def test_aiohttp(case):
    server, code, _message = case

    async def fetch():
        async with aiohttp.ClientSession() as session:
            await session.get(server.url)

    with pytest.raises(aiohttp.ClientConnectorCertificateError) as caught:
        asyncio.run(fetch())
    assert caught.value.certificate_error.verify_code == code


def test_websockets(case):
    server, code, _message = case

    async def talk():
        async with websockets.connect(server.ws_url):
            pass

    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        asyncio.run(talk())
    assert caught.value.verify_code == code


# -- mutual TLS -------------------------------------------------------------------------


@pytest.fixture
def mtls(devtls_https, devtls_trust, devtls_cert):
    return devtls_https(wsgi_app, client_cert_required=True), devtls_cert("me.test", client=True)


def test_httpx_mtls(mtls):
    server, leaf = mtls
    assert httpx.get(server.url + "/m", verify=leaf.client_context()).json()["path"] == "/m"
    with pytest.raises(httpx.ReadError, match="CERTIFICATE_REQUIRED"):
        httpx.get(server.url)
    assert "TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE" in server.log


def test_requests_mtls(mtls):
    server, leaf = mtls
    files = leaf.files()
    answer = requests.get(server.url + "/m", cert=(str(files.cert), str(files.key)), timeout=30)
    assert answer.json()["path"] == "/m"
    with pytest.raises(requests.exceptions.ConnectionError, match="CERTIFICATE_REQUIRED"):
        requests.get(server.url, timeout=30)


def test_urllib3_mtls(mtls):
    server, leaf = mtls
    files = leaf.files()
    with urllib3.PoolManager(cert_file=str(files.cert), key_file=str(files.key)) as pool:
        assert pool.request("GET", server.url + "/m").json()["path"] == "/m"
    with urllib3.PoolManager() as pool, pytest.raises(urllib3.exceptions.SSLError) as caught:
        pool.request("GET", server.url, retries=False)
    assert "CERTIFICATE_REQUIRED" in str(caught.value)


def test_aiohttp_mtls(mtls):
    server, leaf = mtls

    async def fetch(context):
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url, ssl=context) as answer,
        ):
            return await answer.json()

    assert asyncio.run(fetch(leaf.client_context()))["path"] == "/"
    with pytest.raises(aiohttp.ClientError, match="CERTIFICATE_REQUIRED"):
        asyncio.run(fetch(True))


def test_a_server_leaf_is_no_client_certificate(mtls, devtls_cert):
    server, _ = mtls
    not_for_clients = devtls_cert("me.test")
    with pytest.raises(httpx.ReadError, match="UNSUPPORTED_CERTIFICATE"):
        httpx.get(server.url, verify=not_for_clients.client_context())
