"""``devtls doctor`` against variables and files that point where no bundle is: a FIFO, a
device, a folder, a dangling link, garbage, a huge file. It must finish, say what it found
in one line per check, and write nothing."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from devtls.ca import LocalCA
from devtls.doctor.ca_files import check_ca
from devtls.doctor.environment import holds_root
from devtls.doctor.model import STATES, Report
from devtls.doctor.probe import ProbeServer
from devtls.doctor.running import discover
from devtls.doctor.served import check_served
from tests.doctorenv import base_environ, context
from tests.oddfiles import odd_paths
from tests.selfsigned import key_pem, self_signed
from tests.test_doctor_cli import devtls, folders, snapshot

VARIABLES = ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


# What doctor must call each odd path.
ODD_WORDS = {
    "fifo": "points at a FIFO, not a file",
    "device": "points at a device, not a file",
    "folder": "points at a folder",
    "dangling": "points at a missing file",
    "garbage": "no PEM certificates in it",
    "huge": "no PEM certificates in it",
}


def targets(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Each hostile target: (its path, what doctor must call it)."""
    paths = odd_paths(tmp_path / "odd")
    return {kind: (paths[kind], words) for kind, words in ODD_WORDS.items()}


# Which target each variable gets, in two runs; curl's own variable is left out of the first so
# that curl's failure is explained by SSL_CERT_FILE (doctor then reads that file again).
RUNS = [
    {"SSL_CERT_FILE": "fifo", "NODE_EXTRA_CA_CERTS": "device", "REQUESTS_CA_BUNDLE": "folder"},
    {
        "NODE_EXTRA_CA_CERTS": "dangling",
        "SSL_CERT_FILE": "huge",
        "REQUESTS_CA_BUNDLE": "garbage",
        "CURL_CA_BUNDLE": "fifo",
    },
]


@pytest.mark.parametrize("run", RUNS, ids=["fifo-device-folder", "dangling-huge-garbage-fifo"])
def test_doctor_finishes_and_names_each_odd_file(tmp_path: Path, run: dict[str, str]) -> None:
    home, cwd, caroot = folders(tmp_path)
    LocalCA.load_or_create(caroot)
    found = targets(tmp_path)
    env = base_environ(home, caroot, **{name: found[kind][0] for name, kind in run.items()})
    for name in VARIABLES:
        if name not in run:
            env.pop(name, None)
    before = snapshot(home, cwd, caroot, tmp_path / "odd")
    result = devtls("doctor", env=env, cwd=cwd)  # bounded: it times out rather than hang
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for line in lines[:-1]:
        assert line.split(" ", 1)[0] in STATES or line.startswith("      fix: "), line
    for name, kind in run.items():
        check = next(line for line in lines if line.startswith(f"fail  env {name}: "))
        assert found[kind][1] in check, check
    assert snapshot(home, cwd, caroot, tmp_path / "odd") == before


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_reading_a_variable_file_again_does_not_block(tmp_path: Path, kind: str) -> None:
    # curl's check reads SSL_CERT_FILE once more to explain curl's failure.
    caroot = tmp_path / "caroot"
    ctx = context(tmp_path, caroot)
    ctx.ca, _ = LocalCA.load_or_create(caroot)
    path = targets(tmp_path)[kind][0]
    outcome: list[bool] = []
    reader = threading.Thread(target=lambda: outcome.append(holds_root(ctx, path)), daemon=True)
    reader.start()
    reader.join(30)  # a bound, not a timing check: blocked, it would wait for a writer forever
    if reader.is_alive():
        with open(path, "wb"):  # the writer it waits for: the thread ends, the test fails
            pass
        reader.join(60)
        pytest.fail(f"holds_root blocked on {kind} {path}")
    assert outcome == [False]


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_root_file_that_is_no_file_is_named_and_no_chmod_is_offered(
    tmp_path: Path, kind: str
) -> None:
    caroot = tmp_path / "caroot"
    LocalCA.load_or_create(caroot)
    cert = caroot / "rootCA.pem"
    cert.unlink()
    if kind == "fifo":
        os.mkfifo(cert)
    elif kind == "device":
        cert.symlink_to("/dev/zero")  # mode 0666: a chmod would change the device itself
    else:
        cert.mkdir()
    checks = check_ca(context(tmp_path, caroot))
    check = next(c for c in checks if c.name == "ca rootCA.pem")
    assert check.state == "fail", check
    assert {"fifo": "a FIFO", "device": "a device", "folder": "a directory"}[kind] in check.found
    assert check.fix is not None
    assert "chmod" not in check.fix


# What another local program answering on the router's port may put in its certificate.
HOSTILE_SANS = ["localhost", "$(touch ran-sans)", "x\nok    forged: all well", "\x1b[2Jx.test"]


def hostile_leaf(tmp_path: Path) -> ssl.SSLContext:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evil\nok    forged")])
    now = dt.datetime.now(dt.timezone.utc)
    names = x509.SubjectAlternativeName([x509.DNSName(n) for n in HOSTILE_SANS])
    cert, key = self_signed(
        name, now - dt.timedelta(hours=1), now + dt.timedelta(days=30), [(names, False)]
    )
    cert_file, key_file = tmp_path / "evil.pem", tmp_path / "evil-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def test_a_served_certificate_cannot_write_doctor_lines_or_its_fix(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    ctx = context(tmp_path, caroot)
    ctx.ca, _ = LocalCA.load_or_create(caroot)
    with ProbeServer(hostile_leaf(tmp_path), 5.0) as server:
        ctx.default_listen = f"127.0.0.1:{server.port}"
        checks = check_served(ctx, discover(ctx))
    (check,) = checks
    assert check.name == f"served 127.0.0.1:{server.port} localhost"
    lines = Report(ctx.caroot, tuple(checks)).lines()
    assert len(lines) == 3, lines  # the check, its fix, the summary
    for line in lines:
        assert line.isprintable(), line
    assert check.fix is not None
    command = shlex.split(check.fix.partition(" (")[0])
    assert command == ["devtls", "cert", "localhost"], check.fix
