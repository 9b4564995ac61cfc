"""sslyze, a real TLS scanner, against each kind of TLS listener devtls opens.

Every listener is held to Mozilla's "intermediate" profile as sslyze checks it, with exactly two
known deviations, each asserted so that a third one fails the test:
- ``tls_curves``: X448 and P-521 are accepted besides X25519, P-256 and P-384. Python's ssl
  module sets only one group (``set_ecdh_curve``), which would drop X25519; OpenSSL's default
  list stays, as nginx's ``ssl_ecdh_curve auto`` and Go's (Caddy) do.
- ``maximum_certificate_lifespan``: serve's leaves live 825 days, mkcert's lifetime, which
  browsers and Apple accept under a private root; Mozilla's 366 days is the public CAs' rule.
  acme-server's own leaf is short-lived, so it has only the first.

sslyze pins an older cryptography than devtls, so scripts/test.sh gives it a venv of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devtls.ca import LocalCA
from tests.acmeserver.conftest import start_acme_server, stop_acme_server
from tests.conftest import IN_CI, run
from tests.proxy.test_serve_cli import serving

CURVES = "tls_curves"
LIFESPAN = "maximum_certificate_lifespan"
SCANNER_VENV = Path(__file__).resolve().parents[2] / ".venv-sslyze"


def sslyze() -> str:
    path = SCANNER_VENV / "bin" / "sslyze"
    if path.exists():
        return str(path)
    found = shutil.which("sslyze")
    if found is None:
        message = "sslyze is not installed (scripts/test.sh installs it in .venv-sslyze)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def scan(port: int, root: Path, out: Path) -> tuple[set[str], dict[str, Any]]:
    """Mozilla-intermediate deviations by name, and the scan's results, for localhost:port.

    The name is sent as SNI and checked against the leaf; the chain is validated to ``root``.
    """
    target = f"localhost:{port}{{127.0.0.1}}"
    result = subprocess.run(
        [sslyze(), "--mozilla_config=intermediate", f"--certinfo_ca_file={root}",
         f"--json_out={out}", target],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    text = result.stdout
    assert "SCANS COMPLETED" in text, text + result.stderr
    deviations: set[str] = set()
    if "OK - Compliant" not in text:
        assert "FAILED - Not compliant" in text, text
        deviations = set(
            re.findall(r"^\s+\* (\w+): ", text.split("FAILED - Not compliant")[1], re.M)
        )
    results = json.loads(out.read_text())["server_scan_results"][0]["scan_result"]
    return deviations, results


def assert_hardened(deviations: set[str], known: set[str], results: dict[str, Any]) -> None:
    assert deviations == known, deviations

    def result(name: str) -> dict[str, Any]:
        assert results[name]["status"] == "COMPLETED", results[name]
        found: dict[str, Any] = results[name]["result"]
        return found

    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert not result(f"{old}_cipher_suites")["is_tls_version_supported"], old
    tls12 = [
        s["cipher_suite"]["name"] for s in result("tls_1_2_cipher_suites")["accepted_cipher_suites"]
    ]
    assert tls12, "no TLS 1.2 suite accepted"
    for suite in tls12:
        assert suite.startswith("TLS_ECDHE_"), suite
        assert "_GCM_" in suite or "CHACHA20" in suite, suite
    assert result("tls_1_3_cipher_suites")["accepted_cipher_suites"]
    assert not result("tls_compression")["supports_compression"]
    assert not result("heartbleed")["is_vulnerable_to_heartbleed"]
    assert not result("openssl_ccs_injection")["is_vulnerable_to_ccs_injection"]
    assert result("robot")["robot_result"].startswith("NOT_VULNERABLE")
    renegotiation = result("session_renegotiation")
    assert renegotiation["supports_secure_renegotiation"]
    assert not renegotiation["is_vulnerable_to_client_renegotiation_dos"]
    assert result("tls_fallback_scsv")["supports_fallback_scsv"]
    assert result("tls_extended_master_secret")["supports_ems_extension"]
    deployment = result("certificate_info")["certificate_deployments"][0]
    supplied = [
        p
        for p in deployment["path_validation_results"]
        if p["trust_store"]["name"] == "Supplied CA file"
    ]
    assert supplied, deployment["path_validation_results"]
    assert supplied[0]["was_validation_successful"], supplied
    assert deployment["received_chain_has_valid_order"]


def banner_port(lines: list[str]) -> int:
    match = re.search(r"https://[^\s/]+:(\d+)", "\n".join(lines))
    assert match, lines
    return int(match.group(1))


@pytest.mark.parametrize("leaf", ["minted-ecdsa", "rsa-cert-file"])
def test_serve(session_ca_dir: Path, tmp_path: Path, leaf: str) -> None:
    args = ["--listen", "127.0.0.1:0"]
    if leaf == "rsa-cert-file":
        # `devtls cert` makes RSA 2048 leaves by default, as mkcert does: the ECDHE-RSA suites.
        environ = {**os.environ, "CAROOT": str(session_ca_dir)}
        run(sys.executable, "-m", "devtls", "cert", "localhost", cwd=tmp_path, env=environ)
        args += ["--cert", str(tmp_path / "localhost.pem")]
        args += ["--key", str(tmp_path / "localhost-key.pem")]
    with serving(*args, caroot=session_ca_dir) as (process, lines):
        assert process.poll() is None, lines
        deviations, results = scan(
            banner_port(lines), session_ca_dir / "rootCA.pem", tmp_path / "scan.json"
        )
    assert_hardened(deviations, {CURVES, LIFESPAN}, results)
    suites = results["tls_1_2_cipher_suites"]["result"]["accepted_cipher_suites"]
    key_exchange = "_RSA_" if leaf == "rsa-cert-file" else "_ECDSA_"
    assert all(key_exchange in s["cipher_suite"]["name"] for s in suites)


def test_acme_server(tmp_path: Path) -> None:
    caroot = tmp_path / "ca"
    LocalCA.load_or_create(caroot)
    with acme_server(caroot) as port:
        deviations, results = scan(port, caroot / "rootCA.pem", tmp_path / "scan.json")
    assert_hardened(deviations, {CURVES}, results)


@contextmanager
def acme_server(caroot: Path) -> Iterator[int]:
    server = start_acme_server(caroot)
    try:
        match = re.match(r"https://[^/]+:(\d+)/", server.directory)
        assert match, server.directory
        yield int(match.group(1))
    finally:
        stop_acme_server(server)
