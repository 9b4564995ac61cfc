"""doctor on browser NSS databases: each profile by itself, snap and flatpak, no certutil."""

from __future__ import annotations

import subprocess
from pathlib import Path

from devtls.ca import LocalCA
from devtls.doctor.profiles import check_profiles
from tests.conftest import require_tool
from tests.doctorenv import by_name, context, firefox_profile


def loaded(tmp_path: Path) -> tuple[LocalCA, Path]:
    caroot = tmp_path / "caroot"
    ca, _ = LocalCA.load_or_create(caroot)
    return ca, caroot


def add_root(profile: Path, caroot: Path, nickname: str) -> None:
    subprocess.run(
        [require_tool("certutil"), "-A", "-d", f"sql:{profile}", "-t", "C,,", "-n", nickname,
         "-i", str(caroot / "rootCA.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def test_a_firefox_profile_without_the_root_is_named_with_the_fix(tmp_path: Path) -> None:
    ca, caroot = loaded(tmp_path)
    ctx = context(tmp_path, caroot)
    ctx.ca = ca
    firefox_profile(ctx.home / ".mozilla/firefox", "abcd.default-esr")
    check = by_name(check_profiles(ctx), "profile Firefox ~/.mozilla/firefox/abcd.default-esr")
    assert check.state == "fail"
    assert "not in this database" in check.found
    assert check.fix == "devtls install --store nss"


def test_snap_and_flatpak_profiles_are_each_checked_and_nss_verifies_a_leaf(
    tmp_path: Path,
) -> None:
    require_tool("vfychain")
    ca, caroot = loaded(tmp_path)
    ctx = context(tmp_path, caroot)
    ctx.ca = ca
    snap = firefox_profile(ctx.home / "snap/firefox/common/.mozilla/firefox", "s.default")
    firefox_profile(ctx.home / ".var/app/org.mozilla.firefox/.mozilla/firefox", "f.default")
    checks = check_profiles(ctx)
    snap_name = "profile Firefox (snap) ~/snap/firefox/common/.mozilla/firefox/s.default"
    flatpak_name = (
        "profile Firefox (flatpak) ~/.var/app/org.mozilla.firefox/.mozilla/firefox/f.default"
    )
    assert by_name(checks, snap_name).state == "fail"
    assert by_name(checks, flatpak_name).state == "fail"

    from devtls.truststores.nss import NSSStore

    add_root(snap, caroot, NSSStore(home=ctx.home).nickname(ca))
    checks = check_profiles(ctx)
    snap_check = by_name(checks, snap_name)
    assert snap_check.state == "ok"
    assert "NSS verifies a fresh leaf" in snap_check.found
    assert by_name(checks, flatpak_name).state == "fail"


def test_a_root_without_trust_flags_is_found_by_vfychain(tmp_path: Path) -> None:
    require_tool("vfychain")
    ca, caroot = loaded(tmp_path)
    ctx = context(tmp_path, caroot)
    ctx.ca = ca
    profile = firefox_profile(ctx.home / ".mozilla/firefox")
    from devtls.truststores.nss import NSSStore

    nickname = NSSStore(home=ctx.home).nickname(ca)
    certutil = require_tool("certutil")
    subprocess.run(
        [certutil, "-A", "-d", f"sql:{profile}", "-t", ",,", "-n", nickname,
         "-i", str(caroot / "rootCA.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    check = by_name(check_profiles(ctx), "profile Firefox ~/.mozilla/firefox/test.default")
    assert check.state == "fail"
    assert "NSS rejects a fresh leaf" in check.found
    assert check.fix == f"certutil -M -d sql:{profile} -n '{nickname}' -t C,,"


def test_certutil_missing_from_path_is_a_failure_with_the_package_to_install(
    tmp_path: Path,
) -> None:
    ca, caroot = loaded(tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    ctx = context(tmp_path, caroot)
    firefox_profile(ctx.home / ".mozilla/firefox")  # made while certutil is still on PATH
    ctx = context(tmp_path, caroot, PATH=str(empty))
    ctx.ca = ca
    checks = check_profiles(ctx)
    missing = by_name(checks, "nss certutil")
    assert missing.state == "fail"
    assert "certutil is missing" in missing.found
    assert missing.fix is not None
    assert "nss" in missing.fix
    assert by_name(checks, "profile Firefox ~/.mozilla/firefox/test.default").state == "skip"


def test_no_profile_at_all_is_skipped_or_says_install_creates_one(tmp_path: Path) -> None:
    ca, caroot = loaded(tmp_path)
    ctx = context(tmp_path, caroot)
    ctx.ca = ca
    (check,) = check_profiles(ctx)
    # With a Chromium-family browser on this machine, install would create ~/.pki/nssdb.
    assert (check.state, check.fix) in (
        ("skip", None),
        ("warn", "devtls install --store nss"),
    )


class RecordedPolicy:
    """A Firefox policy whose answer the test sets: is the root named in it, or is it broken."""

    def __init__(self, installed: bool, broken: bool = False, admin: bool = False) -> None:
        self.installed = installed
        self.broken = broken
        self.admin = admin

    def has_rights(self) -> bool:
        return self.admin

    def location(self) -> str:
        return "/etc/firefox/policies/policies.json"

    def is_installed(self, ca: object) -> bool:
        if self.broken:
            from devtls.errors import TrustStoreError

            raise TrustStoreError("/etc/firefox/policies/policies.json is not valid JSON")
        return self.installed


def test_profiles_created_later_depend_on_the_firefox_policy(tmp_path: Path) -> None:
    ca, caroot = loaded(tmp_path)
    ctx = context(tmp_path, caroot)
    ctx.ca = ca
    firefox_profile(ctx.home / ".mozilla/firefox", "abcd.default-esr")

    missing = by_name(check_profiles(ctx, RecordedPolicy(False)), "nss firefox policy")
    assert missing.state == "warn"
    assert "a profile created from now on will not trust it" in missing.found
    assert missing.fix is not None
    assert missing.fix.startswith("sudo ")
    assert missing.fix.endswith("install --store nss")
    as_admin = by_name(check_profiles(ctx, RecordedPolicy(False, admin=True)), "nss firefox policy")
    assert as_admin.fix == "devtls install --store nss"

    named = by_name(check_profiles(ctx, RecordedPolicy(True)), "nss firefox policy")
    assert named.state == "ok"
    assert "/etc/firefox/policies/policies.json" in named.found

    broken = by_name(check_profiles(ctx, RecordedPolicy(False, broken=True)), "nss firefox policy")
    assert broken.state == "fail"
    assert "not valid JSON" in broken.found


def test_no_firefox_means_no_policy_check(tmp_path: Path, monkeypatch) -> None:
    ca, caroot = loaded(tmp_path)
    ctx = context(tmp_path, caroot)
    ctx.ca = ca
    monkeypatch.setattr(ctx, "which", lambda name: None)
    names = [c.name for c in check_profiles(ctx, RecordedPolicy(False))]
    assert "nss firefox policy" not in names
