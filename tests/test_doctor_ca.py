"""doctor on the CA folder: missing, a key others can read, a root expiring or expired."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from devtls.ca import LocalCA
from devtls.doctor import Report
from devtls.doctor.ca_files import check_ca
from tests.doctorenv import by_name, context, write_ca

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def test_no_ca_is_a_failure_fixed_by_install_and_nothing_is_created(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    ctx = context(tmp_path, caroot)
    checks = check_ca(ctx)
    assert [(c.name, c.state, c.fix) for c in checks] == [("ca", "fail", "devtls install")]
    assert str(caroot) in checks[0].found
    assert ctx.ca is None
    assert not caroot.exists()


def test_a_key_others_can_read_is_a_failure_with_its_chmod(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    LocalCA.load_or_create(caroot)
    key = caroot / "rootCA-key.pem"
    key.chmod(0o644)
    ctx = context(tmp_path, caroot)
    checks = check_ca(ctx)
    check = by_name(checks, "ca rootCA-key.pem")
    assert check.state == "fail"
    assert "0644" in check.found
    assert check.fix == f"chmod 600 {key}"
    assert Report(caroot, tuple(checks)).exit_code == 1
    assert key.stat().st_mode & 0o777 == 0o644  # read-only: the mode is the user's to change


def test_a_sound_ca_passes(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    LocalCA.load_or_create(caroot)
    ctx = context(tmp_path, caroot)
    checks = check_ca(ctx)
    assert {c.state for c in checks} == {"ok"}, checks
    assert ctx.ca is not None
    assert Report(caroot, tuple(checks)).exit_code == 0


def test_a_folder_others_can_enter_is_a_warning(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    LocalCA.load_or_create(caroot)
    caroot.chmod(0o755)  # what mkcert makes
    checks = check_ca(context(tmp_path, caroot))
    folder = by_name(checks, "ca folder")
    assert folder.state == "warn"
    assert folder.fix == f"chmod 700 {caroot}"
    assert Report(caroot, tuple(checks)).exit_code == 0


def test_a_root_expiring_within_90_days_is_a_warning_and_exit_stays_0(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    write_ca(caroot, NOW - dt.timedelta(days=3000), NOW + dt.timedelta(days=60, hours=1))
    ctx = context(tmp_path, caroot)
    checks = check_ca(ctx)
    root = by_name(checks, "ca root")
    assert root.state == "warn"
    assert "expires in 60 days" in root.found
    assert root.fix is not None
    assert "devtls install" in root.fix
    assert ctx.ca is not None  # it still signs: the other checks run
    assert Report(caroot, tuple(checks)).exit_code == 0


def test_an_expired_root_is_a_failure(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    write_ca(caroot, NOW - dt.timedelta(days=3000), NOW - dt.timedelta(days=2))
    ctx = context(tmp_path, caroot)
    checks = check_ca(ctx)
    root = by_name(checks, "ca root")
    assert root.state == "fail"
    assert "expired on" in root.found
    assert ctx.ca is None
    assert "cannot sign" in ctx.ca_missing
    assert Report(caroot, tuple(checks)).exit_code == 1


def test_half_a_ca_names_the_missing_file(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    LocalCA.load_or_create(caroot)
    (caroot / "rootCA-key.pem").unlink()
    checks = check_ca(context(tmp_path, caroot))
    assert checks[-1].state == "fail"
    assert "not rootCA-key.pem" in checks[-1].found
