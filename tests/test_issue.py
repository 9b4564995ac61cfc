from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from devtls import _files
from devtls.ca import LocalCA
from devtls.certfiles import CertRequest, make_cert_files
from devtls.errors import IssueError, UsageError
from devtls.issue import MAX_LEAF_DAYS, NOT_BEFORE_SLACK, PKCS12_PASSWORD, issue_leaf, sign_csr
from tests.conftest import require_tool, run


def openssl_text(cert_file: Path) -> str:
    openssl = require_tool("openssl")
    return run(openssl, "x509", "-in", cert_file, "-noout", "-text").stdout


def test_rsa_leaf_profile_read_back_by_openssl(local_ca: LocalCA, tmp_path: Path) -> None:
    leaf = local_ca.issue("localhost", "127.0.0.1", "::1", "*.app.test")
    cert_file = tmp_path / "leaf.pem"
    leaf.write_pem(cert_file, tmp_path / "leaf-key.pem")
    text = openssl_text(cert_file)
    assert "Public-Key: (2048 bit)" in text
    assert "rsaEncryption" in text
    assert "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:*.app.test" in text
    assert "TLS Web Server Authentication" in text
    assert "TLS Web Client Authentication" not in text
    assert "Digital Signature, Key Encipherment" in text
    assert "CA:FALSE" in text
    ski = local_ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki_hex = ski.digest.hex(":").upper()
    assert f"X509v3 Authority Key Identifier: \n                {aki_hex}" in text
    assert "X509v3 Subject Key Identifier" in text
    lifetime = leaf.cert.not_valid_after_utc - leaf.cert.not_valid_before_utc
    assert lifetime == dt.timedelta(days=MAX_LEAF_DAYS)
    assert leaf.cert.not_valid_before_utc <= dt.datetime.now(
        dt.timezone.utc
    ) - NOT_BEFORE_SLACK + dt.timedelta(minutes=1)


def test_ecdsa_client_leaf(local_ca: LocalCA, tmp_path: Path) -> None:
    leaf = local_ca.issue("client.test", key_type="ecdsa", client=True, days=30)
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    assert leaf.key.curve.name == "secp256r1"
    cert_file = tmp_path / "c.pem"
    leaf.write_pem(cert_file, tmp_path / "c-key.pem")
    text = openssl_text(cert_file)
    assert "id-ecPublicKey" in text
    assert "prime256v1" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "Key Encipherment" not in text
    assert leaf.cert.not_valid_after_utc - leaf.cert.not_valid_before_utc == dt.timedelta(days=30)


def test_email_and_uri_leaf(local_ca: LocalCA) -> None:
    leaf = local_ca.issue("me@example.test", "spiffe://cluster.test/ns/a")
    san = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["me@example.test"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.test/ns/a"]
    eku = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_email_only_leaf_is_not_for_servers(local_ca: LocalCA) -> None:
    leaf = local_ca.issue("me@example.test", key_type="ecdsa")
    eku = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]


@pytest.mark.parametrize("days", [0, -1, MAX_LEAF_DAYS + 1, 10_000])
def test_days_out_of_range_is_refused_by_the_library(local_ca: LocalCA, days: int) -> None:
    with pytest.raises(UsageError, match="--days"):
        local_ca.issue("localhost", key_type="ecdsa", days=days)


def test_invalid_names_are_refused_by_the_library(local_ca: LocalCA) -> None:
    with pytest.raises(UsageError, match="top-level"):
        issue_leaf(local_ca, ["*.com"], key_type="ecdsa")


def test_leaf_never_outlives_the_ca() -> None:
    ca = LocalCA.ephemeral()
    near_end = ca.not_after - dt.timedelta(days=10)
    leaf = issue_leaf(ca, ["localhost"], key_type="ecdsa", now=near_end)
    assert leaf.not_after == ca.not_after


