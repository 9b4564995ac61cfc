"""Name constraints on a root (RFC 5280 4.2.1.10): which names it may certify at all.

``devtls install --constrain localhost,.localhost,.test,127.0.0.0/8,::1/128`` puts them in a
new root as a critical extension, so clients that enforce them (OpenSSL, Chromium, Go, NSS)
reject a leaf for any other name even when the CA key leaks. devtls checks the same rules
before it signs, so it never hands out a certificate a client will refuse.

What a DNS entry means, as OpenSSL (``nc_dns``) and Chromium (``DNSNameMatches``) read it,
RFC 5280 leaving the leading dot undefined for dNSName:

- ``test`` (bare): ``test`` itself and every name under it (``a.test``, ``*.a.test``);
- ``.test`` (leading dot): only the names under it, not ``test`` itself.

Addresses are CIDR ranges (``127.0.0.0/8``; a bare address is its /32 or /128). A root given
no range certifies no address at all (excluded ``0.0.0.0/0`` and ``::/0``), since a permitted
list without addresses would leave every address allowed. Emails and URIs are not issued by a
constrained root: their constraint forms are not supported alike by the clients that matter.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cryptography import x509

from devtls.errors import IssueError, UsageError
from devtls.names import Name, NameKind, parse_name

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Excluded when no range is given: without them, every address would be allowed.
NO_ADDRESSES = (ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0"))


@dataclass(frozen=True)
class NameConstraints:
    """Permitted DNS subtrees (``name`` or ``.name``) and address ranges."""

    dns: tuple[str, ...]
    networks: tuple[Network, ...]

    def entries(self) -> list[str]:
        """As the user writes them: ``localhost``, ``.test``, ``127.0.0.0/8``."""
        return [*self.dns, *(str(n) for n in self.networks)]

    def __str__(self) -> str:
        return ",".join(self.entries())

    def permits(self, name: Name) -> bool:
        if name.kind is NameKind.DNS:
            return any(_dns_matches(name.value, base) for base in self.dns)
        if name.kind is NameKind.IP:
            address = ipaddress.ip_address(name.value)
            return any(address in network for network in self.networks)
        return False

    def check(self, names: list[Name] | tuple[Name, ...]) -> None:
        """IssueError naming the first name outside, and the constraints."""
        for name in names:
            if not self.permits(name):
                kind = "" if name.kind in (NameKind.DNS, NameKind.IP) else f"the {name.kind.value} "
                raise IssueError(
                    f"{kind}{name} is outside the CA's name constraints ({self})",
                    "issue only names inside them, or use a CA without constraints",
                )

    def extension(self) -> x509.NameConstraints:
        permitted: list[x509.GeneralName] = [x509.DNSName(d) for d in self.dns]
        permitted += [x509.IPAddress(n) for n in self.networks]
        excluded = None if self.networks else [x509.IPAddress(n) for n in NO_ADDRESSES]
        return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)


def _dns_matches(name: str, base: str) -> bool:
    # A wildcard is matched as the names it stands for: they are all under its parent.
    name = name.lower()
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def parse_constraints(text: str) -> NameConstraints:
    """``localhost,.localhost,.test,127.0.0.0/8,::1/128`` -> NameConstraints, or UsageError."""
    dns: list[str] = []
    networks: list[Network] = []
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise UsageError("--constrain needs at least one name", _EXAMPLE)
    for item in items:
        if not item:
            continue
        network = _parse_network(item)
        if network is not None:
            if network not in networks:
                networks.append(network)
            continue
        entry = _parse_dns(item)
        if entry not in dns:
            dns.append(entry)
    if not dns:
        raise UsageError("--constrain names no DNS name", f"add at least one: {_EXAMPLE}")
    return NameConstraints(tuple(dns), tuple(networks))


_EXAMPLE = "e.g. --constrain localhost,.localhost,.test,127.0.0.0/8,::1/128"


def _parse_network(item: str) -> Network | None:
    if "/" not in item:
        try:
            address = ipaddress.ip_address(item)
        except ValueError:
            return None
        return ipaddress.ip_network(address)
    try:
        return ipaddress.ip_network(item, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(item, strict=False)
    except ValueError:
        raise UsageError(
            f"--constrain: {item!r} is not an address range", "write it like 127.0.0.0/8"
        ) from None
    raise UsageError(f"--constrain: {item!r} has bits set after the prefix", f"write it as {loose}")


def _parse_dns(item: str) -> str:
    dot = item.startswith(".")
    if item.startswith("*."):
        raise UsageError(
            f"--constrain: {item!r} is a wildcard",
            f"write {item[1:]!r} for the names under {item[2:]!r}",
        )
    try:
        name = parse_name(item[1:] if dot else item)
    except UsageError as exc:
        raise UsageError(f"--constrain: {exc.message}", _EXAMPLE) from None
    if name.kind is not NameKind.DNS:
        raise UsageError(
            f"--constrain: {item!r} is not a DNS name or an address range",
            "emails and URIs cannot be constrained",
        )
    return ("." if dot else "") + name.value


def from_certificate(cert: x509.Certificate) -> NameConstraints | None:
    """The constraints a root carries (devtls's kind: permitted DNS and IP), or None."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    if ext.permitted_subtrees is None:
        return None  # only exclusions (another tool's root): the clients enforce them
    dns = tuple(
        g.value.lower() for g in ext.permitted_subtrees or () if isinstance(g, x509.DNSName)
    )
    networks = tuple(
        g.value
        for g in ext.permitted_subtrees or ()
        if isinstance(g, x509.IPAddress)
        and isinstance(g.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
    )
    return NameConstraints(dns, networks)


def within(constraints: NameConstraints | None, text: str) -> bool:
    """Whether a name given as text may be issued (always, without constraints)."""
    if constraints is None:
        return True
    try:
        return constraints.permits(parse_name(text))
    except UsageError:
        return False
