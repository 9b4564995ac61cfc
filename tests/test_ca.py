from __future__ import annotations

import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devtls.ca import CERT_FILE, KEY_FILE, LocalCA, resolve_caroot
from devtls.errors import CAError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listing(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())} if root.exists() else {}


def test_caroot_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAROOT", str(tmp_path / "x"))
    assert resolve_caroot() == tmp_path / "x"


def test_caroot_defaults_to_user_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CAROOT", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    if sys.platform.startswith("linux"):
        assert resolve_caroot() == tmp_path / "data" / "devtls"
    else:  # pragma: no cover
        assert resolve_caroot().name == "devtls"


def test_create_writes_mkcert_layout_with_modes(caroot: Path) -> None:
    ca, created = LocalCA.load_or_create()
    assert created
    assert sorted(p.name for p in caroot.iterdir()) == sorted([CERT_FILE, KEY_FILE])
    assert mode(caroot) == 0o700
    assert mode(caroot / KEY_FILE) == 0o600
    assert mode(caroot / CERT_FILE) == 0o644
    assert (caroot / KEY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again, created_again = LocalCA.load_or_create()
    assert not created_again
    assert again.fingerprint_sha256 == ca.fingerprint_sha256


def test_root_profile(caroot: Path) -> None:
    ca, _ = LocalCA.load_or_create()
    cert = ca.cert
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    assert ca.key.key_size == 3072
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.subject == cert.issuer
    common_name = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert str(common_name).startswith("devtls ")
    assert "@" in str(common_name)
    organization = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value
    assert "devtls" in str(organization)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 3650 <= lifetime.days <= 3653
    assert 0 < cert.serial_number < 2**128


def test_serials_are_random(caroot: Path) -> None:
    serials = {LocalCA.ephemeral().serial_number for _ in range(5)}
    assert len(serials) == 5


def test_load_without_ca_says_how_to_create(caroot: Path) -> None:
    with pytest.raises(CAError, match="devtls install"):
        LocalCA.load()
    assert not caroot.exists()


def test_ephemeral_ca_stays_in_memory(caroot: Path) -> None:
    ca = LocalCA.ephemeral()
    assert ca.path is None
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    assert not caroot.exists()


# -- broken CA folders: each names the file and writes nothing ------------------------------


def _write_good_ca(root: Path) -> LocalCA:
    ca, _ = LocalCA.load_or_create(root)
    return ca


def _break_only_cert(root: Path) -> None:
    (root / KEY_FILE).unlink()


def _break_only_key(root: Path) -> None:
    (root / CERT_FILE).unlink()


def _break_mismatch(root: Path) -> None:
    other = LocalCA.generate("ecdsa")
    (root / KEY_FILE).write_bytes(other.key_pem())


def _break_not_a_ca(root: Path) -> None:
    leaf = LocalCA.ephemeral().issue("localhost", key_type="ecdsa")
    (root / CERT_FILE).write_bytes(leaf.cert_pem())
    (root / KEY_FILE).write_bytes(leaf.key_pem())


def _break_cert_garbage(root: Path) -> None:
    (root / CERT_FILE).write_bytes(b"hello\n")


def _break_key_garbage(root: Path) -> None:
    (root / KEY_FILE).write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def _break_key_encrypted(root: Path) -> None:
    ca = LocalCA.load(root)
    (root / KEY_FILE).write_bytes(
        ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )


def _break_key_unreadable(root: Path) -> None:
    # Root ignores file modes, so make the key a folder: reading it fails for everyone.
    (root / KEY_FILE).unlink()
    (root / KEY_FILE).mkdir()


@pytest.mark.parametrize(
    ("breaker", "file_name", "words"),
    [
        (_break_only_cert, KEY_FILE, "holds rootCA.pem but not rootCA-key.pem"),
        (_break_only_key, CERT_FILE, "holds rootCA-key.pem but not rootCA.pem"),
        (_break_mismatch, KEY_FILE, "does not match"),
        (_break_not_a_ca, CERT_FILE, "is not a CA certificate"),
        (_break_cert_garbage, CERT_FILE, "is not a PEM certificate"),
        (_break_key_garbage, KEY_FILE, "is not a PEM private key"),
        (_break_key_encrypted, KEY_FILE, "is encrypted"),
        (_break_key_unreadable, KEY_FILE, "cannot read"),
    ],
)
def test_broken_ca_folder_names_the_file_and_writes_nothing(
    tmp_path: Path, breaker: object, file_name: str, words: str
) -> None:
    root = tmp_path / "ca"
    _write_good_ca(root)
    breaker(root)  # type: ignore[operator]
    before = {p.name for p in root.iterdir()}
    snapshot = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    for attempt in (LocalCA.load, LocalCA.load_or_create):
        with pytest.raises(CAError) as excinfo:
            attempt(root)
        message = str(excinfo.value)
        assert words in message
        assert file_name in message
        assert "\n" not in message
    assert {p.name for p in root.iterdir()} == before
    assert {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()} == snapshot


def test_loads_pkcs1_rsa_and_sec1_ec_keys(tmp_path: Path) -> None:
    for key_type, fmt in (
        ("rsa", serialization.PrivateFormat.TraditionalOpenSSL),
        ("ecdsa", serialization.PrivateFormat.TraditionalOpenSSL),
    ):
        root = tmp_path / key_type
        root.mkdir()
        ca = LocalCA.generate(key_type)  # type: ignore[arg-type]
        (root / CERT_FILE).write_bytes(ca.cert_pem())
        (root / KEY_FILE).write_bytes(
            ca.key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
        )
        assert LocalCA.load(root).fingerprint_sha256 == ca.fingerprint_sha256


def test_warns_when_key_is_readable_by_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "ca"
    _write_good_ca(root)
    (root / KEY_FILE).chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="devtls"):
        LocalCA.load(root)
    assert "readable by other users" in caplog.text
    assert "chmod 600" in caplog.text
    assert "PRIVATE KEY" not in caplog.text


def test_expired_ca_cannot_issue(local_ca: LocalCA) -> None:
    later = local_ca.not_after.replace(year=local_ca.not_after.year + 1)
    with pytest.raises(CAError, match="expired"):
        local_ca.check_usable(later)


def test_cannot_create_in_unwritable_place(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CAError, match="cannot create the CA folder"):
        LocalCA.load_or_create(blocker / "ca")


CREATE_SCRIPT = """
import sys
from pathlib import Path
from devtls.ca import LocalCA
ca, created = LocalCA.load_or_create(Path(sys.argv[1]))
print(ca.fingerprint_sha256, created)
"""


def test_concurrent_creation_makes_one_ca(tmp_path: Path) -> None:
    root = tmp_path / "race"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE_SCRIPT, str(root)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outputs = [p.communicate(timeout=120)[0].split() for p in processes]
    assert all(p.returncode == 0 for p in processes)
    fingerprints = {fp for fp, _ in outputs}
    assert len(fingerprints) == 1
    assert [created for _, created in outputs].count("True") == 1
    assert sorted(p.name for p in root.iterdir()) == sorted([CERT_FILE, KEY_FILE])
    assert LocalCA.load(root).fingerprint_sha256 in fingerprints
