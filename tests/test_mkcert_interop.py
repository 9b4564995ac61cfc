"""devtls and the real mkcert binary share one CAROOT, in both directions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from devtls.ca import CERT_FILE, KEY_FILE, LocalCA
from devtls.certfiles import CertRequest, make_cert_files
from tests.conftest import require_tool, run


def mkcert(caroot: Path, *args: str, cwd: Path) -> str:
    binary = require_tool("mkcert")
    env = {**os.environ, "CAROOT": str(caroot)}
    return run(binary, *args, cwd=cwd, env=env).stderr


def openssl_verify(ca_file: Path, cert_file: Path) -> str:
    openssl = require_tool("openssl")
    return run(openssl, "verify", "-CAfile", ca_file, cert_file).stdout


@pytest.mark.parametrize("ecdsa", [False, True])
def test_devtls_uses_a_ca_made_by_mkcert(caroot: Path, chdir_tmp: Path, ecdsa: bool) -> None:
    caroot.mkdir()
    mkcert(caroot, "ca-only.test", cwd=chdir_tmp)  # makes the CA (and a leaf we ignore)
    before = {p: p.read_bytes() for p in caroot.iterdir()}
    result = make_cert_files(
        CertRequest(names=("localhost", "127.0.0.1", "::1"), key_type="ecdsa" if ecdsa else "rsa")
    )
    assert not result.ca_created
    assert {p: p.read_bytes() for p in caroot.iterdir()} == before  # unchanged
    out = openssl_verify(caroot / CERT_FILE, chdir_tmp / "localhost+2.pem")
    assert out.strip().endswith(": OK")
    assert "mkcert development CA" in result.ca.subject


def test_mkcert_uses_a_ca_made_by_devtls(caroot: Path, chdir_tmp: Path) -> None:
    _, created = LocalCA.load_or_create()
    assert created
    before = {p: p.read_bytes() for p in caroot.iterdir()}
    log = mkcert(caroot, "localhost", "127.0.0.1", cwd=chdir_tmp)
    assert "Created a new local CA" not in log
    assert {p: p.read_bytes() for p in caroot.iterdir()} == before
    out = openssl_verify(caroot / CERT_FILE, chdir_tmp / "localhost+1.pem")
    assert out.strip().endswith(": OK")
    ecdsa_log = mkcert(caroot, "-ecdsa", "-client", "me@x.test", cwd=chdir_tmp)
    assert "me@x.test-client.pem" in ecdsa_log
    assert (
        openssl_verify(caroot / CERT_FILE, chdir_tmp / "me@x.test-client.pem")
        .strip()
        .endswith(": OK")
    )
    assert stat.S_IMODE((caroot / KEY_FILE).stat().st_mode) == 0o600


def test_same_default_file_names_as_mkcert(tmp_path: Path) -> None:
    caroot = tmp_path / "ca"
    caroot.mkdir()
    names = ["*.app.test", "app.test", "::1"]
    mk_dir, dev_dir = tmp_path / "mk", tmp_path / "dev"
    mk_dir.mkdir()
    dev_dir.mkdir()
    mkcert(caroot, "-client", *names, cwd=mk_dir)
    cwd = Path.cwd()
    os.chdir(dev_dir)
    try:
        make_cert_files(CertRequest(names=tuple(names), client=True, key_type="ecdsa"), caroot)
    finally:
        os.chdir(cwd)
    assert sorted(p.name for p in dev_dir.iterdir()) == sorted(p.name for p in mk_dir.iterdir())


def test_mkcert_reads_a_constrained_root_and_its_outside_leaves_fail(
    caroot: Path, chdir_tmp: Path
) -> None:
    """mkcert uses the constrained CA as any other; it does not check the constraints, so a
    leaf it makes for a name outside is one every verifier rejects."""
    from devtls.constraints import parse_constraints

    LocalCA.load_or_create(constraints=parse_constraints("localhost,.test,127.0.0.0/8"))
    mkcert(caroot, "a.test", "127.0.0.1", cwd=chdir_tmp)
    assert openssl_verify(caroot / CERT_FILE, chdir_tmp / "a.test+1.pem").strip().endswith(": OK")
    mkcert(caroot, "a.example", cwd=chdir_tmp)
    openssl = require_tool("openssl")
    refused = run(openssl, "verify", "-CAfile", caroot / CERT_FILE, chdir_tmp / "a.example.pem",
                  check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "permitted subtree violation" in refused.stdout + refused.stderr
