"""NSS (a fresh database in a temporary HOME, and Chromium reading it) and Java (a copy of a JDK)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devtls.ca import LocalCA
from devtls.truststores.base import entry_name
from devtls.truststores.java import find_java
from devtls.truststores.nss import NSSStore
from tests.conftest import require_tool, run
from tests.proxy.test_browser import CHROMIUM_FLAGS
from tests.truststores.conftest import TLSServer, devtls


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def new_nss_db(folder: Path) -> None:
    certutil = require_tool("certutil")
    folder.mkdir(parents=True)
    run(certutil, "-N", "-d", f"sql:{folder}", "--empty-password")


def nss_listing(folder: Path) -> str:
    return run(require_tool("certutil"), "-L", "-d", f"sql:{folder}").stdout


def test_nss_round_trip_in_chromium_and_firefox_databases(fresh_ca: LocalCA, home: Path) -> None:
    chromium_db = home / ".pki" / "nssdb"
    new_nss_db(chromium_db)
    firefox = home / ".mozilla" / "firefox"
    new_nss_db(firefox / "abcd.default-release")
    (firefox / "profiles.ini").write_text(
        "[Profile0]\nName=default-release\nIsRelative=1\nPath=abcd.default-release\n"
    )
    env = {"HOME": str(home), "CAROOT": str(fresh_ca.path)}
    nickname = NSSStore(home=home).nickname(fresh_ca)

    dry = devtls("install", "--store", "nss", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("certutil -A") == 2
    assert nickname not in nss_listing(chromium_db)

    result = devtls("install", "--store", "nss", env=env)
    assert result.returncode == 0, result.stderr
    assert "nss: installed" in result.stdout
    for db in (chromium_db, firefox / "abcd.default-release"):
        listing = nss_listing(db)
        assert nickname in listing
        assert "C,," in listing.split(nickname)[1].splitlines()[0]
    again = devtls("install", "--store", "nss", env=env)
    assert "nss: already trusted" in again.stdout
    assert nss_listing(chromium_db).count(nickname) == 1

    removed = devtls("uninstall", "--store", "nss", env=env)
    assert removed.returncode == 0, removed.stderr
    for db in (chromium_db, firefox / "abcd.default-release"):
        assert nickname not in nss_listing(db)


def test_missing_certutil_is_reported_and_other_stores_go_on(
    fresh_ca: LocalCA, home: Path, tmp_path: Path
) -> None:
    # A PATH without certutil; keytool is reached through JAVA_HOME.
    bare = tmp_path / "bin"
    bare.mkdir()
    jdk = fake_jdk(tmp_path)
    env = {"HOME": str(home), "PATH": str(bare), "JAVA_HOME": str(jdk)}
    result = devtls("install", "--store", "nss", "--store", "java", env=env)
    # Asked for explicitly, the missing NSS is an error; Java was installed all the same.
    assert result.returncode == 1
    assert (
        "nss: failed (certutil is missing; install it: apt-get install libnss3-tools"
        in result.stderr
    )
    assert "java: installed" in result.stdout
    default = devtls("install", env={**env, "TRUST_STORES": ""})
    assert "nss: skipped (certutil is missing" in default.stdout


def fake_jdk(tmp_path: Path) -> Path:
    """A JAVA_HOME whose keytool is the real one and whose cacerts is a copy of the real one."""
    real_keytool = require_tool("keytool")
    _, cacerts = find_java(None)
    assert cacerts is not None
    jdk = tmp_path / "jdk"
    (jdk / "bin").mkdir(parents=True)
    (jdk / "lib" / "security").mkdir(parents=True)
    (jdk / "bin" / "keytool").symlink_to(Path(real_keytool).resolve())
    shutil.copyfile(cacerts.resolve(), jdk / "lib" / "security" / "cacerts")
    return jdk


def java_aliases(cacerts: Path) -> list[str]:
    listing = run(
        require_tool("keytool"), "-list", "-keystore", cacerts, "-storepass", "changeit"
    ).stdout
    return sorted(line.split(",")[0] for line in listing.splitlines() if "trustedCertEntry" in line)


def test_java_round_trip_on_a_copy_of_the_jdk(
    fresh_ca: LocalCA, tmp_path: Path, home: Path
) -> None:
    require_tool("keytool")
    jdk = fake_jdk(tmp_path)
    cacerts = jdk / "lib" / "security" / "cacerts"
    before = java_aliases(cacerts)
    env = {"JAVA_HOME": str(jdk), "HOME": str(home)}
    result = devtls("install", "--store", "java", env=env)
    assert result.returncode == 0, result.stderr
    assert "java: installed" in result.stdout
    assert entry_name(fresh_ca) in java_aliases(cacerts)
    assert "java: already trusted" in devtls("install", "--store", "java", env=env).stdout
    removed = devtls("uninstall", "--store", "java", env=env)
    assert removed.returncode == 0, removed.stderr
    assert java_aliases(cacerts) == before


def test_jdk8_layout_is_found(tmp_path: Path) -> None:
    jdk8 = tmp_path / "jdk8"
    (jdk8 / "bin").mkdir(parents=True)
    (jdk8 / "bin" / "keytool").touch()
    (jdk8 / "jre" / "lib" / "security").mkdir(parents=True)
    (jdk8 / "jre" / "lib" / "security" / "cacerts").touch()
    assert find_java(str(jdk8)) == (
        jdk8 / "bin" / "keytool",
        jdk8 / "jre" / "lib" / "security" / "cacerts",
    )


def chromium_loads(url: str, home: Path) -> bool:
    chromium = require_tool("chromium")
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={home / 'profile'}", "--dump-dom", url],
        capture_output=True, text=True, timeout=90, check=False,
        env={**os.environ, "HOME": str(home)},
    )  # fmt: skip
    return "trusted" in result.stdout


def test_chromium_trusts_after_install_store_nss(
    fresh_ca: LocalCA, tls_server: TLSServer, tmp_path: Path
) -> None:
    """A real browser: Chromium with a temporary HOME, before and after `install --store nss`."""
    url = f"https://localhost:{tls_server.port}/"
    before_home = tmp_path / "before"
    new_nss_db(before_home / ".pki" / "nssdb")
    assert not chromium_loads(url, before_home)  # negative control: an interstitial
    after_home = tmp_path / "after"
    new_nss_db(after_home / ".pki" / "nssdb")
    result = devtls("install", "--store", "nss", env={"HOME": str(after_home)})
    assert result.returncode == 0, result.stderr
    assert chromium_loads(url, after_home)
    # And after uninstall Chromium refuses the page again.
    assert devtls("uninstall", "--store", "nss", env={"HOME": str(after_home)}).returncode == 0
    assert not chromium_loads(url, after_home)


def test_chromium_with_no_database_yet_gets_one(
    fresh_ca: LocalCA, tls_server: TLSServer, tmp_path: Path
) -> None:
    """Installing before the browser's first start still works: devtls creates the database."""
    require_tool("chromium")
    home = tmp_path / "first-start"
    home.mkdir()
    result = devtls("install", "--store", "nss", env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert chromium_loads(f"https://localhost:{tls_server.port}/", home)
