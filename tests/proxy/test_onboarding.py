"""The onboarding page's answers, made from request heads alone (no sockets)."""

from __future__ import annotations

import plistlib
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from devtls.ca import LocalCA
from devtls.errors import ProtocolError
from devtls.proxy import http1
from devtls.proxy.onboarding import (
    CRT_PATH,
    MOBILECONFIG_PATH,
    PEM_PATH,
    OnboardingSite,
    fingerprint,
    mobileconfig,
)

URLS = ["https://10.0.0.5:8443/", "https://box.local:8443/"]


@pytest.fixture(scope="module")
def root() -> tuple[bytes, bytes]:
    """(DER of a root, PEM of its key): the key must never appear in an answer."""
    ca = LocalCA.generate("ecdsa")
    return ca.cert.public_bytes(serialization.Encoding.DER), ca.key_pem()


@pytest.fixture(scope="module")
def site(root: tuple[bytes, bytes]) -> OnboardingSite:
    return OnboardingSite(root[0], "devtls test root <&>", URLS)


def head_of(request: bytes) -> http1.RequestHead:
    reader = http1.RequestReader()
    reader.feed(request)
    event = reader.next_event()
    assert isinstance(event, http1.RequestHead)
    return event


def get(site: OnboardingSite, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    data, _close = site.answer(head_of(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_the_crt_is_the_der_root_for_android(
    site: OnboardingSite, root: tuple[bytes, bytes]
) -> None:
    status, headers, body = get(site, CRT_PATH.decode())
    assert status == 200
    assert headers["content-type"] == "application/x-x509-ca-cert"
    assert body == root[0]
    assert (
        x509.load_der_x509_certificate(body)
        .extensions.get_extension_for_class(x509.BasicConstraints)
        .value.ca
    )


def test_the_pem_is_the_same_root(site: OnboardingSite, root: tuple[bytes, bytes]) -> None:
    status, _, body = get(site, PEM_PATH.decode())
    assert status == 200
    assert x509.load_pem_x509_certificate(body).public_bytes(serialization.Encoding.DER) == root[0]


def test_the_mobileconfig_is_a_profile_holding_the_root(
    site: OnboardingSite, root: tuple[bytes, bytes]
) -> None:
    status, headers, body = get(site, MOBILECONFIG_PATH.decode())
    assert status == 200
    assert headers["content-type"] == "application/x-apple-aspen-config"
    profile = plistlib.loads(body)
    assert profile["PayloadType"] == "Configuration"
    assert profile["PayloadVersion"] == 1
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.security.root"
    assert payload["PayloadContent"] == root[0]
    uuids = {profile["PayloadUUID"], payload["PayloadUUID"]}
    assert len(uuids) == 2
    assert all(uuid.UUID(u) for u in uuids)
    assert payload["PayloadIdentifier"].startswith(profile["PayloadIdentifier"] + ".")


def test_the_profile_uuids_are_stable_for_one_root_and_differ_between_roots(
    root: tuple[bytes, bytes],
) -> None:
    first = plistlib.loads(mobileconfig(root[0], "a"))
    again = plistlib.loads(mobileconfig(root[0], "other name"))
    assert first["PayloadUUID"] == again["PayloadUUID"]
    assert first["PayloadContent"][0]["PayloadUUID"] == again["PayloadContent"][0]["PayloadUUID"]
    other_root = LocalCA.generate("ecdsa").cert.public_bytes(serialization.Encoding.DER)
    assert plistlib.loads(mobileconfig(other_root, "a"))["PayloadUUID"] != first["PayloadUUID"]


def test_the_page_has_the_steps_for_each_device(
    site: OnboardingSite, root: tuple[bytes, bytes]
) -> None:
    status, headers, body = get(site, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"].startswith("default-src 'none'")
    page = body.decode()
    assert "Certificate Trust Settings" in page  # iOS's second step
    assert "Encryption &amp; credentials" in page  # Android
    assert "CA certificate" in page
    assert "<code>devtls install</code> does not apply" in page
    for path in (CRT_PATH, MOBILECONFIG_PATH, PEM_PATH):
        assert f'href="{path.decode()}"' in page
    assert "devtls test root &lt;&amp;&gt;" in page  # the name is escaped
    assert "https://box.local:8443/" in page
    digest = fingerprint(root[0])
    assert ":".join(digest[i : i + 2] for i in range(0, 64, 2)) in page


def test_head_answers_without_a_body(site: OnboardingSite) -> None:
    status, headers, body = get(site, CRT_PATH.decode(), "HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0


@pytest.mark.parametrize(
    "path",
    [
        "/rootCA-key.pem",
        "/rootCA.pem",
        "/index.html",
        "/devtls-root.crt/",
        "/x/../y",
        "/favicon.ico",
    ],
)
def test_every_other_path_is_a_404(site: OnboardingSite, path: str) -> None:
    assert get(site, path)[0] == 404


def test_other_methods_are_refused(site: OnboardingSite) -> None:
    status, headers, _ = get(site, CRT_PATH.decode(), "POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


def test_no_answer_holds_a_key(site: OnboardingSite, root: tuple[bytes, bytes]) -> None:
    key_body = b"".join(root[1].splitlines()[1:-1])
    for path in ("/", CRT_PATH.decode(), MOBILECONFIG_PATH.decode(), PEM_PATH.decode()):
        body = get(site, path)[2]
        assert b"PRIVATE KEY" not in body
        assert key_body[:40] not in body


SITE = OnboardingSite(
    LocalCA.generate("ecdsa").cert.public_bytes(serialization.Encoding.DER), "r", URLS
)


@given(st.binary(max_size=300))
def test_any_request_bytes_get_an_answer_or_a_protocol_error(data: bytes) -> None:
    reader = http1.RequestReader()
    reader.feed(data)
    try:
        event = reader.next_event()
    except ProtocolError:
        return
    if isinstance(event, http1.RequestHead):
        response, _ = SITE.answer(event)
        assert response.startswith(b"HTTP/1.1 ")