@pytest.mark.parametrize("legacy", [False, True])
def test_pkcs12_opens_in_openssl(local_ca: LocalCA, tmp_path: Path, legacy: bool) -> None:
    openssl = require_tool("openssl")
    leaf = local_ca.issue("localhost", "127.0.0.1", key_type="ecdsa")
    p12 = tmp_path / "leaf.p12"
    leaf.write_pkcs12(p12, legacy=legacy)
    assert stat.S_IMODE(p12.stat().st_mode) == 0o600
    args = [openssl, "pkcs12", "-in", p12, "-passin", f"pass:{PKCS12_PASSWORD.decode()}", "-nodes"]
    if legacy:
        # OpenSSL 3 opens 3DES/SHA-1 files only with its legacy provider; the default must not need it.
        args.append("-legacy")
    out = run(*args).stdout
    assert out.count("BEGIN CERTIFICATE") == 2
    assert "BEGIN PRIVATE KEY" in out
    if not legacy:
        info = run(
            openssl, "pkcs12", "-in", p12, "-passin", "pass:changeit", "-info", "-noout"
        ).stderr
        assert "AES-256-CBC" in info
        assert "sha256" in info.lower()


def test_csr_made_by_openssl_is_signed(local_ca: LocalCA, tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    key, csr = tmp_path / "k.pem", tmp_path / "r.csr"
    run(
        openssl, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=api.test",
        "-addext", "subjectAltName=DNS:api.test,IP:10.0.0.1",
        "-addext", "basicConstraints=critical,CA:TRUE",
    )  # fmt: skip
    leaf = sign_csr(local_ca, csr.read_bytes())
    assert leaf.key is None
    san = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.test"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    # The CA flag the CSR asked for is not copied.
    assert not leaf.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert_file = tmp_path / "api.pem"
    leaf.write_pem(cert_file, None)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(local_ca.cert_pem())
    assert run(openssl, "verify", "-CAfile", ca_file, cert_file).stdout.strip().endswith("OK")
    with pytest.raises(IssueError, match="issued for a CSR"):
        leaf.key_pem()


def test_csr_with_only_a_common_name(local_ca: LocalCA, tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    key, csr = tmp_path / "k.pem", tmp_path / "r.csr"
    run(openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=old.test")  # fmt: skip
    leaf = sign_csr(local_ca, csr.read_bytes())
    assert [str(n) for n in leaf.names] == ["old.test"]


def test_csr_with_bad_signature_is_refused(local_ca: LocalCA, tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    key, csr, der = tmp_path / "k.pem", tmp_path / "r.csr", tmp_path / "r.der"
    run(openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=x.test", "-outform", "DER")  # fmt: skip
    data = bytearray(csr.read_bytes())
    data[-5] ^= 0xFF  # inside the signature
    der.write_bytes(bytes(data))
    with pytest.raises(IssueError, match="signature does not verify"):
        sign_csr(local_ca, der.read_bytes())
    with pytest.raises(IssueError, match="neither PEM nor DER"):
        sign_csr(local_ca, b"garbage")


def test_make_cert_files_writes_mkcert_names(caroot: Path, chdir_tmp: Path) -> None:
    result = make_cert_files(CertRequest(names=("localhost", "127.0.0.1", "::1")))
    assert result.ca_created
    assert [p.name for p in result.files] == ["localhost+2.pem", "localhost+2-key.pem"]
    assert stat.S_IMODE((chdir_tmp / "localhost+2-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((chdir_tmp / "localhost+2.pem").stat().st_mode) == 0o644
    again = make_cert_files(CertRequest(names=("a.test",), client=True, pkcs12=True))
    assert not again.ca_created
    assert [p.name for p in again.files] == ["a.test-client.p12"]


def test_make_cert_files_validates_before_creating_the_ca(caroot: Path, chdir_tmp: Path) -> None:
    for request in (
        CertRequest(names=("ok.test", "bad name")),
        CertRequest(names=("ok.test",), days=9999),
        CertRequest(names=()),
        CertRequest(names=("x.test",), csr_file=chdir_tmp / "none.csr"),
        CertRequest(csr_file=chdir_tmp / "none.csr"),
    ):
        with pytest.raises(UsageError):
            make_cert_files(request)
    assert not caroot.exists()
    assert list(chdir_tmp.iterdir()) == []


def test_write_failure_is_one_clear_error(local_ca: LocalCA, tmp_path: Path) -> None:
    leaf = local_ca.issue("localhost", key_type="ecdsa")
    with pytest.raises(IssueError, match="cannot write"):
        leaf.write_pem(tmp_path / "missing" / "c.pem", tmp_path / "missing" / "k.pem")


def test_end_to_end_tls_handshake_with_python_ssl(local_ca: LocalCA, devtls_ca: LocalCA) -> None:
    leaf = local_ca.issue("localhost", "127.0.0.1", key_type="ecdsa")
    server_context = leaf.server_context()
    assert server_context.minimum_version == ssl.TLSVersion.TLSv1_2
    ciphers = {c["name"] for c in server_context.get_ciphers()}
    assert not any("CBC" in c or c.endswith("SHA") for c in ciphers), ciphers
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(100).upper())

        thread = threading.Thread(target=serve)
        thread.start()
        client_context = local_ca.client_context()
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client_context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"hello")
            assert tls.recv(100) == b"HELLO"
        thread.join(timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(leaf.server_context(), devtls_ca.client_context())


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_obj = client.wrap_bio(incoming, outgoing, server_hostname="localhost")
    server_obj = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for obj in (client_obj, server_obj):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
        s_in.write(outgoing.read())
        incoming.write(s_out.read())


def test_rsa_key_sizes(local_ca: LocalCA) -> None:
    leaf = local_ca.issue("localhost")
    assert isinstance(leaf.key, rsa.RSAPrivateKey)
    assert leaf.key.key_size == 2048


# -- a key never without its certificate: both files or neither, on a full disk too ---------


def _fail_on_call(
    monkeypatch: pytest.MonkeyPatch, target: object, name: str, failing_call: int, error: OSError
) -> None:
    real = getattr(target, name)
    calls = 0

    def fake(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == failing_call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, fake)


DISK_FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("failing_write", [1, 2])
def test_full_disk_leaves_neither_key_nor_certificate(
    local_ca: LocalCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_write: int
) -> None:
    leaf = local_ca.issue("localhost", key_type="ecdsa")
    _fail_on_call(monkeypatch, _files, "_write_fd", failing_write, DISK_FULL)
    with pytest.raises(IssueError) as excinfo:
        leaf.write_pem(tmp_path / "c.pem", tmp_path / "k.pem")
    assert "No space left on device; nothing was written" in str(excinfo.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_leaves_neither_and_keeps_an_older_pair(
    local_ca: LocalCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    old = local_ca.issue("old.test", key_type="ecdsa")
    old.write_pem(cert_file, key_file)
    fresh = local_ca.issue("new.test", key_type="ecdsa")
    _fail_on_call(monkeypatch, os, "replace", 2, DISK_FULL)
    with pytest.raises(IssueError):
        fresh.write_pem(cert_file, key_file)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pem", "k.pem"]
    assert cert_file.read_bytes() == old.cert_pem()
    assert key_file.read_bytes() == old.key_pem()
    monkeypatch.undo()
    (tmp_path / "c.pem").unlink()
    (tmp_path / "k.pem").unlink()
    _fail_on_call(monkeypatch, os, "replace", 2, DISK_FULL)
    with pytest.raises(IssueError):
        fresh.write_pem(cert_file, key_file)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_leaves_no_pkcs12_file(
    caroot: Path, chdir_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    LocalCA.load_or_create()
    _fail_on_call(monkeypatch, _files, "_write_fd", 1, DISK_FULL)
    with pytest.raises(IssueError, match=r"cannot write a\.test\.p12: No space left"):
        make_cert_files(CertRequest(names=("a.test",), pkcs12=True, key_type="ecdsa"))
    assert list(chdir_tmp.iterdir()) == []


def test_make_cert_files_on_a_full_disk_writes_nothing(
    caroot: Path, chdir_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    LocalCA.load_or_create()
    _fail_on_call(monkeypatch, _files, "_write_fd", 2, DISK_FULL)
    with pytest.raises(IssueError, match=r"cannot write a\.test\.pem and a\.test-key\.pem"):
        make_cert_files(CertRequest(names=("a.test",), key_type="ecdsa"))
    assert list(chdir_tmp.iterdir()) == []


def test_leaf_files_given_as_str_are_written_with_their_modes(
    local_ca: LocalCA, tmp_path: Path
) -> None:
    leaf = local_ca.issue("localhost")
    leaf.write_pem(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    leaf.write_pkcs12(str(tmp_path / "leaf.p12"))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"cert.pem": 0o644, "key.pem": 0o600, "leaf.p12": 0o600}
    assert (tmp_path / "cert.pem").read_bytes() == leaf.cert_pem()
