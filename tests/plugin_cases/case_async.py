"""devtls_https from async tests, on pytest-asyncio's loop and on anyio's."""

from __future__ import annotations

import httpx
import pytest
from apps import asgi_app, wsgi_app


@pytest.mark.asyncio
async def test_on_pytest_asyncio(devtls_https, devtls_trust):
    server = devtls_https(asgi_app)
    async with httpx.AsyncClient(http2=True) as client:
        answer = await client.get(server.url + "/asyncio")
    assert answer.http_version == "HTTP/2"
    assert answer.json()["path"] == "/asyncio"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_on_anyio(devtls_https, devtls_trust):
    server = devtls_https(wsgi_app)
    async with httpx.AsyncClient() as client:
        answer = await client.get(server.url + "/anyio")
    assert answer.json()["path"] == "/anyio"
