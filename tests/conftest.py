from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtls.ca import LocalCA
from tests.firefoxpolicy import kept_policy_files

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str) -> str:
    """The path of an external program; in CI its absence fails the test, locally it skips."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/test.sh installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_for(predicate: Callable[[], bool], seconds: float = 10) -> bool:
    """Whether ``predicate`` became true within ``seconds`` (polled; bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def run(
    *args: str | Path, check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    # Undecodable bytes are replaced: a TLS client prints what the server sends (an HTTP/2
    # server's SETTINGS frame, say) among its text.
    kwargs.setdefault("errors", "replace")
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [str(a) for a in args], capture_output=True, text=True, check=check, timeout=120, **kwargs
    )


@pytest.fixture(autouse=True)
def system_policy_files() -> Iterator[dict[str, tuple[int, bytes | None]]]:
    """Firefox's system policy files, put back exactly as they were after every test."""
    yield from kept_policy_files()


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A runtime folder of the test's own: a router it starts never takes the user's control
    socket. Short (a Unix socket path holds about 100 bytes), so not under tmp_path."""
    folder = Path(tempfile.mkdtemp(prefix="devtls-rt-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def caroot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CAROOT for this test, set in the environment."""
    root = tmp_path / "caroot"
    monkeypatch.setenv("CAROOT", str(root))
    return root


@pytest.fixture(scope="session")
def session_ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real RSA-3072 CA on disk for the session (generating one costs ~0.5 s)."""
    root = tmp_path_factory.mktemp("session-ca")
    LocalCA.load_or_create(root)
    return root


@pytest.fixture
def local_ca(session_ca_dir: Path) -> LocalCA:
    return LocalCA.load(session_ca_dir)


@pytest.fixture
def chdir_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    return out
