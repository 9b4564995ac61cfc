"""The pytest plugin, seen from a project that uses it: pytester sessions in subprocesses.

Each session gets the files of tests/plugin_cases/ (apps.py, and the case_*.py as test_*.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

pytest_plugins = ["pytester"]

CASES = Path(__file__).parent / "plugin_cases"
INI = """[pytest]
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


def session(pytester: pytest.Pytester, *cases: str, leftovers: bool = False) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(apps=(CASES / "apps.py").read_text())
    for case in cases:
        pytester.makepyfile(**{f"test_{case}": (CASES / f"case_{case}.py").read_text()})
    if leftovers:
        pytester.makeconftest((CASES / "leftovers.py").read_text())


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)


def test_the_fixtures_are_listed(pytester: pytest.Pytester) -> None:
    session(pytester)
    result = run(pytester, "--fixtures")
    assert result.ret == 0
    out = result.stdout.str()
    assert "fixtures defined from devtls.pytest_plugin" in out
    assert "devtls_ca [session scope] -- " in out
    for name in ("devtls_cert", "devtls_trust", "devtls_https"):
        assert f"\n{name} -- " in out


def test_every_client_library_verifies_for_real(pytester: pytest.Pytester) -> None:
    session(pytester, "clients")
    run(pytester).assert_outcomes(passed=10)


def test_negative_helpers_fail_as_each_client_reports_them(pytester: pytest.Pytester) -> None:
    session(pytester, "negative")
    # Four failures times five clients, then mutual TLS with four clients, and a server leaf
    # refused as a client certificate.
    run(pytester).assert_outcomes(passed=25)


def test_curl_and_node_verify_through_devtls_trust(pytester: pytest.Pytester) -> None:
    require_tool("curl")
    require_tool("node")
    session(pytester, "tools")
    run(pytester).assert_outcomes(passed=5)


def test_async_tests_on_pytest_asyncio_and_anyio(pytester: pytest.Pytester) -> None:
    session(pytester, "async")
    run(pytester).assert_outcomes(passed=2)


def test_two_xdist_workers_each_have_their_ca(pytester: pytest.Pytester) -> None:
    session(pytester, "clients")
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=10)
    assert "2 workers [10 items]" in result.stdout.str()


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` (but ``skip``) with its mode, and for files size and mtime."""
    found: dict[str, tuple[int, int, int]] = {}
    for path in root.rglob("*"):
        if any(path == s or s in path.parents for s in skip):
            continue
        info = path.lstat()
        changes = (0, 0) if path.is_dir() else (info.st_size, info.st_mtime_ns)
        found[str(path)] = (info.st_mode, *changes)
    return found


def test_nothing_outside_tmp_path_changes_and_nothing_is_left_running(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    session(pytester, "clients", "negative", leftovers=True)
    # pytester made its folder the session's HOME; CAROOT and the user's data dirs go there too.
    caroot = pytester.path / "caroot"
    caroot.mkdir()
    monkeypatch.setenv("CAROOT", str(caroot))
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # else __pycache__ beside the tests
    report = tmp_path_factory.mktemp("leftovers") / "report.json"
    monkeypatch.setenv("DEVTLS_LEFTOVERS", str(report))

    def outside() -> dict[str, tuple[int, int, int]]:
        # The session's tmp_path folders are in the runpytest-N folder pytester gives it;
        # pytester keeps the session's output in stdout and stderr.
        temp = (
            *pytester.path.glob("runpytest-*"),
            pytester.path / "stdout",
            pytester.path / "stderr",
        )
        return _snapshot(pytester.path, skip=temp)

    before = outside()
    run(pytester).assert_outcomes(passed=35)
    assert outside() == before
    assert list(caroot.iterdir()) == []
    # Trust stores are not watched (other programs change them), but no code that writes one
    # was even loaded.
    assert json.loads(report.read_text()) == {"threads": [], "children": [], "stores": []}


def test_the_plugin_module_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    result = pytester.run(
        sys.executable,
        "-c",
        "import sys; before = set(sys.modules); import devtls.pytest_plugin;"
        "print(sorted(set(sys.modules) - before))",
    )
    assert result.ret == 0
    loaded = result.stdout.str().strip()
    assert "pytest" in loaded  # pytest itself, which pytest has loaded already when it loads us
    assert "cryptography" not in loaded
    assert "asyncio" not in loaded
    assert "devtls.ca" not in loaded


def test_the_readme_examples_pass(pytester: pytest.Pytester) -> None:
    require_tool("curl")
    require_tool("node")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Testing with devtls\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    assert len(blocks) == 2
    pytester.makeini(INI)
    pytester.makepyfile(test_readme="\n\n".join(blocks))
    run(pytester).assert_outcomes(passed=10)
