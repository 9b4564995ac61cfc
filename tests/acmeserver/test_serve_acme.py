"""devtls's own ``serve --acme`` against ``devtls acme-server`` (both on the same CAROOT).

serve --acme reaches the ACME server with the OS roots plus the devtls root, so the directory's
certificate (minted from the local CA) is trusted without any option.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import time
from pathlib import Path

from cryptography import x509

from tests.acmeserver.conftest import AcmeServerProcess
from tests.proxy.conftest import Harness


def served_leaf(port: int, host: str, root: Path) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(root))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def start(harness: Harness, server: AcmeServerProcess, tmp_path: Path, host: str, **extra: object):
    running = harness.start_proxy(
        routes=(f"{host}={harness.upstream.port}",),
        acme=True,
        acme_directory=server.directory,
        acme_hosts=(host,),
        acme_agree_tos=True,
        acme_http=f"127.0.0.1:{server.http_port}",
        acme_cache=tmp_path / f"cache-{host}",
        **extra,
    )
    assert running.acme is not None
    harness.loop.run(asyncio.wait_for(running.acme.ready.wait(), 120), timeout=130)
    return running


def test_serve_acme_gets_and_renews_from_acme_server(
    harness: Harness, acme_server: AcmeServerProcess, tmp_path: Path
) -> None:
    # Renew as soon as possible, looking every second: a renewal without waiting days.
    (tmp_path / "devtls.toml").write_text("[acme]\nrenew_fraction = 0.0\ncheck_interval = 1\n")
    running = start(
        harness, acme_server, tmp_path, "app.localhost", config_file=tmp_path / "devtls.toml"
    )
    assert running.acme is not None
    assert "app.localhost" in running.acme.contexts, harness.log
    leaf = served_leaf(running.port, "app.localhost", acme_server.root)
    # acme-server's seven days, not the forwarder's own minted leaf.
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(days=7)
    assert "http-01 for app.localhost: valid" in acme_server.log()
    first = leaf.serial_number
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if served_leaf(running.port, "app.localhost", acme_server.root).serial_number != first:
            break
        time.sleep(0.5)
    assert served_leaf(running.port, "app.localhost", acme_server.root).serial_number != first
    assert running.acme.orders >= 2


def test_serve_acme_is_refused_outside_the_allow_list(
    harness: Harness, acme_server: AcmeServerProcess, tmp_path: Path
) -> None:
    running = start(harness, acme_server, tmp_path, "example.com")
    assert running.acme is not None
    assert "example.com" not in running.acme.contexts
    failures = [
        line for line in harness.log if "ordering a certificate for example.com failed" in line
    ]
    assert failures, harness.log
    assert "example.com is not on this server's allow-list" in failures[0]
