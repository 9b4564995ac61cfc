"""doctor on what runs: route names that do not resolve to loopback, and the certificate a
running ``devtls serve`` really serves (names, expiry, issuer)."""

from __future__ import annotations

from pathlib import Path

from devtls.ca import LocalCA
from devtls.doctor import Context
from devtls.doctor.names import check_names
from devtls.doctor.names import judge_answer as judge
from devtls.doctor.probe import ProbeServer
from devtls.doctor.running import discover
from devtls.doctor.served import check_served
from tests.doctorenv import by_name, context
from tests.routerprocess import router


def ready(tmp_path: Path) -> tuple[Context, LocalCA]:
    caroot = tmp_path / "caroot"
    ca, _ = LocalCA.load_or_create(caroot)
    ctx = context(tmp_path, caroot)
    ctx.ca = ca
    return ctx, ca


def test_route_names_that_do_not_resolve_to_loopback_are_failures(tmp_path: Path) -> None:
    ctx, _ = ready(tmp_path)
    (ctx.cwd / "devtls.toml").write_text(
        'routes = ["localhost/x=3000", "192.0.2.1=3000", "nothing.invalid=3000",'
        ' "app.localhost=3000"]\n'
    )
    checks = check_names(ctx, discover(ctx))
    assert by_name(checks, "route localhost").state == "ok"
    outside = by_name(checks, "route 192.0.2.1")
    assert outside.state == "fail"
    assert "192.0.2.1 is not a loopback address" in outside.found
    unresolved = by_name(checks, "route nothing.invalid")
    assert unresolved.state == "fail"
    assert "does not resolve" in unresolved.found
    assert unresolved.fix == "devtls hosts sync localhost nothing.invalid app.localhost"
    # Browsers and curl resolve *.localhost themselves: at worst a warning.
    assert by_name(checks, "route app.localhost").state in ("ok", "warn")


def test_a_name_with_any_address_off_loopback_fails() -> None:
    # What a resolver answering a name with a LAN address and 127.0.0.1 gives doctor.
    check = judge("api.test", ["10.0.0.5", "127.0.0.1"], "devtls hosts sync api.test")
    assert check.state == "fail"
    assert "api.test resolves to 10.0.0.5, not loopback" in check.found
    assert check.fix == "devtls hosts sync api.test"
    assert judge("api.test", ["127.0.0.1", "::1"], "").state == "ok"


def test_a_broken_devtls_toml_is_a_failure(tmp_path: Path) -> None:
    ctx, _ = ready(tmp_path)
    (ctx.cwd / "devtls.toml").write_text('routes = ["no upstream here"]\n')
    running = discover(ctx)
    (problem,) = running.problems
    assert problem.name == "devtls.toml"
    assert problem.state == "fail"


def test_a_served_leaf_that_does_not_cover_the_route_fails(tmp_path: Path) -> None:
    ctx, ca = ready(tmp_path)
    cert, key = tmp_path / "leaf.pem", tmp_path / "leaf-key.pem"
    ca.issue("localhost", "127.0.0.1", key_type="ecdsa").write_pem(cert, key)
    args = ("--cert", str(cert), "--key", str(key), "--route", "app.localhost=9")
    with router(*args, caroot=ctx.caroot, cwd=ctx.cwd) as serve:
        checks = check_served(ctx, discover(ctx))
    check = by_name(checks, f"served 127.0.0.1:{serve.port} app.localhost")
    assert check.state == "fail"
    assert "does not cover app.localhost" in check.found
    assert check.fix is not None
    assert check.fix.startswith("devtls cert localhost 127.0.0.1 app.localhost")


def test_a_served_leaf_expiring_within_7_days_is_a_warning(tmp_path: Path) -> None:
    ctx, ca = ready(tmp_path)
    cert, key = tmp_path / "leaf.pem", tmp_path / "leaf-key.pem"
    ca.issue("app.localhost", key_type="ecdsa", days=3).write_pem(cert, key)
    args = ("--cert", str(cert), "--key", str(key), "--route", "app.localhost=9")
    with router(*args, caroot=ctx.caroot, cwd=ctx.cwd) as serve:
        checks = check_served(ctx, discover(ctx))
    check = by_name(checks, f"served 127.0.0.1:{serve.port} app.localhost")
    assert check.state == "warn"
    assert "verifies against the devtls root" in check.found
    assert "expires in 2 days" in check.found
    assert check.fix == "devtls cert app.localhost"


def test_a_served_leaf_of_another_ca_fails(tmp_path: Path) -> None:
    ctx, _ = ready(tmp_path)
    other = LocalCA.ephemeral()
    cert, key = tmp_path / "leaf.pem", tmp_path / "leaf-key.pem"
    other.issue("localhost", "127.0.0.1", key_type="ecdsa").write_pem(cert, key)
    args = ("--cert", str(cert), "--key", str(key), "--route", "localhost=9")
    with router(*args, caroot=ctx.caroot, cwd=ctx.cwd) as serve:
        checks = check_served(ctx, discover(ctx))
    check = by_name(checks, f"served 127.0.0.1:{serve.port} localhost")
    assert check.state == "fail"
    assert "not signed by the devtls root" in check.found


def test_leaves_the_router_mints_from_the_ca_pass(tmp_path: Path) -> None:
    ctx, _ = ready(tmp_path)
    with router("--route", "app.localhost=9", caroot=ctx.caroot, cwd=ctx.cwd) as serve:
        running = discover(ctx)
        checks = check_served(ctx, running)
    assert running.router_port == serve.port
    assert running.router_hosts == ["app.localhost"]
    check = by_name(checks, f"served 127.0.0.1:{serve.port} app.localhost")
    assert check.state == "ok", check
    assert "verifies against the devtls root" in check.found


def test_a_bad_devtls_run_listen_is_a_failure(tmp_path: Path) -> None:
    ctx, _ = ready(tmp_path)
    ctx.default_listen = "not-an-address"
    (problem,) = discover(ctx).problems
    assert problem.state == "fail"
    assert problem.found.startswith("DEVTLS_RUN_LISTEN=not-an-address")
    assert problem.fix == "unset DEVTLS_RUN_LISTEN"


def test_nothing_running_is_skipped(tmp_path: Path) -> None:
    ctx, _ = ready(tmp_path)
    (check,) = check_served(ctx, discover(ctx))
    assert check.state == "skip"
    assert "nothing answers" in check.found


def test_on_the_default_address_a_foreign_leaf_is_a_warning_and_ours_passes(
    tmp_path: Path,
) -> None:
    ctx, ca = ready(tmp_path)
    for issuer, state in ((LocalCA.ephemeral(), "warn"), (ca, "ok")):
        leaf = issuer.issue("localhost", "127.0.0.1", key_type="ecdsa")
        with ProbeServer(leaf.server_context(), 5.0) as server:
            ctx.default_listen = f"127.0.0.1:{server.port}"
            (check,) = check_served(ctx, discover(ctx))
        assert check.name == f"served 127.0.0.1:{server.port} localhost"
        assert check.state == state, check
