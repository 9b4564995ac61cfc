"""`devtls ca rotate` moves trust in the real stores: the system store (Debian's, as root), an
NSS database in a temporary HOME and a copy of the JDK's cacerts, checked before and after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtls.ca import LocalCA, RootCert
from devtls.truststores.base import TrustStore
from devtls.truststores.java import JavaStore
from devtls.truststores.nss import NSSStore
from devtls.truststores.system_linux import LinuxSystemStore
from tests.conftest import require_tool, run
from tests.truststores.conftest import devtls
from tests.truststores.test_nss_java import fake_jdk, java_aliases, new_nss_db
from tests.truststores.test_system_linux import CERTS, require_debian_root


@pytest.fixture
def stores(tmp_path: Path) -> tuple[dict[str, str], list[TrustStore], Path]:
    home = tmp_path / "home"
    new_nss_db(home / ".pki" / "nssdb")
    jdk = fake_jdk(tmp_path)
    env = {"HOME": str(home), "JAVA_HOME": str(jdk), "TRUST_STORES": "system,nss,java"}
    found: list[TrustStore] = [
        LinuxSystemStore(),
        NSSStore(home=home),
        JavaStore(java_home=str(jdk)),
    ]
    return env, found, jdk / "lib" / "security" / "cacerts"


@pytest.fixture
def system_guard(fresh_ca: LocalCA) -> Iterator[list[RootCert]]:
    """Every root the test makes is taken out of the system store again, whatever happens."""
    require_debian_root()
    made: list[RootCert] = [fresh_ca]
    yield made
    store = LinuxSystemStore()
    for root in made:
        store.uninstall(root)
    # Only this test's roots are compared: other programs may change the store meanwhile.
    assert not any(store.is_installed(root) for root in made)
    assert not any(link.is_symlink() and not link.exists() for link in CERTS.iterdir())


def trusted(stores: list[TrustStore], root: RootCert) -> dict[str, bool]:
    return {store.name: store.is_installed(root) for store in stores}


def openssl_verifies(ca: LocalCA, leaf_file: Path) -> bool:
    openssl = require_tool("openssl")
    leaf_file.write_bytes(ca.issue("localhost", key_type="ecdsa").cert_pem())
    return run(openssl, "verify", "-CApath", CERTS, leaf_file, check=False).returncode == 0


def test_rotation_moves_trust_in_every_store_and_uninstall_old_takes_the_old_out(
    fresh_ca: LocalCA,
    stores: tuple[dict[str, str], list[TrustStore], Path],
    system_guard: list[RootCert],
    tmp_path: Path,
) -> None:
    env, found, cacerts = stores
    java_before = java_aliases(cacerts)
    installed = devtls("install", env=env)
    assert installed.returncode == 0, installed.stderr
    old = fresh_ca
    assert trusted(found, old) == {"system": True, "nss": True, "java": True}

    rotated = devtls("ca", "rotate", env=env)
    assert rotated.returncode == 0, rotated.stderr
    new = LocalCA.load(old.path)
    system_guard.append(new)
    for name in ("system", "nss", "java"):
        assert f"{name}: installed the new root" in rotated.stdout
    # Both trusted everywhere: leaves of the old root keep working, new ones work.
    assert trusted(found, old) == {"system": True, "nss": True, "java": True}
    assert trusted(found, new) == {"system": True, "nss": True, "java": True}
    assert openssl_verifies(old, tmp_path / "old-leaf.pem")
    assert openssl_verifies(new, tmp_path / "new-leaf.pem")

    retired = devtls("uninstall", "--old", env=env)
    assert retired.returncode == 0, retired.stderr
    assert trusted(found, old) == {"system": False, "nss": False, "java": False}
    assert trusted(found, new) == {"system": True, "nss": True, "java": True}
    assert not openssl_verifies(old, tmp_path / "old-leaf.pem")
    assert openssl_verifies(new, tmp_path / "new-leaf.pem")

    assert devtls("uninstall", env=env).returncode == 0
    assert trusted(found, new) == {"system": False, "nss": False, "java": False}
    assert java_aliases(cacerts) == java_before


def test_rotation_leaves_stores_that_did_not_trust_the_old_root_alone(
    fresh_ca: LocalCA,
    stores: tuple[dict[str, str], list[TrustStore], Path],
    system_guard: list[RootCert],
) -> None:
    env, found, cacerts = stores
    java_before = java_aliases(cacerts)
    assert devtls("install", "--store", "nss", env=env).returncode == 0
    rotated = devtls("ca", "rotate", env=env)
    assert rotated.returncode == 0, rotated.stderr
    new = LocalCA.load(fresh_ca.path)
    system_guard.append(new)
    assert "nss: installed the new root" in rotated.stdout
    assert "system: not changed (the old root was not trusted there)" in rotated.stdout
    assert "java: not changed (the old root was not trusted there)" in rotated.stdout
    assert trusted(found, new) == {"system": False, "nss": True, "java": False}
    assert java_aliases(cacerts) == java_before
