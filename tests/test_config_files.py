"""Files that devtls.toml names, and devtls.toml itself, when they are not what they seem: a
FIFO, a device, a folder, a file of a gigabyte. Each is one ConfigError, read boundedly.

Each case runs in a child process with its address space limited, so that reading without a
bound fails the test instead of filling this machine's memory, and with a timeout, so that
blocking on a FIFO fails it instead of hanging the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devtls.config import load_toml
from devtls.errors import ConfigError
from tests.doctorenv import base_environ
from tests.oddfiles import odd_paths
from tests.test_doctor_cli import devtls, folders, snapshot

MEMORY_LIMIT = 768 * 1024 * 1024


def limited(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child Python with at most MEMORY_LIMIT of address space."""
    prelude = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


# What the one-line error must say of each odd path.
ODD_WORDS = {"fifo": "a FIFO", "device": "a device", "folder": "a directory", "huge": "too large"}


def odd_files(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Each odd target: (its path, the words its error must hold)."""
    paths = odd_paths(tmp_path / "odd")
    return {kind: (paths[kind], words) for kind, words in ODD_WORDS.items()}


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "huge"])
def test_an_acme_ca_root_that_is_no_pem_file_is_one_error(tmp_path: Path, kind: str) -> None:
    path, words = odd_files(tmp_path)[kind]
    result = limited(
        f"""
        from pathlib import Path
        from devtls.config import check_ca_root_file
        from devtls.errors import ConfigError
        try:
            check_ca_root_file(Path({path!r}))
        except ConfigError as exc:
            print(exc.message)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert words in result.stdout, result.stdout
    assert len(result.stdout.splitlines()) == 1


def test_a_huge_devtls_toml_is_refused_unread(tmp_path: Path) -> None:
    with (tmp_path / "devtls.toml").open("wb") as handle:
        handle.truncate(1 << 30)
    result = limited(
        """
        from pathlib import Path
        from devtls.config import load_toml
        from devtls.errors import ConfigError
        try:
            load_toml(Path("devtls.toml"))
        except ConfigError as exc:
            print(exc.message)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "too large" in result.stdout, result.stdout


def test_doctor_reports_a_devtls_toml_whose_acme_root_is_a_fifo(tmp_path: Path) -> None:
    home, cwd, caroot = folders(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (cwd / "devtls.toml").write_text(
        'routes = ["app.example.com=3000"]\n'
        f"[acme]\nenabled = true\nagree_tos = true\nca_root = {str(fifo)!r}\n"
    )
    before = snapshot(home, cwd)
    result = devtls("doctor", env=base_environ(home, caroot), cwd=cwd)  # times out if blocked
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if "devtls.toml" in line)
    assert line.startswith("fail  devtls.toml: "), line
    assert "a FIFO" in line, line
    assert snapshot(home, cwd) == before


def test_a_devtls_toml_that_is_not_utf8_is_one_error(tmp_path: Path) -> None:
    # TOML is UTF-8 (toml.io, "Spec"): a file in another encoding is the user's to convert.
    path = tmp_path / "devtls.toml"
    path.write_bytes(b'listen = "127.0.0.1:8443"\nname = ["caf\xe9.test"]\n')
    with pytest.raises(ConfigError) as caught:
        load_toml(path)
    assert "UTF-8" in caught.value.message
    assert str(path) in caught.value.message


@pytest.mark.parametrize(
    "nested", ["[" * 50_000 + "]" * 50_000, "{a=" * 50_000 + "1" + "}" * 50_000]
)
def test_a_devtls_toml_nested_too_deeply_is_one_error(tmp_path: Path, nested: str) -> None:
    path = tmp_path / "devtls.toml"
    path.write_text(f"routes = {nested}\n")
    with pytest.raises(ConfigError) as caught:
        load_toml(path)
    assert str(path) in caught.value.message
