"""`devtls env`: a bundle next to the CA and lines that make Python and Node trust it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtls.bundle import system_roots
from devtls.ca import LocalCA
from devtls.trust import BUNDLE_FILE, env_lines
from tests.conftest import require_tool
from tests.truststores.conftest import TLSServer, devtls


def exported(lines: list[str]) -> dict[str, str]:
    values = {}
    for line in lines:
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = value.strip("'")
    return values


def test_bash_lines_and_bundle(fresh_ca: LocalCA) -> None:
    result = devtls("env", "--shell", "bash")
    assert result.returncode == 0, result.stderr
    values = exported(result.stdout.splitlines())
    bundle = Path(values["SSL_CERT_FILE"])
    assert bundle == fresh_ca.path / BUNDLE_FILE
    assert values["REQUESTS_CA_BUNDLE"] == str(bundle)
    assert values["CURL_CA_BUNDLE"] == str(bundle)
    assert values["NODE_EXTRA_CA_CERTS"] == str(fresh_ca.path / "rootCA.pem")
    content = bundle.read_bytes()
    assert fresh_ca.cert_pem() in content
    assert content.count(b"BEGIN CERTIFICATE") > 10  # the system roots are kept
    # Rebuilt when stale: a changed file is rewritten, an unchanged one is left alone.
    bundle.write_bytes(b"stale")
    devtls("env")
    assert bundle.read_bytes() == content
    mtime = bundle.stat().st_mtime_ns
    devtls("env")
    assert bundle.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    ("shell", "line"),
    [
        ("bash", "export SSL_CERT_FILE="),
        ("zsh", "export SSL_CERT_FILE="),
        ("fish", "set -gx SSL_CERT_FILE '"),
        ("powershell", "$Env:SSL_CERT_FILE = '"),
    ],
)
def test_shell_syntax(fresh_ca: LocalCA, shell: str, line: str) -> None:
    lines = env_lines(shell)
    assert len(lines) == 4
    assert any(entry.startswith(line) for entry in lines)


def test_unknown_shell_is_bad_usage(fresh_ca: LocalCA) -> None:
    result = devtls("env", "--shell", "tcsh")
    assert result.returncode == 2
    assert "unknown shell" in result.stderr


def test_python_and_node_trust_the_ca_through_env(fresh_ca: LocalCA, tls_server: TLSServer) -> None:
    values = exported(env_lines("bash"))
    url = f"https://localhost:{tls_server.port}/"
    fetch = "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
    plain = subprocess.run(
        [sys.executable, "-c", fetch, url], capture_output=True, text=True, check=False
    )
    assert plain.returncode != 0  # negative control
    with_env = subprocess.run(
        [sys.executable, "-c", fetch, url], capture_output=True, text=True, check=False,
        env={**os.environ, **values},
    )  # fmt: skip
    assert with_env.stdout.strip() == "trusted", with_env.stderr
    node = require_tool("node")
    script = "require('https').get(process.argv[1], r => r.on('data', d => process.stdout.write(d)))" \
        ".on('error', e => { console.error(e.message); process.exit(1); })"  # fmt: skip
    node_plain = subprocess.run(
        [node, "-e", script, url], capture_output=True, text=True, check=False
    )
    assert node_plain.returncode != 0
    node_env = subprocess.run(
        [node, "-e", script, url], capture_output=True, text=True, check=False,
        env={**os.environ, **values},
    )  # fmt: skip
    assert node_env.stdout == "trusted", node_env.stderr
    # Debian's curl ignores SSL_CERT_FILE: only CURL_CA_BUNDLE gets it there.
    curl = require_tool("curl")
    curl_plain = subprocess.run([curl, "-sS", url], capture_output=True, text=True, check=False)
    assert curl_plain.returncode == 60, curl_plain.stderr
    curl_env = subprocess.run(
        [curl, "-sS", url], capture_output=True, text=True, check=False,
        env={**os.environ, **values},
    )  # fmt: skip
    assert curl_env.stdout == "trusted", curl_env.stderr


def test_system_roots_are_found() -> None:
    assert system_roots().count(b"BEGIN CERTIFICATE") > 10
