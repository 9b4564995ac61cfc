"""``devtls doctor [--json]`` as a user runs it: exit 0 when all is well, 1 with a fix per
problem, read-only, and the JSON shape."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from devtls.ca import LocalCA
from devtls.doctor.model import STATES
from devtls.doctor.stores import check_other, check_wsl
from devtls.truststores.base import Availability
from tests.doctorenv import base_environ, context, firefox_profile


def devtls(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtls", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
        check=False,
    )


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folders`` with its size and modification time."""
    seen: dict[str, tuple[int, int]] = {}
    for folder in folders:
        if folder.exists():
            for path in [folder, *folder.rglob("*")]:
                info = path.lstat()
                seen[str(path)] = (info.st_size, info.st_mtime_ns)
    return seen


def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    home, cwd, caroot = tmp_path / "home", tmp_path / "cwd", tmp_path / "caroot"
    home.mkdir()
    cwd.mkdir()
    return home, cwd, caroot


def test_no_ca_exits_1_says_devtls_install_and_writes_nothing(tmp_path: Path) -> None:
    home, cwd, caroot = folders(tmp_path)
    env = base_environ(home, caroot)
    before = snapshot(home, cwd)
    result = devtls("doctor", env=env, cwd=cwd)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"fail  ca: no CA folder {caroot} (CAROOT)"
    assert lines[1] == "      fix: devtls install"
    assert not caroot.exists()
    assert snapshot(home, cwd) == before


def test_json_is_one_object_with_a_list_of_checks(tmp_path: Path) -> None:
    home, cwd, caroot = folders(tmp_path)
    result = devtls("doctor", "--json", env=base_environ(home, caroot), cwd=cwd)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert set(report) == {"caroot", "ok", "counts", "checks"}
    assert report["caroot"] == str(caroot)
    assert report["ok"] is False
    assert set(report["counts"]) == set(STATES)
    assert report["checks"], report
    for check in report["checks"]:
        assert set(check) == {"name", "state", "found", "fix"}
        assert check["state"] in STATES
        assert isinstance(check["name"], str)
        assert isinstance(check["found"], str)
        assert check["fix"] is None or isinstance(check["fix"], str)
    assert report["counts"]["fail"] == sum(c["state"] == "fail" for c in report["checks"])
    first = report["checks"][0]
    assert (first["state"], first["fix"]) == ("fail", "devtls install")


def test_all_well_after_install_and_devtls_env_exits_0(tmp_path: Path) -> None:
    home, cwd, caroot = folders(tmp_path)
    firefox_profile(home / ".mozilla/firefox")
    # The system store and Java are the machine's, not the test's: only NSS is looked at.
    env = base_environ(home, caroot, TRUST_STORES="nss")
    installed = devtls("install", "--store", "nss", env=env, cwd=cwd)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    printed = devtls("env", "--shell", "bash", env=env, cwd=cwd)
    assert printed.returncode == 0, printed.stderr
    for line in printed.stdout.splitlines():
        name, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
        env[name] = value
    # What doctor tells a Debian user to add: curl and GnuTLS wget do not read SSL_CERT_FILE.
    env["CURL_CA_BUNDLE"] = env["SSL_CERT_FILE"]
    (home / ".wgetrc").write_text(f"ca_certificate = {env['SSL_CERT_FILE']}\n")

    before = snapshot(home, cwd, caroot)
    result = devtls("doctor", env=env, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fail " not in result.stdout
    assert "ok    profile Firefox ~/.mozilla/firefox/test.default" in result.stdout
    assert result.stdout.splitlines()[-1] == "all well"
    assert snapshot(home, cwd, caroot) == before

    report = json.loads(devtls("doctor", "--json", env=env, cwd=cwd).stdout)
    assert report["ok"] is True
    assert report["counts"]["fail"] == 0
    assert report["counts"]["warn"] == 0


def test_an_unknown_store_in_trust_stores_is_a_failure(tmp_path: Path) -> None:
    home, cwd, caroot = folders(tmp_path)
    LocalCA.load_or_create(caroot)
    env = base_environ(home, caroot, TRUST_STORES="nss,nope")
    report = json.loads(devtls("doctor", "--json", env=env, cwd=cwd).stdout)
    stores = [c for c in report["checks"] if c["name"] == "stores"]
    assert stores
    assert stores[0]["state"] == "fail"
    assert stores[0]["fix"] == "unset TRUST_STORES"


def test_under_wsl_the_windows_store_is_named(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    ctx = context(tmp_path, caroot)
    ctx.proc_version.write_text("Linux version 5.15.153.1-microsoft-standard-WSL2\n")
    (check,) = check_wsl(ctx, [])
    assert check.state == "warn"
    assert "certutil.exe -user -addstore Root" in (check.fix or "")
    ctx.proc_version.write_text("Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org)\n")
    assert check_wsl(ctx, []) == []


class WindowsStoreSeenFromWSL:
    """A store doctor has no verifier of its own for, answering as a store does."""

    name = "windows"

    def __init__(self, installed: bool) -> None:
        self.installed = installed

    def available(self) -> Availability:
        return Availability(True, "CurrentUser Root, through certutil.exe")

    def is_installed(self, ca: LocalCA) -> bool:
        return self.installed


def test_a_store_of_its_own_for_windows_is_reported_as_it_says(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    ctx = context(tmp_path, caroot)
    ctx.ca, _ = LocalCA.load_or_create(caroot)
    ctx.proc_version.write_text("Linux version 5.15.153.1-microsoft-standard-WSL2\n")
    missing = WindowsStoreSeenFromWSL(installed=False)
    assert check_wsl(ctx, [missing]) == []  # the store speaks for itself
    check = check_other(ctx, missing)
    assert (check.name, check.state) == ("store windows", "fail")
    assert check.fix == "devtls install --store windows"
    assert check_other(ctx, WindowsStoreSeenFromWSL(installed=True)).state == "ok"
