"""doctor on the system store (by outcome: truststore and openssl) and on Java's cacerts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtls.ca import LocalCA
from devtls.doctor import Context
from devtls.doctor.stores import check_java, check_system
from devtls.truststores.java import find_java
from devtls.truststores.system_linux import LinuxSystemStore
from tests.conftest import IN_CI, require_tool
from tests.doctorenv import context


def ready(tmp_path: Path, **extra: str) -> Context:
    caroot = tmp_path / "caroot"
    ca, _ = LocalCA.load_or_create(caroot)
    ctx = context(tmp_path, caroot, **extra)
    ctx.ca = ca
    return ctx


@pytest.mark.skipif(sys.platform != "linux", reason="the Linux system store")
def test_a_root_the_system_does_not_trust_fails_with_install(tmp_path: Path) -> None:
    require_tool("openssl")
    ctx = ready(tmp_path)
    check = check_system(ctx, LinuxSystemStore())
    assert check.state == "fail"
    assert "the OS verifier rejects a fresh leaf" in check.found
    assert "openssl rejects it" in check.found
    assert check.fix == "devtls install --store system"
    assert ctx.system_trusted is False


@pytest.mark.skipif(sys.platform != "linux", reason="the Linux system store")
def test_an_anchor_the_update_command_did_not_take_in_names_that_command(
    tmp_path: Path,
) -> None:
    ctx = ready(tmp_path)
    layout = tmp_path / "root"
    anchors = layout / "usr/local/share/ca-certificates"
    anchors.mkdir(parents=True)
    store = LinuxSystemStore(root=layout)
    assert ctx.ca is not None
    store.anchor(ctx.ca).write_bytes(ctx.ca.cert_pem())
    check = check_system(ctx, store)
    assert check.state == "fail"
    assert str(store.anchor(ctx.ca)) in check.found
    assert check.fix is not None
    assert check.fix.endswith("update-ca-certificates")


def jdk_copy(tmp_path: Path) -> Path:
    """A JAVA_HOME of the test's own: the real keytool, a copy of the real cacerts."""
    keytool, cacerts = find_java("")
    if keytool is None or cacerts is None:
        message = "no JDK with a cacerts file (scripts/test.sh installs openjdk-17-jre-headless)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    (home / "lib/security").mkdir(parents=True)
    (home / "bin/keytool").symlink_to(Path(keytool).resolve())
    shutil.copyfile(cacerts, home / "lib/security/cacerts")
    return home


def test_java_without_then_with_the_root(tmp_path: Path) -> None:
    require_tool("keytool")
    home = jdk_copy(tmp_path)
    ctx = ready(tmp_path, JAVA_HOME=str(home))
    missing = check_java(ctx)
    assert missing.state == "fail"
    assert missing.fix == "devtls install --store java"
    subprocess.run(
        [sys.executable, "-m", "devtls", "install", "--store", "java"],
        env={**os.environ, "JAVA_HOME": str(home), "CAROOT": str(ctx.caroot)},
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert check_java(ctx).state == "ok"


def test_no_java_is_skipped(tmp_path: Path) -> None:
    ctx = ready(tmp_path, JAVA_HOME=str(tmp_path / "no-jdk"))
    check = check_java(ctx)
    assert check.state == "skip"
