"""The Firefox enterprise policy: merging on a copy of the layout, and firefox-esr for real."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from devtls.ca import LocalCA
from devtls.errors import TrustStoreError
from devtls.truststores.firefox_policy_linux import (
    DISTRIBUTION_DIRS,
    SYSTEM_POLICIES,
    LinuxFirefoxPolicy,
)
from devtls.truststores.nss import NSSStore
from devtls.truststores.policies import RECORD_FILE, cert_file_name
from tests.conftest import IN_CI, require_tool, run, wait_for
from tests.firefoxpolicy import policy_snapshot
from tests.routerprocess import router
from tests.truststores.conftest import devtls
from tests.truststores.firefox import firefox_visit


def policy_in(root: Path) -> LinuxFirefoxPolicy:
    return LinuxFirefoxPolicy(root=root, is_admin=lambda: True)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def entry(ca: LocalCA) -> str:
    return str(SYSTEM_POLICIES / cert_file_name(ca))


def test_creates_the_etc_file_and_removes_exactly_it(fresh_ca: LocalCA, tmp_path: Path) -> None:
    root = tmp_path / "fs"
    (root / "etc").mkdir(parents=True)
    policy = policy_in(root)
    assert not policy.is_installed(fresh_ca)
    plan = policy.plan_install(fresh_ca)
    system = root / "etc/firefox/policies/policies.json"
    assert f"create {system}:" in plan
    assert any(entry(fresh_ca) in line and line.startswith("  +") for line in plan)
    assert not (root / "etc/firefox").exists()  # planning writes nothing

    policy.install(fresh_ca)
    assert read_json(system) == {"policies": {"Certificates": {"Install": [entry(fresh_ca)]}}}
    copy = root / "etc/firefox/policies" / cert_file_name(fresh_ca)
    assert copy.read_bytes() == fresh_ca.cert_pem()
    assert b"PRIVATE KEY" not in copy.read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o644
    assert policy.is_installed(fresh_ca)
    assert policy.plan_install(fresh_ca) == []

    policy.uninstall(fresh_ca)
    # Everything devtls made is gone, folders included; /etc is as it was.
    assert sorted(p.name for p in (root / "etc").iterdir()) == []


def test_merges_into_an_existing_file_and_keeps_everything_else(
    fresh_ca: LocalCA, tmp_path: Path
) -> None:
    root = tmp_path / "fs"
    folder = root / "etc/firefox/policies"
    folder.mkdir(parents=True)
    theirs = {
        "policies": {
            "DisableTelemetry": True,
            "Certificates": {
                "Install": ["/usr/local/share/corp.pem"],
                "ImportEnterpriseRoots": True,
            },
        },
        "comment": "managed by the admins",
    }
    text = json.dumps(theirs, indent=4)
    (folder / "policies.json").write_text(text)
    (folder / "policies.json").chmod(0o640)
    policy = policy_in(root)
    policy.install(fresh_ca)
    merged = read_json(folder / "policies.json")
    assert merged["comment"] == "managed by the admins"
    assert merged["policies"]["DisableTelemetry"] is True
    assert merged["policies"]["Certificates"]["Install"] == [
        "/usr/local/share/corp.pem",
        entry(fresh_ca),
    ]
    assert stat.S_IMODE((folder / "policies.json").stat().st_mode) == 0o640
    assert not (folder / RECORD_FILE).exists()  # devtls created nothing but its copy

    # A second CA (another CAROOT) sits beside the first; each leaves alone.
    other, _ = LocalCA.load_or_create(tmp_path / "other")
    policy.install(other)
    policy.uninstall(fresh_ca)
    assert read_json(folder / "policies.json")["policies"]["Certificates"]["Install"] == [
        "/usr/local/share/corp.pem",
        entry(other),
    ]
    plan = policy.plan_uninstall(other)
    assert f"change {folder / 'policies.json'}:" in plan
    policy.uninstall(other)
    assert read_json(folder / "policies.json") == theirs  # the same content (formatting may differ)
    assert sorted(p.name for p in folder.iterdir()) == ["policies.json"]


def test_distribution_file_is_used_when_there_is_no_etc_file(
    fresh_ca: LocalCA, tmp_path: Path
) -> None:
    """Creating /etc/firefox/policies/policies.json would switch the distribution file off."""
    root = tmp_path / "fs"
    distribution = root / str(DISTRIBUTION_DIRS[0]).lstrip("/")
    distribution.mkdir(parents=True)
    (distribution / "policies.json").write_text('{"policies": {"DisableAppUpdate": true}}')
    policy = policy_in(root)
    policy.install(fresh_ca)
    assert not (root / "etc/firefox/policies/policies.json").exists()
    assert read_json(distribution / "policies.json")["policies"] == {
        "DisableAppUpdate": True,
        "Certificates": {"Install": [entry(fresh_ca)]},
    }
    assert policy.is_installed(fresh_ca)
    # Once an /etc file appears, Firefox reads only that one: not installed any more.
    (root / "etc/firefox/policies/policies.json").write_text('{"policies": {}}')
    assert not policy.is_installed(fresh_ca)
    policy.uninstall(fresh_ca)
    assert read_json(distribution / "policies.json") == {"policies": {"DisableAppUpdate": True}}
    assert read_json(root / "etc/firefox/policies/policies.json") == {"policies": {}}


def test_a_broken_policy_file_is_one_error_and_nothing_is_written(
    fresh_ca: LocalCA, tmp_path: Path
) -> None:
    root = tmp_path / "fs"
    folder = root / "etc/firefox/policies"
    folder.mkdir(parents=True)
    (folder / "policies.json").write_text("{not json")
    with pytest.raises(TrustStoreError, match="not valid JSON") as caught:
        policy_in(root).install(fresh_ca)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in folder.iterdir()) == ["policies.json"]
    (folder / "policies.json").write_text('{"policies": {"Certificates": {"Install": "x"}}}')
    with pytest.raises(TrustStoreError, match="not a list"):
        policy_in(root).install(fresh_ca)


def test_without_rights_install_says_one_line_about_later_profiles(
    fresh_ca: LocalCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not root: the NSS databases as before, one note, and no policy file written."""
    from typer.testing import CliRunner

    from devtls.cli import app

    certutil = require_tool("certutil")
    home = tmp_path / "home"
    (home / ".pki" / "nssdb").mkdir(parents=True)
    run(certutil, "-N", "-d", f"sql:{home / '.pki' / 'nssdb'}", "--empty-password")
    before = policy_snapshot()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(app, ["install", "--store", "nss"])
    assert result.exit_code == 0, result.output
    assert "nss: installed" in result.output
    notes = [line for line in result.output.splitlines() if "profiles created later" in line]
    assert len(notes) == 1, result.output
    assert notes[0].startswith("devtls: note: ")
    assert "install --store nss" in notes[0]
    assert policy_snapshot() == before
    listing = run(certutil, "-L", "-d", f"sql:{home / '.pki' / 'nssdb'}").stdout
    assert NSSStore(home=home).nickname(fresh_ca) in listing


