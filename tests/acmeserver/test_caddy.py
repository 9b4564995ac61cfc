"""Caddy 2.6 against ``devtls acme-server``: global ``acme_ca`` and ``acme_ca_root``.

Caddy keeps names under ``.localhost`` on its own internal CA unless a site asks for an ACME
issuer (``tls { issuer acme }``); the global options then say which CA and root. Caddy renews a
certificate once its remaining life falls below ``renewal_window_ratio`` of its lifetime, a
JSON-only setting: the Caddyfile is adapted to JSON with a ratio that puts a one-day certificate
in its renewal window at once, and ``renew_interval`` makes Caddy look every second.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.acmeserver.conftest import AcmeServerProcess
from tests.acmeserver.test_certbot_lego import verifies
from tests.conftest import require_tool, run, wait_for

CADDYFILE = """{{
	admin off
	acme_ca {directory}
	acme_ca_root {root}
	http_port {http_port}
	https_port {https_port}
	storage file_system {storage}
	email dev@example.test
	renew_interval 1s
}}
{site} {{
	tls {{
		issuer acme
	}}
	respond "hello from caddy"
}}
"""


def start_caddy(server: AcmeServerProcess, tmp_path: Path, site: str, *, ratio: float | None):
    caddy = require_tool("caddy")
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(CADDYFILE.format(
        directory=server.directory, root=server.root, http_port=server.http_port,
        https_port=server.tls_port, storage=tmp_path / "data", site=site,
    ))  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path)}  # fmt: skip
    adapted = json.loads(run(caddy, "adapt", "--config", caddyfile, env=env).stdout)
    if ratio is not None:
        adapted["apps"]["tls"]["automation"]["policies"][0]["renewal_window_ratio"] = ratio
    config = tmp_path / "caddy.json"
    config.write_text(json.dumps(adapted))
    log = (tmp_path / "caddy.log").open("w")
    process = subprocess.Popen([caddy, "run", "--config", config], stdout=log,
                               stderr=subprocess.STDOUT, env=env)  # fmt: skip
    log.close()
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def served_serial(port: int, root: Path, out: Path) -> int | None:
    context = ssl.create_default_context(cafile=str(root))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="app.localhost") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert.serial_number


def test_caddy_gets_and_renews_from_acme_server(
    acme_server_factory, session_ca_dir: Path, tmp_path: Path
) -> None:
    server = acme_server_factory("--days", "1", caroot=session_ca_dir)
    process = start_caddy(server, tmp_path, "app.localhost", ratio=0.99)
    try:
        served = tmp_path / "served.pem"
        assert wait_for(
            lambda: served_serial(server.tls_port, server.root, served) is not None, 60
        ), (tmp_path / "caddy.log").read_text() + server.log()
        verifies(server.root, served)
        first = served_serial(server.tls_port, server.root, served)
        # One day at 99 %: in its renewal window at once; Caddy renews within a few seconds.
        assert wait_for(
            lambda: served_serial(server.tls_port, server.root, served) not in (first, None), 60
        ), (tmp_path / "caddy.log").read_text()[-3000:] + server.log()
        verifies(server.root, served)
        assert server.log().count("issued a certificate for app.localhost") >= 2
    finally:
        stop(process)


def test_caddy_is_refused_outside_the_allow_list(
    acme_server: AcmeServerProcess, tmp_path: Path
) -> None:
    process = start_caddy(acme_server, tmp_path, "example.com", ratio=None)
    log = tmp_path / "caddy.log"
    try:
        assert wait_for(lambda: "rejectedIdentifier" in log.read_text(), 60), log.read_text()
        assert "example.com is not on this server's allow-list" in log.read_text()
    finally:
        stop(process)
    assert "issued a certificate" not in acme_server.log()
