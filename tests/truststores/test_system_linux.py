"""The Linux system store for real (Debian's, as root): curl and openssl trust after install,
not after uninstall, and the store is left exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtls.ca import LocalCA
from devtls.truststores.base import entry_name, mkcert_name
from devtls.truststores.system_linux import LinuxSystemStore
from tests.conftest import IN_CI, require_tool, run
from tests.truststores.conftest import TLSServer, devtls

ANCHORS = Path("/usr/local/share/ca-certificates")
CERTS = Path("/etc/ssl/certs")
JAVA_KEYSTORE = CERTS / "java" / "cacerts"


def require_debian_root() -> None:
    reasons = []
    if os.geteuid() != 0:
        reasons.append("needs root (it changes the system trust store)")
    if not ANCHORS.is_dir() or not shutil.which("update-ca-certificates"):
        reasons.append("needs Debian's ca-certificates")
    if reasons:
        if IN_CI:
            pytest.fail("; ".join(reasons))
        pytest.skip("; ".join(reasons))


def snapshot() -> dict[str, object]:
    links = {p.name: os.readlink(p) if p.is_symlink() else "file" for p in CERTS.iterdir()}
    java: list[str] = []
    if JAVA_KEYSTORE.exists() and shutil.which("keytool"):
        listing = run(
            "keytool", "-list", "-keystore", JAVA_KEYSTORE, "-storepass", "changeit"
        ).stdout
        java = sorted(
            line.split(",")[0] for line in listing.splitlines() if "trustedCertEntry" in line
        )
    return {
        "anchors": sorted(p.name for p in ANCHORS.iterdir()),
        "links": links,
        "bundle": hashlib.sha256((CERTS / "ca-certificates.crt").read_bytes()).hexdigest(),
        "java": java,
    }


@pytest.fixture
def system_store_guard(fresh_ca: LocalCA) -> Iterator[dict[str, object]]:
    """Snapshot before; whatever happens, the root is taken out again afterwards."""
    require_debian_root()
    # A store seeded by hand (a regular file in /etc/ssl/certs, a keystore without it) is
    # normalised by any update-ca-certificates run, devtls's or not; start from that state.
    run("update-ca-certificates")
    before = snapshot()
    yield before
    store = LinuxSystemStore()
    store.uninstall(fresh_ca)
    mkcert_anchor = store.mkcert_anchor(fresh_ca)
    if mkcert_anchor.exists():
        _remove_mkcert_copy(fresh_ca, mkcert_anchor)


def _remove_mkcert_copy(ca: LocalCA, anchor: Path) -> None:
    anchor.unlink()
    run("update-ca-certificates")
    for link in CERTS.iterdir():
        if link.is_symlink() and not link.exists():
            link.unlink()
    alias = f"debian:{anchor.stem}.pem"
    run("keytool", "-delete", "-alias", alias, "-keystore", JAVA_KEYSTORE, "-storepass", "changeit",
        check=False)  # fmt: skip


def curl_ok(port: int) -> bool:
    curl = require_tool("curl")
    result = run(curl, "-sS", f"https://localhost:{port}/", check=False)
    return result.returncode == 0 and result.stdout == "trusted"


def openssl_verifies(ca: LocalCA, tmp_path: Path) -> bool:
    openssl = require_tool("openssl")
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(ca.issue("localhost", key_type="ecdsa").cert_pem())
    return run(openssl, "verify", "-CApath", CERTS, leaf, check=False).returncode == 0


def status_of(store: str) -> dict[str, str]:
    result = devtls("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["stores"][store]


def test_round_trip_leaves_the_store_as_it_was(
    fresh_ca: LocalCA, tls_server: TLSServer, system_store_guard: dict, tmp_path: Path
) -> None:
    assert not curl_ok(tls_server.port)  # negative control
    assert not openssl_verifies(fresh_ca, tmp_path)
    assert status_of("system")["state"] == "not trusted"

    first = devtls("install", "--store", "system")
    assert first.returncode == 0, first.stderr
    assert "system: installed" in first.stdout
    assert curl_ok(tls_server.port)
    assert openssl_verifies(fresh_ca, tmp_path)
    assert status_of("system")["state"] == "trusted"
    anchors_after_first = sorted(p.name for p in ANCHORS.iterdir())

    again = devtls("install", "--store", "system")
    assert again.returncode == 0
    assert "system: already trusted" in again.stdout
    assert sorted(p.name for p in ANCHORS.iterdir()) == anchors_after_first
    assert anchors_after_first.count(f"{entry_name(fresh_ca)}.crt") == 1

    removed = devtls("uninstall", "--store", "system")
    assert removed.returncode == 0, removed.stderr
    assert "system: removed" in removed.stdout
    assert not curl_ok(tls_server.port)
    assert not openssl_verifies(fresh_ca, tmp_path)
    assert status_of("system")["state"] == "not trusted"
    # No anchor, no dangling link, no Java copy, the same bundle: exactly as before.
    assert snapshot() == system_store_guard


def test_dry_run_changes_nothing(fresh_ca: LocalCA, system_store_guard: dict) -> None:
    result = devtls("install", "--store", "system", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "system: would run" in result.stdout
    assert f"write {ANCHORS / entry_name(fresh_ca)}.crt" in result.stdout
    assert "update-ca-certificates" in result.stdout
    assert snapshot() == system_store_guard


def test_root_installed_by_mkcert_counts_and_is_not_duplicated(
    fresh_ca: LocalCA, tls_server: TLSServer, system_store_guard: dict
) -> None:
    mkcert = require_tool("mkcert")
    env = {**os.environ, "TRUST_STORES": "system"}
    run(mkcert, "-install", env=env)
    mkcert_anchor = ANCHORS / (mkcert_name(fresh_ca).replace(" ", "_") + ".crt")
    assert mkcert_anchor.exists()
    assert status_of("system")["state"] == "trusted"
    result = devtls("install", "--store", "system")
    assert "system: already trusted" in result.stdout
    assert not (ANCHORS / f"{entry_name(fresh_ca)}.crt").exists()
    # devtls's uninstall removes only its own entry and says where the root still is.
    result = devtls("uninstall", "--store", "system")
    assert "mkcert" in result.stdout
    assert curl_ok(tls_server.port)


def test_without_rights_it_says_what_to_run(
    fresh_ca: LocalCA, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not root and no terminal for sudo: one line naming the exact command, nothing written."""
    require_debian_root()
    import io

    from typer.testing import CliRunner

    from devtls.cli import app

    before = sorted(p.name for p in ANCHORS.iterdir())
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    result = CliRunner().invoke(app, ["install", "--store", "system"])
    assert result.exit_code == 1
    error_lines = [line for line in result.output.splitlines() if line.startswith("devtls: error")]
    assert len(error_lines) == 1, result.output
    assert "administrator" in error_lines[0]
    assert f"sudo CAROOT={fresh_ca.path}" in error_lines[0]
    assert "install --store system" in error_lines[0]
    assert sorted(p.name for p in ANCHORS.iterdir()) == before


