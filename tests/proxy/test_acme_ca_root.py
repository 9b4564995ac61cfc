"""`serve --acme --acme-ca-root FILE`: an ACME CA whose root is neither the OS's nor devtls's
(step-ca, Pebble, another machine's `devtls acme-server`), here Pebble behind a root of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devtls.ca import LocalCA
from devtls.config import ServeOptions, build_config
from devtls.errors import ConfigError, DevtlsError
from tests.proxy.conftest import Harness
from tests.proxy.test_acme import running_pebble, served_by_pebble, start_acme_proxy, stop


def test_pebble_behind_a_private_root_needs_acme_ca_root(harness: Harness, tmp_path: Path) -> None:
    private = LocalCA.ephemeral()  # Pebble's API root: not the devtls root, not the OS's
    with running_pebble(tmp_path, private) as pebble:
        with pytest.raises(DevtlsError) as refused:
            start_acme_proxy(harness, pebble, tmp_path / "cache-refused")
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(f"the ACME directory {pebble.directory} has a TLS certificate")
        assert "does not verify with the OS roots and the devtls root" in message
        assert "give its root with --acme-ca-root FILE" in message

        running = start_acme_proxy(harness, pebble, tmp_path / "cache", acme_ca_root=pebble.ca_file)
        assert running.acme is not None
        issuing_root = tmp_path / "pebble-issuing-root.pem"
        issuing_root.write_bytes(pebble.root_pem())
        ok, why = served_by_pebble(running.port, "a.test", issuing_root)
        assert ok, (why, harness.log)
        stop(harness, running)

        # A file with another root is refused the same way, naming the file it used.
        other = LocalCA.ephemeral()
        with pytest.raises(DevtlsError, match="does not verify with the roots in"):
            wrong = tmp_path / "wrong-root.pem"
            wrong.write_bytes(other.cert_pem())
            start_acme_proxy(harness, pebble, tmp_path / "cache-wrong", acme_ca_root=wrong)


def acme_options(**extra: object) -> ServeOptions:
    return ServeOptions(
        routes=("a.test=3000",),
        acme=True,
        acme_agree_tos=True,
        **extra,  # type: ignore[arg-type]
    )


def test_a_missing_or_unparsable_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        build_config(acme_options(acme_ca_root=str(tmp_path / "nope.pem")), cwd=tmp_path)
    assert str(missing.value).startswith(f"--acme-ca-root {tmp_path / 'nope.pem'}: cannot read it")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        build_config(acme_options(acme_ca_root=str(junk)), cwd=tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "devtls", "serve", "--route", "a.test=3000", "--acme",
         "--acme-agree-tos", "--acme-ca-root", str(junk)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"devtls: error: --acme-ca-root {junk} holds no PEM certificate; "
        "give the ACME CA's root as PEM (-----BEGIN CERTIFICATE-----)\n"
    )


def test_the_toml_key_and_the_default(tmp_path: Path) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_bytes(LocalCA.ephemeral().cert_pem() + LocalCA.ephemeral().cert_pem())
    (tmp_path / "devtls.toml").write_text(f'[acme]\nca_root = "{roots}"\n')
    config = build_config(acme_options(), cwd=tmp_path)
    assert config.acme is not None
    assert config.acme.ca_root == roots
    (tmp_path / "devtls.toml").unlink()
    default = build_config(acme_options(), cwd=tmp_path)
    assert default.acme is not None
    assert default.acme.ca_root is None
