"""The certificate a running devtls actually serves: names, expiry, and whether it verifies.

Asked where devtls would listen: the running router's port, the default address (where
``devtls serve`` and ``devtls run``'s router listen) and ./devtls.toml's ``listen``. The leaf
is fetched once without verification (to say what it is), then the handshake is repeated
verifying against the devtls root alone, with the name the route serves.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field

from cryptography import x509

from devtls.doctor.model import Check, Context, State, quote
from devtls.doctor.names import lookup_name
from devtls.doctor.running import Running
from devtls.errors import UsageError
from devtls.expiry import LEAF_WARN_DAYS, expiry_problem
from devtls.names import NameKind, parse_name

# Names asked per address (each is two handshakes).
MAX_NAMES_PER_ADDRESS = 8
# OpenSSL's X509_V_ERR_* codes that say who is wrong.
_EXPIRED = 10
_HOSTNAME_MISMATCH = 62
_UNKNOWN_ISSUER = (2, 19, 20, 21)


@dataclass
class Target:
    label: str
    addresses: list[tuple[str, int]]
    names: list[str] = field(default_factory=list)
    required: bool = False  # a router said it listens here: silence is a finding


def targets(running: Running) -> list[Target]:
    found: list[Target] = []
    if running.router_port is not None:
        port = running.router_port
        found.append(
            Target("router", [("127.0.0.1", port), ("::1", port)], running.router_hosts, True)
        )
    if running.default_listen is not None:
        found.append(Target("default", [running.default_listen]))
    if running.toml_listen is not None:
        found.append(Target("devtls.toml", [running.toml_listen], running.toml_hosts))
    unique: list[Target] = []
    for target in found:
        same = next((t for t in unique if set(t.addresses) & set(target.addresses)), None)
        if same is None:
            unique.append(target)
        else:
            same.names += [n for n in target.names if n not in same.names]
    for target in unique:
        target.names = [n for n in target.names if n] or ["localhost"]
    return unique


def check_served(ctx: Context, running: Running) -> list[Check]:
    assert ctx.ca is not None
    checks: list[Check] = []
    for target in targets(running):
        address = _reachable(target.addresses, ctx.timeout)
        shown = " or ".join(_show(a) for a in target.addresses)
        if address is None:
            state: State = "warn" if target.required else "skip"
            what = "the router's port" if target.required else f"{target.label} address"
            checks.append(Check(f"served {shown}", state, f"nothing answers on {what} {shown}"))
            continue
        for name in target.names[:MAX_NAMES_PER_ADDRESS]:
            check = _check_name(ctx, address, name)
            if check.state == "fail" and target.label == "default":
                # Not this user's router (that one answers on its control socket): maybe not
                # devtls at all, so a warning.
                found = f"(not the router; if this is a devtls serve) {check.found}"
                check = Check(check.name, "warn", found, check.fix)
            checks.append(check)
    return checks


def _show(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reachable(addresses: list[tuple[str, int]], timeout: float) -> tuple[str, int] | None:
    for address in addresses:
        try:
            with socket.create_connection(address, timeout=min(timeout, 1.0)):
                return address
        except OSError:
            continue
    return None


def _handshake(
    address: tuple[str, int], name: str, context: ssl.SSLContext, timeout: float
) -> bytes:
    with (
        socket.create_connection(address, timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        return tls.getpeercert(binary_form=True) or b""


def _check_name(ctx: Context, address: tuple[str, int], route: str) -> Check:
    assert ctx.ca is not None
    name = lookup_name(route)
    check_name = f"served {_show(address)} {route}"
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    try:
        leaf = x509.load_der_x509_certificate(_handshake(address, name, insecure, ctx.timeout))
    except (OSError, ssl.SSLError, ValueError) as exc:
        return Check(check_name, "fail", f"no TLS certificate from {_show(address)}: {exc}", None)
    sans = _names_of(leaf)
    until = f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    described = f"leaf for {', '.join(sans) or 'no names'}, valid until {until}"
    renew = cert_command([*sans] if any(map(_issuable, sans)) else [name])
    try:
        _handshake(address, name, ctx.ca.client_context(), ctx.timeout)
        verdict = "verifies against the devtls root"
    except ssl.SSLCertVerificationError as exc:
        code = exc.verify_code
        if code == _HOSTNAME_MISMATCH:
            return Check(
                check_name,
                "fail",
                f"{described}: it does not cover {name}",
                f"{cert_command([*sans, name])} (then serve it with --cert/--key)",
            )
        if code == _EXPIRED:
            return Check(check_name, "fail", f"{described}: expired", renew)
        if code in _UNKNOWN_ISSUER:
            return _other_issuer(ctx, address, name, check_name, leaf, described, renew)
        return Check(check_name, "fail", f"{described}: {exc.verify_message}", renew)
    except (OSError, ssl.SSLError) as exc:
        return Check(check_name, "fail", f"{described}; the handshake failed: {exc}", None)
    problem = expiry_problem(leaf.not_valid_after_utc, LEAF_WARN_DAYS)
    if problem is not None:
        return Check(check_name, "warn", f"{described}, {verdict}; it {problem}", renew)
    return Check(check_name, "ok", f"{described}, {verdict}")


def _other_issuer(
    ctx: Context,
    address: tuple[str, int],
    name: str,
    check_name: str,
    leaf: x509.Certificate,
    described: str,
    renew: str,
) -> Check:
    """A leaf not from this CA: fine if publicly trusted (ACME), else a finding."""
    assert ctx.ca is not None
    issuer = leaf.issuer.rfc4514_string()
    try:
        _handshake(address, name, ssl.create_default_context(), ctx.timeout)
        return Check(check_name, "ok", f"{described}, issued by {issuer} (publicly trusted)")
    except (OSError, ssl.SSLError):
        pass
    if leaf.issuer == ctx.ca.cert.subject:
        # Same name, other key: a devtls serve started before the CA was replaced.
        return Check(
            check_name,
            "fail",
            f"{described}, from an earlier CA of the same name, not the current root",
            "restart devtls serve (it mints its leaves from the current CA)",
        )
    return Check(
        check_name,
        "fail",
        f"{described}, issued by {issuer}: not signed by the devtls root",
        f"{renew} (then serve it with --cert/--key)",
    )


def cert_command(names: list[str]) -> str:
    """``devtls cert NAME...`` for the names devtls can issue, each quoted for the shell. The
    names come from a certificate another program served, and may hold anything: one that
    is no host name or address (``$(...)``, a newline) is left out of the command."""
    usable: list[str] = []
    for name in names:
        if _issuable(name) and name not in usable:
            usable.append(name)
    return " ".join(["devtls cert", *(quote(n) for n in usable)])


def _issuable(name: str) -> bool:
    try:
        return parse_name(name).kind in (NameKind.DNS, NameKind.IP)
    except UsageError:
        return False


def _names_of(leaf: x509.Certificate) -> list[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    return names + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