def test_notes_without_rights_follow_the_policy_state(fresh_ca: LocalCA, tmp_path: Path) -> None:
    root = tmp_path / "fs"
    (root / "etc").mkdir(parents=True)
    policy_in(root).install(fresh_ca)  # an administrator did it earlier
    store = NSSStore(
        home=tmp_path / "home", policy=LinuxFirefoxPolicy(root=root, is_admin=lambda: False)
    )
    assert store.notes(fresh_ca, "install") == []
    (note,) = store.notes(fresh_ca, "uninstall")
    assert "still installs the root" in note
    assert "uninstall --store nss" in note
    assert "new Firefox profiles get the root from" in store.policy_state(fresh_ca)


# -- firefox-esr for real ------------------------------------------------------------------


@pytest.fixture
def firefox_policy_guard(
    system_policy_files: dict[str, tuple[int, bytes | None]],
) -> dict[str, tuple[int, bytes | None]]:
    if os.geteuid() != 0:
        message = "needs root (it writes Firefox's system policy file)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return system_policy_files


@pytest.mark.root
@pytest.mark.tool("firefox-esr")
def test_firefox_profile_created_after_install_trusts_the_root(
    fresh_ca: LocalCA, firefox_policy_guard: dict, tmp_path: Path
) -> None:
    require_tool("firefox-esr")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "CAROOT": str(fresh_ca.path)}
    with router(caroot=fresh_ca.path, cwd=tmp_path, route_lines=0) as served:
        assert wait_for(lambda: served.has_line("demo page"), 30), served.lines
        url = f"https://localhost:{served.port}/"

        # Negative control: a new profile, no policy: Firefox's certificate error page.
        before = firefox_visit(url, tmp_path / "profile-before", home)
        assert before["uri"].startswith("about:certerror"), before
        assert before["title"] != "devtls: it works"

        result = devtls("install", "--store", "nss", env=env)
        assert result.returncode == 0, result.stderr
        assert "nss: installed" in result.stdout
        assert "Firefox policy" in result.stdout
        status = json.loads(devtls("status", "--json", env=env).stdout)["stores"]["nss"]
        assert "new Firefox profiles get the root from" in status["detail"]

        after = firefox_visit(url, tmp_path / "profile-after", home)
        assert after["navigation"] == "success", after
        assert after["uri"] == url
        assert after["title"] == "devtls: it works"
        assert "HTTPS works" in after["text"]

        removed = devtls("uninstall", "--store", "nss", env=env)
        assert removed.returncode == 0, removed.stderr
        assert policy_snapshot() == firefox_policy_guard  # exactly what was there before
        again = firefox_visit(url, tmp_path / "profile-again", home)
        assert again["uri"].startswith("about:certerror"), again


@pytest.mark.root
def test_dry_run_shows_the_policy_change_and_writes_nothing(
    fresh_ca: LocalCA, firefox_policy_guard: dict, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = devtls("install", "--store", "nss", "--dry-run", env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert "policies.json" in result.stdout
    added = [line.strip() for line in result.stdout.splitlines() if entry(fresh_ca) in line]
    assert f'+"{entry(fresh_ca)}"' in [line.replace(" ", "") for line in added]
    assert policy_snapshot() == firefox_policy_guard
