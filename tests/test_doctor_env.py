"""doctor on the runtimes' CA variables, each at a missing file and at a bundle without the
root, and on the runtimes themselves (real node, curl, wget and Python clients)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtls.bundle import system_roots
from devtls.ca import LocalCA
from devtls.doctor import Context
from devtls.doctor.environment import check_variables
from devtls.doctor.runtimes import check_runtimes
from devtls.trust import write_bundle
from tests.conftest import require_tool
from tests.doctorenv import by_name, context

# The variable, and the runtime check that must fail with it wrong.
CASES = [
    ("NODE_EXTRA_CA_CERTS", "runtime node", "node"),
    ("SSL_CERT_FILE", "runtime python-ssl", None),
    ("SSL_CERT_FILE", "runtime httpx", None),
    ("REQUESTS_CA_BUNDLE", "runtime requests", None),
    ("CURL_CA_BUNDLE", "runtime curl", "curl"),
]


def ready(tmp_path: Path, **extra: str) -> Context:
    caroot = tmp_path / "caroot"
    ca, _ = LocalCA.load_or_create(caroot)
    write_bundle(ca)  # as `devtls env` leaves it
    ctx = context(tmp_path, caroot, **extra)
    ctx.ca = ca
    return ctx


def without_root(tmp_path: Path) -> Path:
    """A real bundle (the system roots), only not ours."""
    bundle = tmp_path / "other-bundle.pem"
    bundle.write_bytes(system_roots())
    return bundle


@pytest.mark.parametrize(("variable", "runtime", "tool"), CASES)
@pytest.mark.parametrize("kind", ["missing file", "bundle without the root"])
def test_a_variable_at_the_wrong_file_fails_its_check_and_its_runtime(
    tmp_path: Path, variable: str, runtime: str, tool: str | None, kind: str
) -> None:
    if tool:
        require_tool(tool)
    target = tmp_path / "gone.pem" if kind == "missing file" else without_root(tmp_path)
    ctx = ready(tmp_path, **{variable: str(target)})
    check = by_name(check_variables(ctx), f"env {variable}")
    assert check.state == "fail"
    assert ("missing file" if kind == "missing file" else "does not hold the devtls root") in (
        check.found
    )
    wanted = ctx.root_file() if variable == "NODE_EXTRA_CA_CERTS" else ctx.bundle()
    assert check.fix == f"export {variable}={wanted}"
    if variable == "CURL_CA_BUNDLE" and kind != "missing file":
        assert "curl reads it instead of the system store" in check.found

    ran = by_name(check_runtimes(ctx), runtime)
    assert ran.state == "fail", ran
    assert ran.fix is not None
    if variable == "CURL_CA_BUNDLE":
        assert "CURL_CA_BUNDLE" in ran.found
        assert "overrides" in ran.found


def test_without_a_bundle_yet_the_fix_is_devtls_env(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    ca, _ = LocalCA.load_or_create(caroot)
    ctx = context(tmp_path, caroot, REQUESTS_CA_BUNDLE=str(tmp_path / "gone.pem"))
    ctx.ca = ca
    assert by_name(check_variables(ctx), "env REQUESTS_CA_BUNDLE").fix == 'eval "$(devtls env)"'


def test_a_bundle_of_the_root_alone_warns_that_other_sites_fail(tmp_path: Path) -> None:
    ctx = ready(tmp_path)
    ctx.environ = {**ctx.environ, "SSL_CERT_FILE": str(ctx.root_file())}
    check = by_name(check_variables(ctx), "env SSL_CERT_FILE")
    assert check.state == "warn"
    assert "only the devtls root" in check.found


def test_node_without_its_variable_says_it_ignores_the_system_store(tmp_path: Path) -> None:
    require_tool("node")
    ctx = ready(tmp_path)
    node = by_name(check_runtimes(ctx), "runtime node")
    assert node.state == "fail"
    assert "not the system store" in node.found
    assert node.fix == f"export NODE_EXTRA_CA_CERTS={ctx.root_file()}"


def test_gnutls_wget_ignores_ssl_cert_file_and_the_fix_is_its_own_setting(
    tmp_path: Path,
) -> None:
    require_tool("wget")
    ctx = ready(tmp_path)
    ctx.environ = {**ctx.environ, "SSL_CERT_FILE": str(ctx.bundle())}
    wget = by_name(check_runtimes(ctx), "runtime wget")
    assert wget.state == "fail"
    assert wget.fix == f"add 'ca_certificate = {ctx.bundle()}' to ~/.wgetrc"
    # The fix, applied, works: wget reads ~/.wgetrc.
    (ctx.home / ".wgetrc").write_text(f"ca_certificate = {ctx.bundle()}\n")
    assert by_name(check_runtimes(ctx), "runtime wget").state == "ok"


def test_every_runtime_trusts_the_root_when_set_up_as_doctor_says(tmp_path: Path) -> None:
    for tool in ("node", "curl", "wget"):
        require_tool(tool)
    ctx = ready(tmp_path)
    bundle = str(ctx.bundle())
    ctx.environ = {
        **ctx.environ,
        "NODE_EXTRA_CA_CERTS": str(ctx.root_file()),
        "SSL_CERT_FILE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
        "CURL_CA_BUNDLE": bundle,
    }
    (ctx.home / ".wgetrc").write_text(f"ca_certificate = {bundle}\n")
    checks = check_variables(ctx) + check_runtimes(ctx)
    assert {c.name: c.state for c in checks} == {
        "env NODE_EXTRA_CA_CERTS": "ok",
        "env SSL_CERT_FILE": "ok",
        "env REQUESTS_CA_BUNDLE": "ok",
        "env CURL_CA_BUNDLE": "ok",
        "runtime node": "ok",
        "runtime curl": "ok",
        "runtime wget": "ok",
        "runtime python-ssl": "ok",
        "runtime requests": "ok",
        "runtime httpx": "ok",
    }


def test_a_python3_that_does_not_run_is_a_warning_not_a_trust_failure(tmp_path: Path) -> None:
    ctx = ready(tmp_path)
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "python3"
    script.write_text("#!/bin/sh\necho 'python3: this shim is broken' >&2\nexit 127\n")
    script.chmod(0o755)
    ctx.environ = {**ctx.environ, "PATH": f"{fake}:{ctx.environ['PATH']}"}
    check = by_name(check_runtimes(ctx), "runtime python")
    assert check.state == "warn"
    assert "this shim is broken" in check.found
