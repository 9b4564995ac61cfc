"""Node, curl, wget and Python (ssl, requests, httpx) against a leaf of the CA, for real.

Each runtime reads trust from its own place (the README has the table); the fix for one that
fails is the setting that runtime reads, or the system store for those that read only that.
"""

from __future__ import annotations

from devtls.doctor.environment import holds_root, setting_for
from devtls.doctor.model import Check, Context, run_tool
from devtls.doctor.probe import (
    Outcome,
    ProbeServer,
    client_commands,
    python_outcomes,
    run_clients,
)

SYSTEM_FIX = "devtls install --store system"


def check_runtimes(ctx: Context) -> list[Check]:
    assert ctx.ca is not None
    which = {tool: ctx.which(tool) for tool in ("node", "curl", "wget", "python3")}
    leaf = ctx.probe_leaf()
    with ProbeServer(leaf.server_context(), ctx.timeout) as server:
        commands = client_commands(which, server.url, ctx.timeout)
        results = run_clients(commands, ctx.environ, ctx.timeout)
    if ctx.system_pending is not None:
        ctx.system_pending.wait(ctx.timeout * 2)
    checks = [
        _node(ctx, results.get("node")),
        _curl(ctx, results.get("curl")),
        _wget(ctx, results.get("wget")),
    ]
    python = results.get("python")
    if python is None:
        checks.append(Check("runtime python", "skip", "python3 is not on PATH"))
    else:
        where = which["python3"]
        checks += [_python(ctx, outcome, where) for outcome in python_outcomes(*python)]
    return checks


def _timed_out(name: str, result: tuple[int, str]) -> Check | None:
    code, output = result
    if code == 124:
        return Check(name, "warn", f"cannot tell: {output.strip()}", None)
    return None


def _node(ctx: Context, result: tuple[int, str] | None) -> Check:
    name = "runtime node"
    if result is None:
        return Check(name, "skip", "node is not on PATH")
    if (late := _timed_out(name, result)) is not None:
        return late
    code, output = result
    if code == 0 and output.strip().endswith("ok"):
        return Check(name, "ok", "Node trusts a devtls leaf")
    extra = ctx.environ.get("NODE_EXTRA_CA_CERTS")
    why = (
        f"NODE_EXTRA_CA_CERTS={extra}"
        if extra
        else "Node reads its bundled roots and NODE_EXTRA_CA_CERTS, not the system store, "
        "and NODE_EXTRA_CA_CERTS is not set"
    )
    return Check(
        name,
        "fail",
        f"Node rejects a devtls leaf ({_last(output)}); {why}",
        setting_for(ctx, "NODE_EXTRA_CA_CERTS"),
    )


def _curl(ctx: Context, result: tuple[int, str] | None) -> Check:
    name = "runtime curl"
    if result is None:
        return Check(name, "skip", "curl is not on PATH")
    if (late := _timed_out(name, result)) is not None:
        return late
    code, output = result
    if code == 0:
        return Check(name, "ok", "curl trusts a devtls leaf")
    found = f"curl rejects a devtls leaf ({_last(output, 'curl: (')})"
    preset = ctx.environ.get("CURL_CA_BUNDLE")
    if preset:
        found += f"; CURL_CA_BUNDLE={preset} overrides SSL_CERT_FILE and the system store"
        fix = "unset CURL_CA_BUNDLE" if ctx.system_trusted else setting_for(ctx, "CURL_CA_BUNDLE")
        return Check(name, "fail", found, fix)
    if ctx.system_trusted is False and not ctx.environ.get("SSL_CERT_FILE"):
        found += "; the system store does not trust the root"
        return Check(name, "fail", found, SYSTEM_FIX)
    if holds_root(ctx, ctx.environ.get("SSL_CERT_FILE")):
        # Debian's curl reads its built-in bundle path and CURL_CA_BUNDLE, not SSL_CERT_FILE.
        found += "; this curl does not read SSL_CERT_FILE"
    return Check(name, "fail", found, setting_for(ctx, "CURL_CA_BUNDLE"))


def _wget(ctx: Context, result: tuple[int, str] | None) -> Check:
    name = "runtime wget"
    if result is None:
        return Check(name, "skip", "wget is not on PATH")
    if (late := _timed_out(name, result)) is not None:
        return late
    code, output = result
    if code == 0:
        return Check(name, "ok", "wget trusts a devtls leaf")
    found = f"wget rejects a devtls leaf ({_last(output, 'ERROR')})"
    wget = ctx.which("wget")
    _, version = run_tool([wget or "wget", "--version"], timeout=ctx.timeout)
    if "+ssl/gnutls" in version:
        found += "; this wget is built with GnuTLS: it reads the system store and ~/.wgetrc, "
        found += "and ignores SSL_CERT_FILE"
    if ctx.system_trusted is False and not ctx.environ.get("SSL_CERT_FILE"):
        return Check(name, "fail", found, SYSTEM_FIX)
    target = ctx.bundle() if ctx.bundle().is_file() else ctx.root_file()
    return Check(name, "fail", found, f"add 'ca_certificate = {target}' to ~/.wgetrc")


def _python(ctx: Context, outcome: Outcome, python: str | None) -> Check:
    client = outcome.client
    name = f"runtime {client}"
    if outcome.ok:
        return Check(name, "ok", f"{_python_name(client)} ({python}) trusts a devtls leaf")
    if outcome.extra.get("missing"):
        return Check(name, "skip", f"{client} is not installed for {python}")
    if outcome.extra.get("broken"):
        return Check("runtime python", "warn", f"cannot run {python}: {outcome.detail}")
    found = f"{_python_name(client)} ({python}) rejects a devtls leaf ({outcome.detail})"
    certifi = outcome.extra.get("certifi")
    if client == "requests":
        if not ctx.environ.get("REQUESTS_CA_BUNDLE") and certifi:
            found += f"; requests reads REQUESTS_CA_BUNDLE, else certifi's {certifi}"
        return Check(name, "fail", found, setting_for(ctx, "REQUESTS_CA_BUNDLE"))
    if client == "httpx":
        if not ctx.environ.get("SSL_CERT_FILE") and certifi:
            found += f"; httpx reads SSL_CERT_FILE, else certifi's {certifi}"
        return Check(name, "fail", found, setting_for(ctx, "SSL_CERT_FILE"))
    cafile = outcome.extra.get("cafile")
    if ctx.environ.get("SSL_CERT_FILE"):
        found += f"; Python's ssl reads SSL_CERT_FILE={ctx.environ['SSL_CERT_FILE']}"
    elif cafile:
        found += f"; Python's ssl reads {cafile} (OpenSSL's default)"
    if ctx.system_trusted is False and not ctx.environ.get("SSL_CERT_FILE"):
        return Check(name, "fail", found, SYSTEM_FIX)
    return Check(name, "fail", found, setting_for(ctx, "SSL_CERT_FILE"))


def _python_name(client: str) -> str:
    return {"python-ssl": "Python's ssl (urllib)"}.get(client, f"Python {client}")


def _last(output: str, marker: str = "") -> str:
    """The line of a tool's output that says why: the first with ``marker``, else the last."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    marked = [line for line in lines if marker and marker in line]
    return (marked or lines or ["no output"])[-1 if not marked else 0][:200]
