"""The benchmark scripts that need no peers still run (the numbers are not looked at)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "scripts" / "bench"


def test_python_cost_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("python_cost", BENCH / "python_cost.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["python_cost.py", "--requests", "20", "--connections", "3"])
    assert module.main() == 0
    out = capsys.readouterr().out
    assert "per keep-alive request" in out
    assert "devtls's share of a connection" in out
    assert "per HTTP/2 stream" in out


def test_hello_flood_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("hello_flood.py reads the server's CPU time from /proc")
    spec = importlib.util.spec_from_file_location("hello_flood", BENCH / "hello_flood.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["hello_flood.py", "--hellos", "5"])
    assert module.main() == 0
    assert "server CPU for them" in capsys.readouterr().out