def test_two_cas_with_one_subject_coexist_and_leave_separately(
    fresh_ca: LocalCA, system_store_guard: dict, tmp_path: Path
) -> None:
    """Two CAROOTs of one user have the same subject, so the same OpenSSL hash link name."""
    other, _ = LocalCA.load_or_create(tmp_path / "second-caroot")
    assert other.cert.subject == fresh_ca.cert.subject
    try:
        assert devtls("install", "--store", "system").returncode == 0
        assert (
            devtls("install", "--store", "system", env={"CAROOT": str(other.path)}).returncode == 0
        )
        assert openssl_verifies(fresh_ca, tmp_path)
        assert openssl_verifies(other, tmp_path)
        # Taking out the first must not hide the second from -CApath lookups.
        assert devtls("uninstall", "--store", "system").returncode == 0
        assert not openssl_verifies(fresh_ca, tmp_path)
        assert openssl_verifies(other, tmp_path)
    finally:
        LinuxSystemStore().uninstall(other)
    assert snapshot() == system_store_guard


def test_status_is_not_fooled_by_devtls_env(fresh_ca: LocalCA, system_store_guard: dict) -> None:
    """After `eval "$(devtls env)"` OpenSSL trusts the bundle; the system store still does not."""
    bundle_lines = devtls("env", "--shell", "bash").stdout.splitlines()
    bundle = next(line.split("=", 1)[1] for line in bundle_lines if "SSL_CERT_FILE" in line)
    result = devtls("status", "--json", env={"SSL_CERT_FILE": bundle.strip("'")})
    assert json.loads(result.stdout)["stores"]["system"]["state"] == "not trusted"
