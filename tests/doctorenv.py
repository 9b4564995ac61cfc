"""A machine set up (or broken) for ``devtls doctor``, inside the test's own folders.

HOME, CAROOT, the working folder and XDG_RUNTIME_DIR are the test's; PATH starts with this
interpreter's folder, so ``python3`` is the test venv's (with requests and httpx).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from devtls.doctor import Check, Context
from tests.conftest import require_tool
from tests.selfsigned import key_pem, self_signed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def base_environ(home: Path, caroot: Path, **extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    environ = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "HOME": str(home),
        "CAROOT": str(caroot),
        "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"],
        # Nothing answers here: a devtls serve of another test or of the user on the
        # default 127.0.0.1:8443 is not this test's.
        "DEVTLS_RUN_LISTEN": f"127.0.0.1:{free_port()}",
        "LANG": "C.UTF-8",
    }
    environ.update(extra)
    return environ


def context(tmp_path: Path, caroot: Path, **extra: str) -> Context:
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    home.mkdir(exist_ok=True)
    cwd.mkdir(exist_ok=True)
    environ = base_environ(home, caroot, **extra)
    return Context(
        caroot=caroot,
        home=home,
        cwd=cwd,
        environ=environ,
        default_listen=environ["DEVTLS_RUN_LISTEN"],
        proc_version=tmp_path / "proc-version",
    )


def by_name(checks: list[Check] | tuple[Check, ...], name: str) -> Check:
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, (name, checks)
    return found[0]


def write_ca(root: Path, not_before: dt.datetime, not_after: dt.datetime) -> None:
    """A root CA with the given validity, in mkcert's layout (made here, not by devtls)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "doctor test root")])
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    basic = x509.BasicConstraints(ca=True, path_length=0)
    cert, key = self_signed(name, not_before, not_after, [(basic, True), (usage, True)])
    root.mkdir(mode=0o700, parents=True)
    key_file = root / "rootCA-key.pem"
    key_file.write_bytes(key_pem(key))
    key_file.chmod(0o600)
    (root / "rootCA.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def firefox_profile(firefox_root: Path, name: str = "test.default") -> Path:
    """A Firefox profile as Firefox lays it out: profiles.ini and a cert9.db (certutil -N)."""
    certutil = require_tool("certutil")
    profile = firefox_root / name
    profile.mkdir(parents=True)
    (firefox_root / "profiles.ini").write_text(
        f"[Profile0]\nName=test\nIsRelative=1\nPath={name}\nDefault=1\n"
    )
    subprocess.run(
        [certutil, "-N", "-d", f"sql:{profile}", "--empty-password"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return profile
