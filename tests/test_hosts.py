"""`devtls hosts sync` and `devtls hosts clean` on a real file, with a real router."""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devtls import _files, hosts
from devtls.cli import app
from devtls.hostsfile import BEGIN_MARKER, END_MARKER
from tests.conftest import IN_CI, require_tool
from tests.routerprocess import devtls, free_port, router

NOBODY = 65534
# A file as a user keeps it: a comment in Latin-1 (not UTF-8), CRLF, no final newline.
ORIGINAL = b"127.0.0.1 localhost\r\n# caf\xe9 box\r\n10.0.0.9 nas.lan"


def block(*names: str, newline: str = "\n") -> str:
    entries = [f"127.0.0.1 {name}" for name in names]
    return newline.join([BEGIN_MARKER, *entries, END_MARKER])


@pytest.fixture
def hosts_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hosts"
    path.write_bytes(ORIGINAL)
    monkeypatch.setenv(hosts.HOSTS_FILE_ENV, str(path))
    return path


def test_sync_names_the_route_hosts_follows_live_routes_and_clean_undoes_it(
    hosts_file: Path, session_ca_dir: Path, tmp_path: Path
) -> None:
    hosts_file.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(hosts_file, NOBODY, NOBODY)
    port = str(free_port())
    routes = (f"a.localhost={port}", f"api.test/v1={port}", f"*.w.localhost={port}", f"*={port}")
    args = [arg for route in routes for arg in ("--route", route)]
    with router(*args, caroot=session_ca_dir, cwd=tmp_path, route_lines=len(routes)):
        synced = devtls("hosts", "sync")
        assert synced.returncode == 0, synced.stderr
        assert synced.stdout == f"wrote {hosts_file}: a.localhost, api.test on 127.0.0.1\n"
        assert synced.stderr == (
            "devtls: note: left out *.w.localhost (a hosts file cannot hold a wildcard)\n"
        )
        first = ORIGINAL + b"\r\n" + block("a.localhost", "api.test", newline="\r\n").encode()
        assert hosts_file.read_bytes() == first
        assert oct(hosts_file.stat().st_mode & 0o777) == "0o640"
        if os.geteuid() == 0:
            assert (hosts_file.stat().st_uid, hosts_file.stat().st_gid) == (NOBODY, NOBODY)
        assert not [p for p in hosts_file.parent.iterdir() if p.name != "hosts"]
        again = devtls("hosts", "sync")
        assert again.stdout.endswith("already names a.localhost, api.test: nothing to do\n")
        assert hosts_file.read_bytes() == first
        # A route added while the router runs is in the next sync, in the same block.
        assert devtls("route", "add", "b.localhost", port).returncode == 0
        assert devtls("hosts", "sync").returncode == 0
        second = block("a.localhost", "api.test", "b.localhost", newline="\r\n").encode()
        assert hosts_file.read_bytes() == ORIGINAL + b"\r\n" + second
        dry = devtls("hosts", "clean", "--dry-run")
        assert dry.stdout.splitlines()[0] == f"would change {hosts_file}:"
        assert f"-{END_MARKER}" in dry.stdout.splitlines()
        assert hosts_file.read_bytes() == ORIGINAL + b"\r\n" + second
    cleaned = devtls("hosts", "clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert cleaned.stdout == f"removed the devtls block (3 names) from {hosts_file}\n"
    assert hosts_file.read_bytes() == ORIGINAL
    assert oct(hosts_file.stat().st_mode & 0o777) == "0o640"
    assert devtls("hosts", "clean").stdout == f"{hosts_file} has no devtls block: nothing to do\n"


def test_without_a_router_sync_says_so_in_one_line(hosts_file: Path) -> None:
    result = CliRunner().invoke(app, ["hosts", "sync"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("devtls: error: no devtls router is running")
    assert lines[0].endswith(
        "start one with 'devtls serve', or name the hosts: devtls hosts sync app.localhost"
    )
    assert hosts_file.read_bytes() == ORIGINAL


def test_named_hosts_need_no_router_and_bad_names_are_usage_errors(hosts_file: Path) -> None:
    runner = CliRunner()
    dry = runner.invoke(app, ["hosts", "sync", "--dry-run", "X.Localhost", "10.1.1.1"])
    assert dry.exit_code == 0, dry.output
    assert "+127.0.0.1 x.localhost" in dry.output.splitlines()
    assert "devtls: note: left out 10.1.1.1 (an IP address needs no entry)" in dry.output
    assert " # caf\ufffd box" in dry.output.splitlines()
    assert hosts_file.read_bytes() == ORIGINAL
    result = runner.invoke(app, ["hosts", "sync", "x.localhost"])
    assert result.exit_code == 0, result.output
    assert hosts_file.read_bytes().endswith(b"\r\n127.0.0.1 x.localhost\r\n# END devtls")
    for bad in ("me@x.test", "bad..name"):
        refused = runner.invoke(app, ["hosts", "sync", bad])
        assert refused.exit_code == 2
        assert len(refused.output.splitlines()) == 1
    # A block that cannot be told apart is refused, and the file stays as it is.
    doubled = hosts_file.read_bytes() + b"\r\n" + block("y.localhost").encode()
    hosts_file.write_bytes(doubled)
    for args in (["hosts", "sync", "x.localhost"], ["hosts", "clean"]):
        refused = runner.invoke(app, args)
        assert refused.exit_code == 1
        assert refused.output.startswith(f"devtls: error: {hosts_file} holds 2 devtls blocks")
        assert hosts_file.read_bytes() == doubled


def test_a_missing_file_is_created_and_a_link_stays_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "new-hosts"
    monkeypatch.setenv(hosts.HOSTS_FILE_ENV, str(missing))
    assert hosts.clean().changed is False
    assert not missing.exists()
    hosts.sync(("a.localhost",))
    assert missing.read_text() == block("a.localhost") + "\n"
    assert oct(missing.stat().st_mode & 0o777) == "0o644"
    link = tmp_path / "link"
    link.symlink_to(missing)
    monkeypatch.setenv(hosts.HOSTS_FILE_ENV, str(link))
    hosts.clean()
    assert link.is_symlink()
    assert missing.read_text() == ""


def test_the_hosts_file_of_each_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hosts.HOSTS_FILE_ENV, raising=False)
    assert hosts.hosts_file_path() == Path("/etc/hosts")
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("SYSTEMROOT", "D:\\Win")
    assert hosts.hosts_file_path() == Path("D:\\Win", "System32", "drivers", "etc", "hosts")
    monkeypatch.setenv(hosts.HOSTS_FILE_ENV, "/x/hosts")
    assert hosts.hosts_file_path() == Path("/x/hosts")


def test_the_command_to_rerun_is_this_devtls_by_absolute_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "bin" / "devtls"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "hosts", "sync"])
    monkeypatch.delenv(hosts.HOSTS_FILE_ENV, raising=False)
    hint = hosts._admin_hint(("hosts", "sync", "a.localhost"))
    assert hint == f"run it again as root: sudo {script} hosts sync a.localhost"
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert hosts._devtls_command() == [sys.executable, "-m", "devtls"]


