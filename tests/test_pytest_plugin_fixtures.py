"""The plugin's fixtures used in this suite directly (it is installed, so pytest loads it)."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import stat
import sys
import threading
from pathlib import Path

import httpx
import pytest
import websockets
from cryptography.hazmat.primitives.serialization import Encoding

from devtls.ca import LocalCA
from devtls.errors import DevtlsError, UsageError
from devtls.testing import HTTPSServers, Leaf
from devtls.testing_apps import is_asgi

UTC = dt.timezone.utc


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_devtls_ca_lives_in_memory(devtls_ca: LocalCA, caroot: Path) -> None:
    assert devtls_ca.path is None
    assert "ephemeral" in devtls_ca.subject
    assert not caroot.exists()


def test_leaf_files_in_tmp_path(devtls_cert, tmp_path: Path) -> None:
    leaf = devtls_cert()
    assert isinstance(leaf, Leaf)
    assert {str(n) for n in leaf.names} == {"localhost", "127.0.0.1", "::1"}
    files = leaf.files()
    assert files.cert.parent == tmp_path / "devtls-certs"
    assert files.cert.name.startswith("localhost+2-")
    assert files.key.name == files.cert.name.replace(".pem", "-key.pem")
    assert stat.S_IMODE(files.cert.stat().st_mode) == 0o644
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert files.cert.read_bytes() == leaf.cert_pem()
    assert files.key.read_bytes() == leaf.key_pem()
    assert files.ca.read_bytes() == leaf.ca_pem()
    elsewhere = leaf.files(tmp_path / "elsewhere")
    assert elsewhere.cert.parent == tmp_path / "elsewhere"
    as_str = leaf.files(str(tmp_path / "as-str"))
    assert as_str.cert.parent == tmp_path / "as-str"
    assert as_str.key.read_bytes() == leaf.key_pem()


def test_two_leaves_for_one_name_get_files_of_their_own(devtls_cert) -> None:
    first, second = devtls_cert("app.test").files(), devtls_cert("app.test").files()
    assert first.cert != second.cert
    client = devtls_cert("me.test", client=True).files()
    assert client.cert.name.startswith("me.test-client-")


def test_exact_validity_dates(devtls_cert) -> None:
    start = dt.datetime(2020, 1, 1, tzinfo=UTC)
    end = dt.datetime(2020, 2, 1, tzinfo=UTC)
    leaf = devtls_cert("old.test", not_before=start, not_after=end)
    assert (leaf.cert.not_valid_before_utc, leaf.cert.not_valid_after_utc) == (start, end)
    # One date alone: the other is the default lifetime away.
    leaf = devtls_cert("old.test", not_after=end)
    assert leaf.cert.not_valid_before_utc == end - dt.timedelta(days=825)


@pytest.mark.parametrize(
    ("not_before", "not_after", "message"),
    [
        (dt.datetime(2020, 1, 1), None, "aware datetimes"),
        (dt.datetime(2020, 2, 1, tzinfo=UTC), dt.datetime(2020, 1, 1, tzinfo=UTC), "after"),
        (dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2023, 1, 1, tzinfo=UTC), "825 days"),
    ],
)
def test_bad_validity_dates_are_one_clear_error(
    devtls_cert, not_before: dt.datetime, not_after: dt.datetime | None, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        devtls_cert("x.test", not_before=not_before, not_after=not_after)


def test_a_leaf_of_another_ca(devtls_cert, devtls_ca: LocalCA) -> None:
    other = LocalCA.ephemeral()
    leaf = devtls_cert("x.test", ca=other, key_type="rsa")
    assert leaf.ca_cert == other.cert != devtls_ca.cert


def test_http1_only(devtls_https, devtls_trust) -> None:
    server = devtls_https(hello, http2=False)
    with httpx.Client(http2=True) as client:
        answer = client.get(server.url)
    assert (answer.http_version, answer.text) == ("HTTP/1.1", "hello")
    assert any('"GET ' in line and " 200 " in line for line in server.log)


def test_a_given_leaf_is_the_one_served(devtls_https, devtls_cert, devtls_ca: LocalCA) -> None:
    leaf = devtls_cert("localhost", "app.test")
    server = devtls_https(hello, leaf=leaf)
    assert server.leaf.cert == leaf.cert
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        devtls_ca.client_context().wrap_socket(raw, server_hostname="app.test") as tls,
    ):
        assert tls.getpeercert(binary_form=True) == leaf.cert.public_bytes(ssl_encoding())


def ssl_encoding():

    return Encoding.DER


@pytest.mark.parametrize(
    ("upstream", "options", "message"),
    [
        (hello, {"expired": True, "not_yet_valid": True}, "exclude each other"),
        (True, {}, "not a bool"),
        (object(), {}, "neither an app nor an upstream"),
        (hello, {"interface": "rsgi"}, "interface 'rsgi'"),
    ],
)
def test_wrong_arguments_are_one_clear_error(devtls_https, upstream, options, message) -> None:
    with pytest.raises(UsageError, match=message):
        devtls_https(upstream, **options)


def test_asgi_without_uvicorn_says_to_install_it(devtls_https, monkeypatch) -> None:
    async def app(scope, receive, send) -> None:
        raise AssertionError("never run")

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(DevtlsError, match="pip install uvicorn"):
        devtls_https(app)


def test_which_apps_are_asgi() -> None:
    async def function(scope, receive, send) -> None: ...

    class Asgi:
        async def __call__(self, scope, receive, send) -> None: ...

    class Wsgi:
        def __call__(self, environ, start_response) -> list[bytes]:
            return []

    assert is_asgi(function)
    assert is_asgi(Asgi())
    assert not is_asgi(hello)
    assert not is_asgi(Wsgi())


def test_close_stops_every_server_and_thread(devtls_ca: LocalCA) -> None:
    async def app(scope, receive, send) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    servers = HTTPSServers(devtls_ca)
    before = set(threading.enumerate())
    started = [servers.start(hello), servers.start(app), servers.start(hello, untrusted=True)]
    assert set(threading.enumerate()) > before
    verify = devtls_ca.client_context()
    assert httpx.get(started[1].url, verify=verify).status_code == 204
    with pytest.raises(httpx.ConnectError, match="unable to get local issuer certificate"):
        httpx.get(started[2].url, verify=verify)
    servers.close()
    assert set(threading.enumerate()) == before
    for server in started:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=10).close()
    servers.close()  # twice is fine


def test_an_asgi_websocket_over_wss(devtls_https, devtls_trust) -> None:
    async def app(scope, receive, send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo " + message["text"]})
        await send({"type": "websocket.close"})

    server = devtls_https(app, interface="asgi")

    async def talk() -> str:
        async with websockets.connect(server.ws_url + "/ws") as connection:
            await connection.send("hi")
            return str(await connection.recv())

    assert asyncio.run(talk()) == "echo hi"
