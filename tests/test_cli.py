from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devtls import __version__
from devtls.cli import app

runner = CliRunner()


def devtls(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "devtls", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_version_and_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip().startswith(f"devtls {__version__} (core: ")
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("caroot", "cert"):
        assert command in result.output


def test_caroot_prints_only_the_path(caroot: Path) -> None:
    result = devtls("caroot")
    assert result.returncode == 0
    assert result.stdout == f"{caroot}\n"
    assert result.stderr == ""
    assert not caroot.exists()  # printing the path creates nothing


def test_cert_creates_ca_and_files(caroot: Path, chdir_tmp: Path) -> None:
    result = devtls("cert", "localhost", "127.0.0.1", "::1", cwd=chdir_tmp)
    assert result.returncode == 0, result.stderr
    assert "Created a new local CA" in result.stderr
    assert "devtls install" in result.stderr
    assert "localhost+2.pem" in result.stdout
    assert "localhost+2-key.pem" in result.stdout
    assert "valid until" in result.stdout
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    assert stat.S_IMODE((chdir_tmp / "localhost+2-key.pem").stat().st_mode) == 0o600
    second = devtls("cert", "--ecdsa", "--pkcs12", "a.test", cwd=chdir_tmp)
    assert second.returncode == 0, second.stderr
    assert "Created a new local CA" not in second.stderr
    assert (chdir_tmp / "a.test.p12").exists()


def test_cert_output_options(caroot: Path, chdir_tmp: Path) -> None:
    result = runner.invoke(
        app,
        ["cert", "--ecdsa", "--cert-file", "c.pem", "--key-file", "k.pem", "--days", "7", "x.test"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in chdir_tmp.iterdir()) == ["c.pem", "k.pem"]
    result = runner.invoke(app, ["cert", "--pkcs12-legacy", "--p12-file", "o.p12", "x.test"])
    assert result.exit_code == 0, result.output
    assert (chdir_tmp / "o.p12").exists()


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["cert", "*.com"], 2, "top-level"),
        (["cert", "bad name"], 2, "spaces"),
        (["cert"], 2, "no names"),
        (["cert", "--days", "900", "a.test"], 2, "--days 900 is out of range"),
        (
            ["cert", "--csr", "nope.csr"],
            2,
            "cannot read the CSR nope.csr: No such file or directory; give the path of a CSR file",
        ),
        (["cert", "--csr", "nope.csr", "a.test"], 2, "NAMEs cannot be given with --csr"),
    ],
)
def test_cert_errors_are_one_line(
    caroot: Path, chdir_tmp: Path, args: list[str], code: int, words: str
) -> None:
    result = devtls(*args, cwd=chdir_tmp)
    assert result.returncode == code
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("devtls: error: ")
    assert words in lines[0]
    assert not caroot.exists()
    assert list(chdir_tmp.iterdir()) == []


def test_broken_ca_is_exit_1_naming_the_file(caroot: Path, chdir_tmp: Path) -> None:
    caroot.mkdir()
    (caroot / "rootCA.pem").write_text("not a cert")
    result = devtls("cert", "localhost", cwd=chdir_tmp)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "rootCA-key.pem" in result.stderr
    assert (caroot / "rootCA.pem").read_text() == "not a cert"


def test_unknown_option_is_bad_usage() -> None:
    result = devtls("cert", "--nope")
    assert result.returncode == 2


def test_cli_module_holds_no_crypto_imports() -> None:
    code = "import sys, devtls.cli; print('cryptography' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ},
    ).stdout  # fmt: skip
    assert out.strip() == "False"


FULL_DISK = """
import resource, signal, sys
from devtls.cli import main
# A file-size limit makes every write past 600 bytes fail, as a full disk would.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))
sys.argv = ["devtls", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("ca_exists", [False, True])
def test_full_disk_is_one_clear_error_and_leaves_nothing_half_written(
    caroot: Path, chdir_tmp: Path, local_ca, ca_exists: bool
) -> None:
    if ca_exists:
        caroot.mkdir(mode=0o700)
        (caroot / "rootCA.pem").write_bytes(local_ca.cert_pem())
        (caroot / "rootCA-key.pem").write_bytes(local_ca.key_pem())
        (caroot / "rootCA-key.pem").chmod(0o600)
    before = {p.name: p.read_bytes() for p in caroot.iterdir()} if ca_exists else {}
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, "cert", "localhost"],
        capture_output=True, text=True, cwd=chdir_tmp, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    expected = (
        "cannot write localhost.pem and localhost-key.pem"
        if ca_exists
        else "cannot write the CA into"
    )
    assert expected in result.stderr
    assert "File too large" in result.stderr
    # No temporary or partial files anywhere, and an existing CA is untouched.
    assert list(chdir_tmp.iterdir()) == []
    if ca_exists:
        assert {p.name: p.read_bytes() for p in caroot.iterdir()} == before
    else:
        assert not caroot.exists() or list(caroot.iterdir()) == []


def test_cert_with_a_bad_uri_port_is_bad_usage(caroot: Path, chdir_tmp: Path) -> None:
    # mkcert refuses it too; before, devtls issued a certificate for it.
    result = devtls("cert", "localhost", "http://x:bad", cwd=chdir_tmp)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "devtls: error: 'http://x:bad' is not a valid URI: the port 'bad' is not a number "
        "from 0 to 65535; write it like spiffe://a.test/x or https://a.test:8443/path"
    ]
    assert list(chdir_tmp.iterdir()) == []
    assert not caroot.exists()
