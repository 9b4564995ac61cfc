from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devtls import _files
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


# -- CA files are trusted only as ssh trusts its keys (StrictModes) -------------------------


def _refusal(root: Path) -> str:
    """The one-line CAError both loaders give for ``root``; nothing in it is written."""
    before = sorted(p.name for p in root.iterdir())
    messages = set()
    for attempt in (LocalCA.load, LocalCA.load_or_create):
        with pytest.raises(CAError) as excinfo:
            attempt(root)
        messages.add(str(excinfo.value))
    assert sorted(p.name for p in root.iterdir()) == before
    (message,) = messages
    assert "\n" not in message
    assert "PRIVATE KEY" not in message
    return message


@pytest.mark.parametrize(
    ("name", "mode", "fix"),
    [
        (KEY_FILE, 0o666, "chmod 600"),
        (KEY_FILE, 0o620, "chmod 600"),  # group-writable too, as ssh
        (KEY_FILE, 0o602, "chmod 600"),
        (CERT_FILE, 0o666, "chmod 644"),
        (CERT_FILE, 0o664, "chmod 644"),
    ],
)
def test_ca_file_writable_by_others_is_refused(
    tmp_path: Path, name: str, mode: int, fix: str
) -> None:
    root = tmp_path / "ca"
    _write_good_ca(root)
    (root / name).chmod(mode)
    message = _refusal(root)
    assert f"{root / name} is writable by" in message
    assert f"(mode {mode:04o})" in message
    assert f"run: {fix} {root / name}" in message


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_caroot_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    root = tmp_path / "ca"
    _write_good_ca(root)
    root.chmod(mode)
    message = _refusal(root)
    assert f"{root} is writable by" in message
    assert f"run: chmod go-w {root}" in message


def test_a_sticky_shared_folder_is_refused_and_no_ca_is_created_in_it(tmp_path: Path) -> None:
    # /tmp's mode: the sticky bit stops others deleting our files, not planting theirs.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(CAError) as excinfo:
        LocalCA.load_or_create(shared)
    message = str(excinfo.value)
    assert f"{shared} is a shared folder writable by others (mode 1777)" in message
    assert "use a CAROOT of your own" in message
    assert list(shared.iterdir()) == []
    # A CA planted there (as anyone could) is not used either.
    LocalCA.load_or_create(tmp_path / "planted")
    for name in (CERT_FILE, KEY_FILE):
        (shared / name).write_bytes((tmp_path / "planted" / name).read_bytes())
    assert "shared folder" in _refusal(shared)


def test_mkcert_modes_are_accepted(tmp_path: Path) -> None:
    # mkcert makes CAROOT 0755, the key 0400 and the certificate 0644.
    root = tmp_path / "ca"
    ca = _write_good_ca(root)
    root.chmod(0o755)
    (root / KEY_FILE).chmod(0o400)
    assert LocalCA.load(root).fingerprint_sha256 == ca.fingerprint_sha256


needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another uid needs root"
)
OTHER_UID = 12345


@needs_root
@pytest.mark.parametrize("target", ["folder", KEY_FILE, CERT_FILE])
def test_ca_owned_by_another_user_is_refused(tmp_path: Path, target: str) -> None:
    root = tmp_path / "ca"
    _write_good_ca(root)
    path = root if target == "folder" else root / target
    os.chown(path, OTHER_UID, -1)
    message = _refusal(root)
    assert f"{path} belongs to uid {OTHER_UID}, not to you" in message
    recursive = "-R " if path == root else ""
    assert f"if it is yours, run: sudo chown {recursive}root {path}" in message


def test_owner_check_without_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Where the tests cannot chown: pretend that nobody who owns these files is trusted.
    root = tmp_path / "ca"
    _write_good_ca(root)
    monkeypatch.setattr(_files, "trusted_owner", lambda uid: False)
    message = _refusal(root)
    assert f"{root} belongs to" in message
    assert "if it is yours, run: sudo chown " in message


