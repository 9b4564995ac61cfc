"""Port 443 as a normal user on Linux: one line naming what allows it."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtls.config import Address
from devtls.proxy.server import listen_error

NOBODY = 65534
CHOICES = (
    "run devtls as root",
    "sudo sysctl net.ipv4.ip_unprivileged_port_start=443",
    "sudo setcap cap_net_bind_service=+ep ",
)


DENIED = OSError(errno.EACCES, "Permission denied")


def test_permission_denied_on_linux_names_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    line = str(listen_error(Address("127.0.0.1", 443), DENIED))
    assert line.startswith("cannot listen on 127.0.0.1:443: permission denied; ")
    assert "\n" not in line
    for choice in CHOICES:
        assert choice in line
    assert os.path.realpath(sys.executable) in line
    # Above 1024 it is not the port's privilege that is missing.
    line = str(listen_error(Address("127.0.0.1", 8443), DENIED))
    assert "sysctl" not in line
    assert "another port" in line


@pytest.mark.parametrize(
    ("platform", "words"), [("darwin", "macOS before 10.14"), ("win32", "excludedportrange")]
)
def test_permission_denied_elsewhere_says_what_it_means_there(
    monkeypatch: pytest.MonkeyPatch, platform: str, words: str
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    line = str(listen_error(Address("127.0.0.1", 443), DENIED))
    assert words in line
    assert "sysctl" not in line


def unprivileged_port_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())


@pytest.fixture
def ca_for_nobody(session_ca_dir: Path) -> Iterator[Path]:
    """A copy of the test CA that user 65534 can read (pytest's tmp dirs are root's only)."""
    folder = Path(tempfile.mkdtemp(prefix="devtls-nobody-"))
    try:
        for name in ("rootCA.pem", "rootCA-key.pem"):
            shutil.copy(session_ca_dir / name, folder / name)
            os.chown(folder / name, NOBODY, NOBODY)
        os.chown(folder, NOBODY, NOBODY)
        folder.chmod(0o700)
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.mark.skipif(sys.platform != "linux", reason="the choices are Linux's")
def test_a_normal_user_asking_for_443_gets_one_line_exit_1(
    ca_for_nobody: Path, session_ca_dir: Path
) -> None:
    if unprivileged_port_start() <= 443:
        pytest.skip("this machine lets every user listen on 443 (ip_unprivileged_port_start)")
    # As root, the child drops its privileges once Python and devtls are loaded (the
    # interpreter may live where user 65534 cannot read), then runs the command as a user does.
    drop = (
        "import os, devtls.cli, devtls.proxy.server, devtls.proxy.workers;"
        f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY});"
        if os.geteuid() == 0
        else "import devtls.cli;"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            drop + "devtls.cli.main()",
            "serve",
            "3000",
            "--listen",
            "127.0.0.1:443",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={
            **os.environ,
            "CAROOT": str(ca_for_nobody if os.geteuid() == 0 else session_ca_dir),
            "PYTHONDONTWRITEBYTECODE": "1",
        },
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "cannot listen on 127.0.0.1:443: permission denied" in result.stderr
    for choice in CHOICES:
        assert choice in result.stderr
