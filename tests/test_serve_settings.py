"""The serve settings are declared once: the CLI, devtls.toml and the README follow it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from devtls.cli import app
from devtls.config import build_config
from devtls.errors import ConfigError
from devtls.serve_settings import SETTINGS, TOML_KEYS, ServeOptions

README = Path(__file__).parent.parent / "README.md"

# A good value for each setting, as a flag would give it and as devtls.toml would hold it.
EXAMPLES = {
    "upstream": ("3000", 3000),
    "listen": ("127.0.0.1:9443", "127.0.0.1:9443"),
    "names": (("a.test",), ["a.test"]),
    "routes": (("b.test=3001",), ["b.test=3001"]),
    "redirect_http": ("127.0.0.1:8080", "127.0.0.1:8080"),
    "host_header": ("upstream", "upstream"),
    "quiet": (True, True),
    "workers": (2, 2),
    # The file says the opposite of the flag: --http1-only is http2 = false.
    "http1_only": (True, False),
}


def test_every_flag_is_in_the_help_and_the_readme() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    readme = README.read_text()
    for setting in SETTINGS:
        if setting.flag is not None:
            assert setting.flag in result.output, setting.flag
            assert f"`{setting.flag}" in readme, setting.flag
        if setting.toml is not None and setting.table == "acme":
            assert f"`{setting.toml}" in readme, setting.toml


def test_defaults_are_shown_in_the_help() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "(default: 127.0.0.1:8443)" in result.output
    assert "(default: ./devtls.toml)" in result.output


@pytest.mark.parametrize("field", sorted(EXAMPLES))
def test_a_flag_and_its_toml_key_mean_the_same(tmp_path: Path, field: str) -> None:
    setting = next(s for s in SETTINGS if s.field == field)
    flag_value, file_value = EXAMPLES[field]
    from_flag = build_config(ServeOptions(**{field: flag_value}), cwd=tmp_path)
    toml = tmp_path / "devtls.toml"
    literal = repr(file_value).replace("'", '"').replace("True", "true").replace("False", "false")
    toml.write_text(f"{setting.toml} = {literal}\n")
    from_file = build_config(ServeOptions(), cwd=tmp_path)
    assert from_flag == from_file
    assert from_flag != build_config(ServeOptions(), cwd=tmp_path / "nowhere")


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.toml], ids=lambda s: s.field)
def test_a_toml_value_of_the_wrong_type_is_one_clear_error(tmp_path: Path, setting) -> None:
    wrong = '"text"' if setting.kind in ("switch", "count", "number", "many") else "[1]"
    if setting.kind == "text" and list in setting.also:
        wrong = "true"
    line = f"{setting.toml} = {wrong}\n"
    (tmp_path / "devtls.toml").write_text(f"[{setting.table}]\n{line}" if setting.table else line)
    with pytest.raises(ConfigError, match="wrong type"):
        build_config(ServeOptions(), cwd=tmp_path)


def test_unknown_keys_are_refused_with_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "devtls.toml").write_text("lisen = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'lisen'") as info:
        build_config(ServeOptions(), cwd=tmp_path)
    assert "listen" in str(info.value.hint)
    (tmp_path / "devtls.toml").write_text("[acme]\ndirectry = 1\n")
    with pytest.raises(ConfigError, match="unknown acme setting"):
        build_config(ServeOptions(), cwd=tmp_path)
    assert "renew_fraction" in TOML_KEYS["acme"]


def test_unknown_option_names_are_a_programming_error() -> None:
    with pytest.raises(TypeError):
        ServeOptions(lisen="x")