def test_symlinked_caroot_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    ca = _write_good_ca(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert LocalCA.load(link).fingerprint_sha256 == ca.fingerprint_sha256
    assert LocalCA.load_or_create(link)[0].fingerprint_sha256 == ca.fingerprint_sha256


@pytest.mark.parametrize("dangling", [False, True])
def test_symlinked_key_is_refused(tmp_path: Path, dangling: bool) -> None:
    root = tmp_path / "ca"
    _write_good_ca(root)
    elsewhere = tmp_path / "key.pem"
    (root / KEY_FILE).rename(elsewhere)
    if dangling:
        elsewhere.unlink()
    (root / KEY_FILE).symlink_to(elsewhere)
    message = _refusal(root)
    assert f"{root / KEY_FILE} is a symbolic link" in message
    assert "replace the link by the file it points to" in message


def test_huge_key_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    root = tmp_path / "ca"
    _write_good_ca(root)
    key = root / KEY_FILE
    with key.open("r+b") as file:
        file.truncate(4 * 1024**3)  # sparse: 4 GiB that take no disk
    started = time.monotonic()
    message = _refusal(root)
    assert time.monotonic() - started < 5
    assert f"{key} is larger than {_files.MAX_SECRET_FILE_BYTES // 1024} KiB" in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name", [KEY_FILE, CERT_FILE])
def test_fifo_as_ca_file_fails_at_once(tmp_path: Path, name: str) -> None:
    root = tmp_path / "ca"
    _write_good_ca(root)
    (root / name).unlink()
    os.mkfifo(root / name, 0o600)
    message = _refusal(root)
    assert f"cannot read {root / name}: it is a FIFO, not a regular file" in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_key_is_one_line_from_every_command(tmp_path: Path) -> None:
    root = tmp_path / "ca"
    _write_good_ca(root)
    (root / KEY_FILE).unlink()
    os.mkfifo(root / KEY_FILE, 0o600)
    env = {**os.environ, "CAROOT": str(root)}
    for args in (["cert", "a.test"], ["status"]):
        done = subprocess.run(
            [sys.executable, "-m", "devtls", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=30,  # before this fix the command hung here forever
        )
        assert done.returncode == 1, done
        assert done.stderr.splitlines() == [
            f"devtls: error: cannot read {root / KEY_FILE}: it is a FIFO, not a regular file; "
            "replace it by the file itself, or move the folder away to start a new CA"
        ]
    assert not list(tmp_path.glob("a.test*"))


@pytest.mark.parametrize("failing_write", [1, 2])
def test_ca_creation_on_a_full_disk_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_write: int
) -> None:
    real = _files._write_fd
    calls = 0

    def write(fd: int, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == failing_write:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(_files, "_write_fd", write)
    root = tmp_path / "ca"
    with pytest.raises(CAError, match=r"cannot write the CA into .*No space left"):
        LocalCA.load_or_create(root)
    assert list(root.iterdir()) == []


def test_a_ca_created_meanwhile_by_another_program_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ca"
    other = LocalCA.generate("ecdsa")
    real_generate = LocalCA.generate

    def generate_while_mkcert_writes(*args: object, **kwargs: object) -> LocalCA:
        (root / KEY_FILE).write_bytes(other.key_pem())
        (root / CERT_FILE).write_bytes(other.cert_pem())
        return real_generate("ecdsa")

    monkeypatch.setattr(LocalCA, "generate", staticmethod(generate_while_mkcert_writes))
    monkeypatch.setattr("devtls.ca._folder_state", lambda r: "missing")
    with pytest.raises(CAError, match="another program created a CA"):
        LocalCA.load_or_create(root)
    assert (root / CERT_FILE).read_bytes() == other.cert_pem()
    assert (root / KEY_FILE).read_bytes() == other.key_pem()


def test_a_folder_given_as_a_str_works_as_a_path(tmp_path: Path) -> None:
    folder = tmp_path / "as-str"
    created, was_created = LocalCA.load_or_create(str(folder))
    assert was_created
    assert created.path == folder
    assert mode(folder / KEY_FILE) == 0o600
    assert LocalCA.load(str(folder)).fingerprint_sha256 == created.fingerprint_sha256
    with pytest.raises(CAError, match="no CA in"):
        LocalCA.load(str(tmp_path / "empty"))