@pytest.fixture
def nobody_cannot_write(session_ca_dir: Path) -> Iterator[Path]:
    """A hosts file user 65534 can read but not replace (pytest's tmp dirs are root's only)."""
    folder = Path(tempfile.mkdtemp(prefix="devtls-hosts-"))
    try:
        folder.chmod(0o755)
        path = folder / "hosts"
        path.write_bytes(ORIGINAL)
        path.chmod(0o644)
        yield path
    finally:
        folder.chmod(0o755)
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


def test_without_the_privilege_it_names_the_command_to_run_as_root(
    nobody_cannot_write: Path,
) -> None:
    path = nobody_cannot_write
    if os.geteuid() == 0:
        # The child drops its privileges once Python and devtls are loaded (the interpreter
        # may live where user 65534 cannot read), then runs the command as a user does.
        code = (
            "import os, sys, difflib, shlex, shutil, subprocess, devtls.cli, devtls.hosts;"
            f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY});"
            "sys.argv[0] = '-c'; devtls.cli.main()"
        )
    else:
        path.parent.chmod(0o555)
        code = "import sys, devtls.cli; sys.argv[0] = '-c'; devtls.cli.main()"
    env = {**os.environ, hosts.HOSTS_FILE_ENV: str(path), "PYTHONDONTWRITEBYTECODE": "1"}
    for args, rerun in (
        (["sync", "b.localhost", "a.localhost"], "hosts sync a.localhost b.localhost"),
        (["clean"], "hosts clean"),
    ):
        if args == ["clean"]:
            path.write_bytes(ORIGINAL + b"\r\n" + block("a.localhost", newline="\r\n").encode())
        before = path.read_bytes()
        result = subprocess.run(
            [sys.executable, "-c", code, "hosts", *args],
            capture_output=True, text=True, timeout=30, check=False, env=env,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        command = f"sudo env {hosts.HOSTS_FILE_ENV}={path} {sys.executable} -m devtls {rerun}"
        assert result.stderr == (
            f"devtls: error: cannot write {path}: permission denied; "
            f"run it again as root: {command}\n"
        )
        assert path.read_bytes() == before
        assert [p.name for p in path.parent.iterdir()] == ["hosts"]
        if os.geteuid() == 0:
            # What it says to run does the job.
            done = subprocess.run(
                shlex.split(command)[1:], capture_output=True, text=True, timeout=30, check=False
            )
            assert done.returncode == 0, done.stderr
            expected = (
                ORIGINAL + b"\r\n" + block("a.localhost", "b.localhost", newline="\r\n").encode()
            )
            assert path.read_bytes() == (expected if args[0] == "sync" else ORIGINAL)


def test_a_bind_mounted_file_is_rewritten_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hosts"
    path.write_bytes(b"old\n")
    inode = path.stat().st_ino

    def busy(source: object, target: object) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(_files.os, "replace", busy)
    _files.replace_keeping_metadata(path, b"new")
    assert path.read_bytes() == b"new"
    assert path.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["hosts"]


def test_the_selinux_label_is_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(os, "getxattr"):
        pytest.skip("no extended attributes on this platform")
    path = tmp_path / "hosts"
    path.write_bytes(b"old\n")
    label = b"system_u:object_r:net_conf_t:s0\x00"
    labelled: list[tuple[str, str, bytes]] = []
    monkeypatch.setattr(_files.os, "getxattr", lambda p, name: label)
    monkeypatch.setattr(
        _files.os, "setxattr", lambda p, name, value: labelled.append((str(p), name, value))
    )
    _files.replace_keeping_metadata(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert len(labelled) == 1
    assert labelled[0][1:] == ("security.selinux", label)
    assert Path(labelled[0][0]).parent == tmp_path


def test_after_sync_glibc_and_python_resolve_the_name_from_the_real_etc_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only as root in CI: /etc/hosts is changed, and restored whatever happens."""
    if not (IN_CI and os.geteuid() == 0 and sys.platform == "linux"):
        pytest.skip("changes the real /etc/hosts: only as root with CI=true on Linux")
    getent = require_tool("getent")
    monkeypatch.delenv(hosts.HOSTS_FILE_ENV, raising=False)
    etc_hosts = Path("/etc/hosts")
    saved = etc_hosts.read_bytes()
    digest = hashlib.sha256(saved).hexdigest()
    name = "devtls-hosts-check.localhost"
    try:
        result = CliRunner().invoke(app, ["hosts", "sync", name])
        assert result.exit_code == 0, result.output
        found = subprocess.run([getent, "ahosts", name], capture_output=True, text=True, timeout=10)
        assert found.returncode == 0, found.stderr
        assert {line.split()[0] for line in found.stdout.splitlines()} >= {"127.0.0.1"}
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 443, proto=socket.IPPROTO_TCP)}
        assert "127.0.0.1" in addresses
        cleaned = CliRunner().invoke(app, ["hosts", "clean"])
        assert cleaned.exit_code == 0, cleaned.output
        assert hashlib.sha256(etc_hosts.read_bytes()).hexdigest() == digest
    finally:
        if etc_hosts.read_bytes() != saved:
            _files._rewrite_in_place(etc_hosts, saved)
    assert etc_hosts.read_bytes() == saved
