"""Every client library verifies devtls_https for real, through devtls_trust."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import httpx
import requests
import urllib3
import websockets
from apps import asgi_app, ws_upstream, wsgi_app

__all__ = ["ws_upstream"]

VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
BEFORE = {name: os.environ.get(name) for name in VARIABLES}


def test_httpx_over_http2_and_http1(devtls_https, devtls_trust):
    server = devtls_https(wsgi_app)
    with httpx.Client(http2=True) as client:
        answer = client.get(server.url + "/h2")
    assert answer.http_version == "HTTP/2"
    assert answer.json() == {"path": "/h2", "proto": "https"}
    with httpx.Client() as client:
        assert client.get(server.url + "/h1").http_version == "HTTP/1.1"


def test_requests(devtls_https, devtls_trust):
    server = devtls_https(wsgi_app)
    assert requests.get(server.url + "/requests", timeout=30).json()["path"] == "/requests"


def test_urllib3(devtls_https, devtls_trust):
    server = devtls_https(wsgi_app)
    with urllib3.PoolManager() as pool:
        answer = pool.request("GET", server.url + "/urllib3", retries=False)
    assert answer.json()["path"] == "/urllib3"


def test_aiohttp(devtls_https, devtls_trust):
    server = devtls_https(wsgi_app)

    async def fetch():
        async with aiohttp.ClientSession() as session, session.get(server.url + "/aio") as answer:
            return await answer.json()

    assert asyncio.run(fetch())["path"] == "/aio"


def test_websockets_wss_echo(devtls_https, devtls_trust, ws_upstream):
    server = devtls_https(ws_upstream)
    assert server.ws_url.startswith("wss://")

    async def talk():
        async with websockets.connect(server.ws_url + "/echo") as connection:
            await connection.send("ping over wss")
            return await connection.recv()

    assert asyncio.run(talk()) == "ping over wss"


def test_asgi_app_on_uvicorn(devtls_https, devtls_trust):
    server = devtls_https(asgi_app)
    assert httpx.get(server.url + "/asgi").json() == {"path": "/asgi", "asgi": "1.1"}


def test_https_url_upstream_is_verified_against_devtls_ca(devtls_https, devtls_trust):
    inner = devtls_https(wsgi_app)
    outer = devtls_https(inner.url)
    assert httpx.get(outer.url + "/twice").json()["path"] == "/twice"


def test_the_server_object(devtls_https, devtls_ca):
    server = devtls_https(wsgi_app)
    assert server.ca is devtls_ca
    assert server.url.startswith("https://")
    assert server.ws_url == "wss://" + server.url.removeprefix("https://")
    assert server.leaf.ca_pem() == devtls_ca.cert_pem()
    assert {str(n) for n in server.leaf.names} == {"localhost", "127.0.0.1", "::1"}
    # Without devtls_trust, a client given the CA verifies too.
    answer = httpx.get(server.url + "/ctx", verify=devtls_ca.client_context())
    assert answer.json()["path"] == "/ctx"


def test_devtls_trust_sets_the_variables_for_its_test(devtls_trust):
    assert {name: os.environ[name] for name in VARIABLES} == devtls_trust.variables
    assert devtls_trust.ca_file.read_bytes() == devtls_trust.ca.cert_pem()
    assert devtls_trust.ca.cert_pem().strip() in devtls_trust.bundle.read_bytes()


def test_zz_and_only_for_it():
    assert {name: os.environ.get(name) for name in VARIABLES} == BEFORE
