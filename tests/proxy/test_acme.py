"""`devtls serve --acme` against a real ACME server: Pebble, on loopback only.

Pebble resolves names through pebble-challtestsrv, which answers 127.0.0.1 for every name,
and validates http-01 and tls-alpn-01 against devtls's own listeners. Pebble's API listener
uses a leaf from the test CA, which devtls trusts because it is the devtls root.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtls.ca import LocalCA
from tests.conftest import require_tool, run
from tests.proxy.conftest import Harness
from tests.routerprocess import free_port, free_ports


@dataclass
class Pebble:
    directory: str
    management: str
    tls_port: int
    http_port: int
    ca_file: Path

    def root_pem(self) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(f"{self.management}/roots/0", context=context) as answer:
            return bytes(answer.read())


@pytest.fixture
def pebble(
    request: pytest.FixtureRequest, tmp_path: Path, session_ca_dir: Path
) -> Iterator[Pebble]:
    ca = LocalCA.load(session_ca_dir)
    with running_pebble(tmp_path, ca, getattr(request, "param", None)) as server:
        yield server


@contextlib.contextmanager
def running_pebble(tmp_path: Path, ca: LocalCA, reject: object = None) -> Iterator[Pebble]:
    """Pebble whose API listener has a leaf of ``ca`` (the devtls root, or another one)."""
    pebble_bin = require_tool("pebble")
    challtestsrv = require_tool("pebble-challtestsrv")
    ca_file = tmp_path / "pebble-api-root.pem"
    ca_file.write_bytes(ca.cert_pem())
    leaf = ca.issue("localhost", "127.0.0.1", key_type="ecdsa")
    cert, key = tmp_path / "pebble-cert.pem", tmp_path / "pebble-key.pem"
    leaf.write_pem(cert, key)
    api, management, dns, dns_management, tls_port, http_port = free_ports(6)
    config = tmp_path / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{api}",
        "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}))  # fmt: skip
    dns_server = subprocess.Popen(
        [challtestsrv, "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "",
         "-tlsalpn01", "", "-management", f"127.0.0.1:{dns_management}",
         "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # PEBBLE_WFE_NONCEREJECT keeps its default (5 % of requests refused with badNonce) unless
    # a test asks for more.
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1"}
    if reject is not None:
        env["PEBBLE_WFE_NONCEREJECT"] = str(reject)
    server = subprocess.Popen(
        [pebble_bin, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    directory = f"https://127.0.0.1:{api}/dir"
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(directory, context=context).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.2)
    try:
        yield Pebble(directory, f"https://127.0.0.1:{management}", tls_port, http_port,
                     ca_file)  # fmt: skip
    finally:
        for process in (server, dns_server):
            process.terminate()
            process.wait(10)


def start_acme_proxy(harness: Harness, pebble: Pebble, cache: Path, **extra: object):
    running = harness.start_proxy(
        listen=f"127.0.0.1:{pebble.tls_port}",
        routes=(f"a.test={harness.upstream.port}", f"b.test={harness.upstream.port}",
                f"other.test={harness.upstream.port}"),
        acme=True,
        acme_directory=pebble.directory,
        acme_hosts=("a.test", "b.test"),
        acme_agree_tos=True,
        acme_http=f"127.0.0.1:{pebble.http_port}",
        acme_cache=cache,
        **extra,
    )  # fmt: skip
    assert running.acme is not None
    harness.loop.run(asyncio.wait_for(running.acme.ready.wait(), 120), timeout=130)
    return running


def served_by_pebble(port: int, host: str, pebble_root: Path) -> tuple[bool, str]:
    curl = require_tool("curl")
    result = run(curl, "-sS", "--cacert", pebble_root, "--resolve", f"{host}:{port}:127.0.0.1",
                 f"https://{host}:{port}/", check=False)  # fmt: skip
    return result.returncode == 0 and result.stdout == "root", result.stderr


def stop(harness: Harness, running) -> None:
    from devtls.proxy.server import shutdown

    harness.loop.run(shutdown(running))
    harness.proxies.remove(running)


def test_http01_allow_list_and_restart(harness: Harness, pebble: Pebble, tmp_path: Path) -> None:
    pebble_root = tmp_path / "pebble-root.pem"
    pebble_root.write_bytes(pebble.root_pem())
    cache = tmp_path / "cache"
    running = start_acme_proxy(harness, pebble, cache)
    assert running.acme is not None
    for host in ("a.test", "b.test"):
        ok, why = served_by_pebble(running.port, host, pebble_root)
        assert ok, (why, harness.log)
    # Not on the allow-list: never ordered, so it is not served a Pebble certificate.
    ok, _ = served_by_pebble(running.port, "other.test", pebble_root)
    assert not ok
    assert running.acme.orders == 2
    assert not [line for line in harness.log if "ordering" in line and "other.test" in line]
    failures = [line for line in harness.log if "failed" in line]
    assert not failures or all("badNonce" not in line for line in failures)
    assert all(os.stat(p).st_mode & 0o077 == 0 for p in cache.iterdir() if p.is_file())
    stop(harness, running)

    harness.log.clear()
    again = start_acme_proxy(harness, pebble, cache)
    assert again.acme is not None
    assert again.acme.orders == 0  # the cached account and certificates were reused
    assert any("using the cached certificate for a.test" in line for line in harness.log)
    ok, why = served_by_pebble(again.port, "a.test", pebble_root)
    assert ok, why


def test_tls_alpn01(harness: Harness, pebble: Pebble, tmp_path: Path) -> None:
    pebble_root = tmp_path / "pebble-root.pem"
    pebble_root.write_bytes(pebble.root_pem())
    running = start_acme_proxy(harness, pebble, tmp_path / "cache", acme_challenge="tls-alpn-01")
    assert running.acme is not None
    assert running.acme.orders == 2
    for host in ("a.test", "b.test"):
        ok, why = served_by_pebble(running.port, host, pebble_root)
        assert ok, (why, harness.log)
    assert any("(tls-alpn-01)" in line for line in harness.log)


def test_renewal_replaces_the_certificate(harness: Harness, pebble: Pebble, tmp_path: Path) -> None:
    pebble_root = tmp_path / "pebble-root.pem"
    pebble_root.write_bytes(pebble.root_pem())
    # Renew as soon as possible and look every second: renewal without waiting for expiry.
    (tmp_path / "devtls.toml").write_text("[acme]\nrenew_fraction = 0.0\ncheck_interval = 1\n")
    running = start_acme_proxy(
        harness, pebble, tmp_path / "cache", config_file=tmp_path / "devtls.toml"
    )
    assert running.acme is not None

    def serial() -> int:
        context = ssl.create_default_context(cafile=str(pebble_root))
        with (
            socket.create_connection(("127.0.0.1", running.port)) as raw,
            context.wrap_socket(raw, server_hostname="a.test") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        from cryptography import x509

        return x509.load_der_x509_certificate(der).serial_number

    first = serial()
    deadline = time.monotonic() + 60
    while serial() == first and time.monotonic() < deadline:
        time.sleep(0.5)
    assert serial() != first
    assert running.acme.orders > 2


def test_without_agreeing_to_the_terms_it_stops_with_the_url(
    harness: Harness, pebble: Pebble, tmp_path: Path
) -> None:
    from devtls.errors import ConfigError

    with pytest.raises(ConfigError, match="terms"):
        harness.start_proxy(
            listen=f"127.0.0.1:{pebble.tls_port}",
            routes=(f"a.test={harness.upstream.port}",),
            acme=True,
            acme_directory=pebble.directory,
            acme_http=f"127.0.0.1:{pebble.http_port}",
            acme_cache=tmp_path / "cache",
        )


@pytest.mark.parametrize("pebble", [40], indirect=True)
def test_survives_many_nonce_rejections(harness: Harness, pebble: Pebble, tmp_path: Path) -> None:
    """Pebble refuses 40 % of requests with badNonce here; retrying gets the orders through."""
    pebble_root = tmp_path / "pebble-root.pem"
    pebble_root.write_bytes(pebble.root_pem())
    running = start_acme_proxy(harness, pebble, tmp_path / "cache")
    for host in ("a.test", "b.test"):
        ok, why = served_by_pebble(running.port, host, pebble_root)
        assert ok, (why, harness.log)


def test_a_failed_order_is_one_clear_line(harness: Harness, pebble: Pebble, tmp_path: Path) -> None:
    """http-01 answered on a port Pebble does not look at: the CA's reason is reported."""
    running = harness.start_proxy(
        listen=f"127.0.0.1:{pebble.tls_port}",
        routes=(f"a.test={harness.upstream.port}",),
        acme=True,
        acme_directory=pebble.directory,
        acme_agree_tos=True,
        acme_http=f"127.0.0.1:{free_port()}",
        acme_cache=tmp_path / "cache",
    )
    assert running.acme is not None
    harness.loop.run(asyncio.wait_for(running.acme.ready.wait(), 120), timeout=130)
    failures = [line for line in harness.log if "failed" in line and line.startswith("acme:")]
    assert failures
    assert all("\n" not in line for line in failures)
    assert any(
        line.startswith("acme: ordering a certificate for a.test failed: http-01 challenge failed:")
        for line in failures
    ), failures
    # Still serving (with the local CA's certificate) while it keeps trying.
    assert "a.test" not in running.acme.contexts
