"""The CA's lifecycle: expiry warnings, `devtls ca rotate`, a crash mid-rotation, `uninstall --old`."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from devtls import castaging
from devtls.ca import CERT_FILE, KEY_FILE, LocalCA
from devtls.constraints import parse_constraints
from devtls.rotate import old_roots, rotate
from tests.conftest import wait_for
from tests.proxy.test_serve_cli import free_port, serving
from tests.selfsigned import self_signed


def devtls(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtls", *args],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **env},
    )  # fmt: skip


@pytest.fixture
def no_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Only an empty HOME's NSS, so no store of this machine is looked at or changed."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "TRUST_STORES": "nss"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def root_expiring_in(days: int, folder: Path) -> LocalCA:
    """A CA on disk whose root ends ``days`` from now (a real root otherwise)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "devtls ending root")])
    now = dt.datetime.now(dt.timezone.utc)
    basic = x509.BasicConstraints(ca=True, path_length=0)
    identifier = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert, _ = self_signed(
        name,
        now - dt.timedelta(days=3000),
        now + dt.timedelta(days=days, hours=1),
        [(basic, True), (identifier, False)],
        key,
    )
    ca = LocalCA(cert, key, folder)
    folder.mkdir(mode=0o700)
    (folder / KEY_FILE).write_bytes(ca.key_pem())
    (folder / KEY_FILE).chmod(0o600)
    (folder / CERT_FILE).write_bytes(ca.cert_pem())
    return ca


# -- expiry warnings --------------------------------------------------------------------------


def test_status_and_serve_warn_when_the_root_expires_within_90_days(
    tmp_path: Path, no_stores: dict[str, str]
) -> None:
    caroot = tmp_path / "ca"
    root_expiring_in(30, caroot)
    env = {**no_stores, "CAROOT": str(caroot)}
    report = devtls("status", "--json", env=env)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["expiry_warning"].startswith("expires in 30 days")
    text = devtls("status", env=env)
    assert "devtls: warning: the root expires in 30 days" in text.stderr
    assert "run 'devtls ca rotate'" in text.stderr
    port = free_port()
    with serving("--listen", f"127.0.0.1:{port}", caroot=caroot) as (_, lines):
        banner = "\n".join(lines)
    assert "devtls: warning: the local CA's root expires in 30 days" in banner, banner


def test_a_root_far_from_its_end_gives_no_warning(
    tmp_path: Path, no_stores: dict[str, str]
) -> None:
    caroot = tmp_path / "ca"
    root_expiring_in(400, caroot)
    report = devtls("status", "--json", env={**no_stores, "CAROOT": str(caroot)})
    assert json.loads(report.stdout)["expiry_warning"] is None


# -- rotation on disk ---------------------------------------------------------------------------


def test_rotate_keeps_mkcert_layout_key_type_and_constraints(
    tmp_path: Path, no_stores: dict[str, str]
) -> None:
    caroot = tmp_path / "ca"
    limits = parse_constraints("localhost,.test,127.0.0.0/8")
    old, _ = LocalCA.load_or_create(caroot, constraints=limits)
    done = rotate(caroot, now=dt.datetime(2031, 5, 6, 7, 8, tzinfo=dt.timezone.utc))
    assert sorted(os.listdir(caroot)) == sorted(["rootCA-20310506.pem", CERT_FILE, KEY_FILE])
    new = LocalCA.load(caroot)
    assert new.cert == done.new.cert != old.cert
    assert new.constraints == limits
    assert type(new.key) is type(old.key)
    assert new.subject != old.subject  # never two roots of one subject
    assert (caroot / "rootCA-20310506.pem").read_bytes() == old.cert_pem()
    assert oct((caroot / KEY_FILE).stat().st_mode & 0o777) == "0o600"
    assert [r.cert for r in old_roots(caroot)] == [old.cert]
    # A second rotation the same day keeps both old roots.
    rotate(caroot, now=dt.datetime(2031, 5, 6, 9, 0, tzinfo=dt.timezone.utc))
    assert (caroot / "rootCA-20310506-2.pem").read_bytes() == new.cert_pem()
    assert [r.cert for r in old_roots(caroot)] == [old.cert, new.cert]
    report = devtls("status", "--json", env={**no_stores, "CAROOT": str(caroot)})
    assert json.loads(report.stdout)["old_roots"] == [
        "rootCA-20310506.pem",
        "rootCA-20310506-2.pem",
    ]


def test_rotate_without_a_ca_is_one_line(tmp_path: Path, no_stores: dict[str, str]) -> None:
    result = devtls("ca", "rotate", env={**no_stores, "CAROOT": str(tmp_path / "none")})
    assert result.returncode == 1
    assert result.stderr.startswith("devtls: error: no CA in ")
    assert result.stderr.count("\n") == 1


