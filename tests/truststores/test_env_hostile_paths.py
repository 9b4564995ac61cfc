"""`devtls env` for a CAROOT whose path holds what shells treat specially.

Each line is run by the shell it is written for: the variables must hold the path exactly,
and nothing in the path may run. PowerShell is not installed here, so its line is read by the
rule of its language specification instead (a verbatim string, 2.3.5.2).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from devtls.ca import LocalCA
from devtls.trust import docker_env_lines, env_lines
from tests.conftest import require_tool

VARIABLES = ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
# Folder names that would run a command, split a word or end a quote if quoted wrong.
HOSTILE = [
    "with space",
    "it's",
    'double"quote',
    "$(touch ran-dollar)",
    "`touch ran-backtick`",
    "new\nline; touch ran-newline",
    "back\\slash\\'; touch ran-backslash",
    "semi;colon & touch ran-amp | x",
    "glob * ? [a] {a,b} ~ #hash",
    "dollar $HOME ${HOME} %PATH%",
    "caf\u00e9 \u65e5\u672c",
    "typographic \u2018\u2019\u201a\u201b; touch ran-quote",
]
# PowerShell ends a single-quoted string on any of these, not only on the ASCII one.
POWERSHELL_QUOTES = "'\u2018\u2019\u201a\u201b"


def ca_under(tmp_path: Path, folder: str) -> LocalCA:
    ca, _ = LocalCA.load_or_create(tmp_path / folder / "caroot")
    return ca


def expected(ca: LocalCA) -> dict[str, str]:
    assert ca.path is not None
    bundle = str(ca.path / "devtls-bundle.pem")
    return {
        "NODE_EXTRA_CA_CERTS": str(ca.path / "rootCA.pem"),
        "SSL_CERT_FILE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
        "CURL_CA_BUNDLE": bundle,
    }


def run_in(shell: str, script: str, cwd: Path) -> dict[str, str]:
    """The four variables after ``script`` ran in ``shell`` (read back NUL-separated)."""
    environ = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    if shell == "fish":
        show = "printf '%s\\0' " + " ".join(f"${name}" for name in VARIABLES)
        command = [require_tool("fish"), "--no-config", "-c", f"{script}\n{show}"]
    else:
        show = "printf '%s\\0' " + " ".join(f'"${name}"' for name in VARIABLES)
        flags = ["--noprofile", "--norc"] if shell == "bash" else ["-f"]
        command = [require_tool(shell), *flags, "-c", f"{script}\n{show}"]
    result = subprocess.run(
        command, cwd=cwd, env=environ, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    values = result.stdout.decode().split("\0")
    return dict(zip(VARIABLES, values, strict=False))


@pytest.mark.parametrize("folder", HOSTILE)
@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_reads_the_path_back_exactly(tmp_path: Path, shell: str, folder: str) -> None:
    ca = ca_under(tmp_path, folder)
    assert ca.path is not None
    lines = env_lines(shell, caroot=ca.path)
    work = tmp_path / "work"
    work.mkdir()
    assert run_in(shell, "\n".join(lines), work) == expected(ca)
    assert list(work.iterdir()) == []  # nothing in the path ran


def powershell_assignment(line: str) -> tuple[str, str]:
    """``$Env:NAME = '...'`` read as PowerShell reads it: (NAME, the string's value).

    Inside a verbatim string any single-quote character ends it, unless another follows,
    which the pair stands for; whatever follows the closing quote is more code.
    """
    head, sep, rest = line.partition(" = ")
    assert sep
    assert head.startswith("$Env:")
    assert rest[:1] in POWERSHELL_QUOTES
    value, i = [], 1
    while i < len(rest):
        char = rest[i]
        if char in POWERSHELL_QUOTES:
            if i + 1 < len(rest) and rest[i + 1] in POWERSHELL_QUOTES:
                value.append(rest[i + 1])
                i += 2
                continue
            assert rest[i + 1 :] == "", f"code after the string: {rest[i + 1 :]!r}"
            return head.removeprefix("$Env:"), "".join(value)
        value.append(char)
        i += 1
    raise AssertionError(f"the string is not closed: {line!r}")


@pytest.mark.parametrize("folder", HOSTILE)
def test_powershell_reads_the_path_back_exactly(tmp_path: Path, folder: str) -> None:
    ca = ca_under(tmp_path, folder)
    assert ca.path is not None
    values = dict(powershell_assignment(line) for line in env_lines("powershell", caroot=ca.path))
    assert values == expected(ca)


def csv_fields(text: str) -> list[str]:
    """One record of the CSV that ``docker build --secret`` reads (Go's encoding/csv: a quote
    may appear only in a field that starts with one, doubled there)."""
    fields: list[str] = []
    i = 0
    while True:
        if text[i : i + 1] == '"':
            value, i = [], i + 1
            while True:
                end = text.index('"', i)  # ValueError: the quote is never closed
                value.append(text[i:end])
                if text[end + 1 : end + 2] == '"':
                    value.append('"')
                    i = end + 2
                    continue
                i = end + 1
                break
            field = "".join(value)
        else:
            end = text.find(",", i)
            field = text[i:] if end < 0 else text[i:end]
            assert '"' not in field, f"a bare quote in a field: {field!r}"
            i = len(text) if end < 0 else end
        fields.append(field)
        if i >= len(text):
            return fields
        assert text[i] == ",", f"text after a quoted field: {text[i:]!r}"
        i += 1


@pytest.mark.parametrize("folder", [*HOSTILE, "comma,src=elsewhere", 'quote"d,x'])
def test_docker_lines_name_the_root_exactly(tmp_path: Path, folder: str) -> None:
    ca = ca_under(tmp_path, folder)
    assert ca.path is not None
    root = str(ca.path / "rootCA.pem")
    lines = docker_env_lines(caroot=ca.path)
    for line in lines:
        if line.startswith("#"):
            # A comment that a newline in the path ended would make the rest an instruction.
            assert "\n" not in line
            assert "\r" not in line
    build = next(line for line in lines if line.startswith("docker build "))
    args = shlex.split(build)
    assert args[-1] == "."
    assert csv_fields(args[args.index("--secret") + 1]) == ["id=devtls-root", f"src={root}"]
    file_line = next(line for line in lines if line.startswith("    file: "))
    # compose.yaml's double-quoted scalar takes JSON's escapes as they are.
    assert json.loads(file_line.removeprefix("    file: ")) == root
