"""A running acme-server picks up a rotated root (rootCA.pem and rootCA-key.pem replaced)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from devtls import _files
from devtls.ca import CERT_FILE, KEY_FILE, LocalCA
from tests.acmeserver.conftest import AcmeServerProcess
from tests.acmeserver.test_certbot_lego import lego
from tests.conftest import require_tool, run, wait_for


def tls_trusted_by(server: AcmeServerProcess, root: Path) -> bool:
    port = urlsplit(server.directory).port
    assert port is not None
    context = ssl.create_default_context(cafile=str(root))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return True
    except ssl.SSLError:
        return False


def test_a_rotated_root_is_used_without_a_restart(acme_server_factory, tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    caroot = tmp_path / "caroot"
    LocalCA.load_or_create(caroot)
    old_root = tmp_path / "old-root.pem"
    old_root.write_bytes((caroot / CERT_FILE).read_bytes())
    server = acme_server_factory(caroot=caroot)
    http = ("--http", "--http.port", f"127.0.0.1:{server.http_port}")
    got = lego(server, tmp_path / "before", "--domains", "app.localhost", *http, "run")
    assert got.returncode == 0, got.stdout + got.stderr + server.log()

    # What a rotation does: a new pair takes the two file names, each replaced atomically.
    new = LocalCA.generate("ecdsa")
    _files.write_atomic(caroot / KEY_FILE, new.key_pem(), _files.SECRET_MODE)
    _files.write_atomic(caroot / CERT_FILE, new.cert_pem(), _files.PUBLIC_MODE)
    new_root = caroot / CERT_FILE

    # The server's own TLS certificate moves to the new root (checked every few seconds)...
    assert wait_for(lambda: tls_trusted_by(server, new_root), 30), server.log()
    assert not tls_trusted_by(server, old_root)
    assert "the CA changed" in server.log()
    # ...and so do the certificates it issues.
    got = lego(server, tmp_path / "after", "--domains", "app.localhost", *http, "run")
    assert got.returncode == 0, got.stdout + got.stderr + server.log()
    cert = tmp_path / "after" / "lego" / "certificates" / "app.localhost.crt"
    assert run(openssl, "verify", "-CAfile", new_root, cert, check=False).returncode == 0
    assert run(openssl, "verify", "-CAfile", old_root, cert, check=False).returncode != 0
    assert server.process.poll() is None
