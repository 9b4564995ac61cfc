"""`devtls acme-server`'s errors: one line each, with the contract's exit codes."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from devtls.cli import app


def test_a_bad_allow_pattern_is_one_line(caroot: Path) -> None:
    result = CliRunner().invoke(app, ["acme-server", "--allow", "no spaces please"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "--allow 'no spaces please'" in result.output


def test_a_bad_validation_port_is_one_line(caroot: Path) -> None:
    result = CliRunner().invoke(app, ["acme-server"], env={"DEVTLS_ACME_HTTP_PORT": "eighty"})
    assert result.exit_code == 2
    assert "DEVTLS_ACME_HTTP_PORT: 'eighty' is not a port number" in result.output


def test_days_out_of_range(caroot: Path) -> None:
    result = CliRunner().invoke(app, ["acme-server", "--days", "900"])
    assert result.exit_code == 2
    assert "--days 900 is out of range" in result.output
    assert not caroot.exists()  # refused before any CA was created