CRASH_AT_RENAME = """
import os, sys
from pathlib import Path
import devtls.rotate as rotate
real, calls = os.replace, []
def replace(src, dst):
    if Path(dst).name in ("rootCA-key.pem", "rootCA.pem"):
        calls.append(dst)
    if len(calls) == int(sys.argv[2]):
        os._exit(9)  # the power goes out: no cleanup, no exception handler
    real(src, dst)
os.replace = replace
rotate.rotate(Path(sys.argv[1]))
"""


def crash_rotation(caroot: Path, at_rename: int) -> None:
    """Run a rotation in a child that dies at its ``at_rename``-th rename into mkcert's names."""
    result = subprocess.run(
        [sys.executable, "-c", CRASH_AT_RENAME, str(caroot), str(at_rename)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 9, result.stderr


def test_a_crash_between_the_two_renames_is_finished_at_the_next_load(
    tmp_path: Path, no_stores: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caroot = tmp_path / "ca"
    old, _ = LocalCA.load_or_create(caroot)
    crash_rotation(caroot, 2)  # the key is in place, the certificate is not
    assert (caroot / (CERT_FILE + castaging.STAGED_SUFFIX)).exists()
    assert (caroot / CERT_FILE).read_bytes() == old.cert_pem()
    assert (caroot / KEY_FILE).read_bytes() != old.key_pem()
    recovered = LocalCA.load(caroot)  # the key would not match without recovery
    assert recovered.cert != old.cert
    assert "finished an interrupted 'devtls ca rotate'" in caplog.text
    assert sorted(os.listdir(caroot)) == sorted(
        [CERT_FILE, KEY_FILE, castaging.archives(caroot)[0].name]
    )
    assert [r.cert for r in old_roots(caroot)] == [old.cert]
    recovered.issue("localhost")  # a whole pair again


def test_a_crash_before_the_renames_is_undone(
    tmp_path: Path, no_stores: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caroot = tmp_path / "ca"
    old, _ = LocalCA.load_or_create(caroot)
    crash_rotation(caroot, 1)
    assert len(list(caroot.glob("*" + castaging.STAGED_SUFFIX))) == 2
    status = devtls("status", "--json", env={**no_stores, "CAROOT": str(caroot)})
    assert status.returncode == 0, status.stderr
    assert "undid an interrupted 'devtls ca rotate'" in status.stderr
    assert json.loads(status.stdout)["fingerprint_sha256"] == old.fingerprint_sha256
    # Nothing of the rotation is left: the archive copy of a root still current is gone too.
    assert sorted(os.listdir(caroot)) == sorted([CERT_FILE, KEY_FILE])
    assert old_roots(caroot) == []


# -- a running serve switches to the new root -------------------------------------------------


def served_issuer(port: int, server_name: str) -> x509.Name:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).issuer


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_running_serve_mints_from_the_new_root_after_rotate(
    tmp_path: Path, no_stores: dict[str, str], workers: str
) -> None:
    caroot = tmp_path / "ca"
    old, _ = LocalCA.load_or_create(caroot)
    port = free_port()
    args = ("--listen", f"127.0.0.1:{port}", "--workers", workers)
    with serving(*args, caroot=caroot) as (process, _lines):
        assert served_issuer(port, "localhost") == old.cert.subject
        assert served_issuer(port, "app.localhost") == old.cert.subject  # minted on demand
        result = devtls("ca", "rotate", env={**no_stores, "CAROOT": str(caroot)})
        assert result.returncode == 0, result.stderr
        new = LocalCA.load(caroot)
        assert wait_for(
            lambda: all(served_issuer(port, "localhost") == new.cert.subject for _ in range(6)),
            15,
        )
        # Every worker switched (connections spread over them), and the cached leaf of the old
        # root is forgotten: minted again, from the new root.
        for name in ("localhost", "app.localhost", "other.localhost") * 4:
            assert served_issuer(port, name) == new.cert.subject, name
        assert process.poll() is None
        process.terminate()
        assert process.stdout is not None
        rest = process.stdout.read()
    assert "the CA's root changed: new certificates come from" in rest


# -- uninstall --old ------------------------------------------------------------------------


def test_uninstall_old_removes_exactly_the_old_roots(
    tmp_path: Path, no_stores: dict[str, str]
) -> None:
    from devtls.truststores.nss import NSSStore
    from tests.truststores.test_nss_java import new_nss_db, nss_listing

    home = Path(no_stores["HOME"])
    db = home / ".pki" / "nssdb"
    new_nss_db(db)
    caroot = tmp_path / "ca"
    env = {**no_stores, "CAROOT": str(caroot)}
    # Another CA's root in the same database must stay where it is.
    stranger = LocalCA.ephemeral()
    (tmp_path / "stranger.pem").write_bytes(stranger.cert_pem())
    subprocess.run(
        ["certutil", "-A", "-d", f"sql:{db}", "-t", "C,,", "-n", "stranger",
         "-i", str(tmp_path / "stranger.pem")], check=True, timeout=60,
    )  # fmt: skip
    assert devtls("install", env=env).returncode == 0
    first = LocalCA.load(caroot)
    rotated = devtls("ca", "rotate", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert "nss: installed the new root" in rotated.stdout
    second = LocalCA.load(caroot)
    store = NSSStore(home=home)
    assert store.is_installed(first)
    assert store.is_installed(second)
    done = devtls("uninstall", "--old", env=env)
    assert done.returncode == 0, done.stderr
    assert "nss: removed" in done.stdout
    assert not store.is_installed(first)
    assert store.is_installed(second)
    assert "stranger" in nss_listing(db)
    assert sorted(os.listdir(caroot)) == sorted([CERT_FILE, KEY_FILE])
    assert devtls("uninstall", "--old", env=env).stdout == "no old roots to remove\n"


def test_uninstall_old_with_store_keeps_the_file(tmp_path: Path, no_stores: dict[str, str]) -> None:
    caroot = tmp_path / "ca"
    LocalCA.load_or_create(caroot)
    rotate(caroot)
    env = {**no_stores, "CAROOT": str(caroot)}
    result = devtls("uninstall", "--old", "--store", "nss", env=env)
    assert result.returncode == 0, result.stderr
    assert len(castaging.archives(caroot)) == 1  # other stores may still hold it


def test_concurrent_loads_wait_for_a_rotation(tmp_path: Path, no_stores: dict[str, str]) -> None:
    """A reader during a rotation gets the old pair or the new one, never a mixed one."""
    caroot = tmp_path / "ca"
    LocalCA.load_or_create(caroot)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        for _ in range(2000):
            if stop.is_set():
                return
            try:
                LocalCA.load(caroot)
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            rotate(caroot)
    finally:
        stop.set()
        reader.join(60)
    assert errors == []


class BrokenStore:
    """Trusts the old root, cannot take a new one (a store whose tool fails)."""

    name = "java"

    def available(self) -> object:
        from devtls.truststores.base import Availability

        return Availability(True, "a test store")

    def is_installed(self, ca: object) -> bool:
        return True

    def plan_install(self, ca: object) -> list[str]:
        return ["keytool -importcert ..."]

    def install(self, ca: object) -> None:
        from devtls.errors import TrustStoreError

        raise TrustStoreError("keytool -importcert failed: keystore was tampered with")

    def plan_uninstall(self, ca: object) -> list[str]:
        return []

    def uninstall(self, ca: object) -> None:
        pass


def test_a_store_that_fails_leaves_everything_as_it_was(
    tmp_path: Path, no_stores: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from devtls import rotate as rotation
    from devtls.errors import TrustStoreError
    from devtls.truststores.nss import NSSStore
    from tests.truststores.test_nss_java import new_nss_db

    home = Path(no_stores["HOME"])
    new_nss_db(home / ".pki" / "nssdb")
    caroot = tmp_path / "ca"
    old, _ = LocalCA.load_or_create(caroot)
    nss = NSSStore(home=home)
    nss.install(old)
    monkeypatch.setattr(rotation, "select", lambda _requested: [nss, BrokenStore()])
    before = {p.name: p.read_bytes() for p in caroot.iterdir()}
    listing_before = nss.databases()
    with pytest.raises(TrustStoreError) as info:
        rotation.rotate(caroot)
    assert str(info.value).startswith("the root was not rotated: java: keytool -importcert failed")
    assert {p.name: p.read_bytes() for p in caroot.iterdir()} == before
    assert nss.databases() == listing_before
    assert nss.is_installed(old)
    from tests.truststores.test_nss_java import nss_listing

    # Only the old root is left in NSS: the new one it got was taken out again.
    assert nss_listing(home / ".pki" / "nssdb").count("devtls development CA") == 1


def test_the_env_bundle_holds_the_new_root_and_the_old_until_uninstall_old(
    tmp_path: Path, no_stores: dict[str, str]
) -> None:
    from devtls.trust import BUNDLE_FILE, env_variables

    caroot = tmp_path / "ca"
    old, _ = LocalCA.load_or_create(caroot)
    bundle = Path(env_variables(old)["SSL_CERT_FILE"])
    rotate(caroot)
    new = LocalCA.load(caroot)
    content = bundle.read_bytes()
    assert old.cert_pem().strip() in content
    assert new.cert_pem().strip() in content
    result = devtls("uninstall", "--old", env={**no_stores, "CAROOT": str(caroot)})
    assert result.returncode == 0, result.stderr
    content = (caroot / BUNDLE_FILE).read_bytes()
    assert old.cert_pem().strip() not in content
    assert new.cert_pem().strip() in content
