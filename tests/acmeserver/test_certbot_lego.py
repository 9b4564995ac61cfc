"""certbot and lego against ``devtls acme-server``: issue, verify to the root, renew, refusal."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from tests.acmeserver.conftest import AcmeServerProcess, start_acme_server, stop_acme_server
from tests.conftest import require_tool, run
from tests.routerprocess import free_port


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number


def verifies(root: Path, cert: Path) -> None:
    openssl = require_tool("openssl")
    result = run(openssl, "verify", "-CAfile", root, cert, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


def certbot(server: AcmeServerProcess, tmp_path: Path, *args: str):
    binary = require_tool("certbot")
    return run(
        binary, *args, "--config-dir", tmp_path / "cfg", "--work-dir", tmp_path / "work",
        "--logs-dir", tmp_path / "logs", "--non-interactive",
        env={**os.environ, "REQUESTS_CA_BUNDLE": str(server.root)}, check=False,
    )  # fmt: skip


def certbot_renews(server: AcmeServerProcess, tmp_path: Path, cert: Path) -> None:
    """``certbot renew`` gets a new certificate from ``server`` that verifies to its root."""
    first = serial_of(cert)
    renewed = certbot(server, tmp_path, "renew", "--force-renewal", "--no-random-sleep-on-renew")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr + server.log()
    assert serial_of(cert) != first
    verifies(server.root, cert)


def certbot_certonly(server: AcmeServerProcess, tmp_path: Path, name: str):
    return certbot(
        server, tmp_path, "certonly", "--standalone", "--server", server.directory,
        "--http-01-port", str(server.http_port), "-d", name, "--agree-tos",
        "--register-unsafely-without-email",
    )  # fmt: skip


def test_certbot_issues_renews_and_is_refused_outside_the_allow_list(
    acme_server: AcmeServerProcess, tmp_path: Path
) -> None:
    got = certbot_certonly(acme_server, tmp_path, "app.localhost")
    assert got.returncode == 0, got.stdout + got.stderr + acme_server.log()
    cert = tmp_path / "cfg" / "live" / "app.localhost" / "cert.pem"
    verifies(acme_server.root, cert)
    certbot_renews(acme_server, tmp_path, cert)
    assert acme_server.log().count("issued a certificate for app.localhost") == 2

    refused = certbot_certonly(acme_server, tmp_path, "example.com")
    assert refused.returncode != 0
    # certbot 2.1 on Python 3.11 prints an unrelated AttributeError for any ACME error
    # (its error object is immutable); the CA's answer is in its log.
    certbot_log = (tmp_path / "logs" / "letsencrypt.log").read_text()
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in certbot_log
    assert "example.com is not on this server's allow-list" in certbot_log
    assert not (tmp_path / "cfg" / "live" / "example.com").exists()


def lego(server: AcmeServerProcess, tmp_path: Path, *args: str):
    binary = require_tool("lego")
    return run(
        binary, "--server", server.directory, "--email", "dev@example.test", "--accept-tos",
        "--path", tmp_path / "lego", *args,
        env={**os.environ, "LEGO_CA_CERTIFICATES": str(server.root)}, check=False,
    )  # fmt: skip


def test_lego_http01_issues_renews_and_is_refused_outside_the_allow_list(
    acme_server: AcmeServerProcess, tmp_path: Path
) -> None:
    http = ("--http", "--http.port", f"127.0.0.1:{acme_server.http_port}")
    got = lego(acme_server, tmp_path, "--domains", "app.localhost", *http, "run")
    assert got.returncode == 0, got.stdout + got.stderr + acme_server.log()
    cert = tmp_path / "lego" / "certificates" / "app.localhost.crt"
    verifies(acme_server.root, cert)
    first = serial_of(cert)

    # Seven-day certificates are within lego's renewal window of 30 days.
    renewed = lego(
        acme_server,
        tmp_path,
        "--domains",
        "app.localhost",
        *http,
        "renew",
        "--days",
        "30",
        "--no-random-sleep",
    )
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr + acme_server.log()
    assert serial_of(cert) != first
    verifies(acme_server.root, cert)

    refused = lego(acme_server, tmp_path, "--domains", "example.com", *http, "run")
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "rejectedIdentifier" in said
    assert "example.com is not on this server's allow-list" in said


def test_lego_tls_alpn01(acme_server: AcmeServerProcess, tmp_path: Path) -> None:
    tls = ("--tls", "--tls.port", f"127.0.0.1:{acme_server.tls_port}")
    got = lego(acme_server, tmp_path, "--domains", "tls.localhost", *tls, "run")
    assert got.returncode == 0, got.stdout + got.stderr + acme_server.log()
    verifies(acme_server.root, tmp_path / "lego" / "certificates" / "tls.localhost.crt")
    assert "tls-alpn-01 for tls.localhost: valid" in acme_server.log()


def restarted(server: AcmeServerProcess) -> AcmeServerProcess:
    """The same server stopped and started again: same CAROOT, address and validation ports."""
    stop_acme_server(server)
    port = str(urlsplit(server.directory).port)
    environ = {
        "DEVTLS_ACME_HTTP_PORT": str(server.http_port),
        "DEVTLS_ACME_TLS_PORT": str(server.tls_port),
    }
    again = start_acme_server(server.caroot, "--listen", f"127.0.0.1:{port}", env=environ)
    assert again.directory == server.directory
    assert "1 accounts read from" in again.log(), again.log()
    return again


def test_certbot_and_lego_renew_after_the_server_restarts(tmp_path: Path) -> None:
    # They keep their account URL and key, and do not register again when told the account
    # does not exist: the server must remember its accounts.
    address = f"127.0.0.1:{free_port()}"
    certbot_server = start_acme_server(tmp_path / "ca", "--listen", address)
    lego_server = start_acme_server(tmp_path / "ca", "--listen", f"127.0.0.1:{free_port()}")
    try:
        got = certbot_certonly(certbot_server, tmp_path, "app.localhost")
        assert got.returncode == 0, got.stdout + got.stderr + certbot_server.log()
        http = ("--http", "--http.port", f"127.0.0.1:{lego_server.http_port}")
        got = lego(lego_server, tmp_path, "--domains", "app.localhost", *http, "run")
        assert got.returncode == 0, got.stdout + got.stderr + lego_server.log()
        cert = tmp_path / "cfg" / "live" / "app.localhost" / "cert.pem"
        lego_cert = tmp_path / "lego" / "certificates" / "app.localhost.crt"
        lego_first = serial_of(lego_cert)

        certbot_server = restarted(certbot_server)
        lego_server = restarted(lego_server)
        certbot_renews(certbot_server, tmp_path, cert)
        renew = ("renew", "--days", "30", "--no-random-sleep")
        renewed = lego(lego_server, tmp_path, "--domains", "app.localhost", *http, *renew)
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr + lego_server.log()
        assert serial_of(lego_cert) != lego_first
        verifies(lego_server.root, lego_cert)
    finally:
        stop_acme_server(certbot_server)
        stop_acme_server(lego_server)
