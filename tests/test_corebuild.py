"""The two builds of the sans-IO core: compiled with mypyc, or the same source as pure Python.

scripts/test.sh runs the suite on each and says which it expects in DEVTLS_EXPECT_CORE, so a
compiled build that silently fell back to pure Python fails CI.
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest
from typer.testing import CliRunner

import devtls
from devtls import __version__
from devtls.cli import app
from devtls.corebuild import COMPILED, core_build, core_description, module_build
from tests.test_layering import CORE as SANS_IO

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(devtls.__file__).resolve().parent


def test_version_names_the_running_core() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    expected = {"compiled": "compiled with mypyc", "pure": "pure Python"}[core_build()]
    assert core_description() == expected
    assert result.output == f"devtls {__version__} (core: {expected})\n"


def test_the_core_is_one_build() -> None:
    """Never half compiled: every module setup.py compiles is loaded the same way."""
    builds = {name: module_build(name) for name in COMPILED}
    assert set(builds.values()) == {core_build()}, builds


def test_the_expected_core_is_loaded() -> None:
    expected = os.environ.get("DEVTLS_EXPECT_CORE")
    if expected is None:
        if os.environ.get("CI") == "true":
            pytest.fail("DEVTLS_EXPECT_CORE is not set: scripts/test.sh says which core it tests")
        pytest.skip("DEVTLS_EXPECT_CORE is not set (scripts/test.sh sets it)")
    assert expected in ("compiled", "pure")
    assert core_build() == expected, f"expected the {expected} core, {core_build()} is loaded"
    for name in COMPILED:
        module = importlib.import_module(name)
        loaded = Path(module.__file__ or "")
        source = PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")
        assert source.is_file(), f"{name}: no source next to it"  # one source, both builds
        if expected == "compiled":
            assert loaded.name.endswith(tuple(EXTENSION_SUFFIXES)), loaded
        else:
            assert loaded == source, loaded


def test_compiled_modules_are_the_ones_setup_py_compiles() -> None:
    setup_py = ROOT / "setup.py"
    if not setup_py.is_file():
        pytest.skip("not a source checkout")
    tree = ast.parse(setup_py.read_text())
    core = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "CORE"
    )
    paths = ast.literal_eval(core)
    assert tuple(p.removesuffix(".py").replace("/", ".") for p in paths) == COMPILED


def test_compiled_modules_are_sans_io() -> None:
    """mypyc compiles only the core that test_layering keeps free of asyncio and services."""
    assert {name.removeprefix("devtls.") for name in COMPILED} <= SANS_IO


def test_build_artifacts_are_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    suffix = EXTENSION_SUFFIXES[0]
    artifacts = [
        f"devtls/proxy/http1{suffix}",
        f"devtls/proxy/core__mypyc{suffix}",
        "build/devtls/proxy/__native_core.c",
        "build/devtls/proxy/http1.c",
        f"build/lib.linux-x86_64-cpython-311/devtls/proxy/http1{suffix}",
    ]
    for artifact in artifacts:
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", "--no-index", artifact], cwd=ROOT, check=False
        )
        assert ignored.returncode == 0, f"{artifact} is not git-ignored"
    tracked = subprocess.run(
        ["git", "ls-files", "*.so", "*.pyd", "build/*", "*.c"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert tracked == ""


def _build_wheel(tmp_path: Path, **env: str) -> tuple[Path, str]:
    """A wheel built from a copy of the source (never the tree's own build files)."""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT / "devtls",
        source / "devtls",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"),
    )
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(out), str(source)],
        env={**os.environ, **env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return wheel, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"CC": "/bin/false"}, "no working C compiler"),
        ({"DEVTLS_PURE": "1"}, "DEVTLS_PURE is set"),
    ],
    ids=["no-compiler", "DEVTLS_PURE"],
)
def test_the_pure_build_installs_anywhere(tmp_path: Path, env: dict[str, str], reason: str):
    """Without a C compiler, or when asked, the same source builds a pure wheel, and says so."""
    if not (ROOT / "setup.py").is_file():
        pytest.skip("not a source checkout")
    wheel, output = _build_wheel(tmp_path, **env)
    assert wheel.name.endswith("-py3-none-any.whl")
    assert f"devtls: core: pure Python ({reason}" in output
    names = zipfile.ZipFile(wheel).namelist()
    assert "devtls/proxy/http1.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c"))]
