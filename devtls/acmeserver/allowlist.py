"""Which identifiers the ACME server may issue for, and their syntax (RFC 8555 7.1.4, RFC 8738).

A pattern is a DNS name (``localhost``), ``*.suffix`` or ``.suffix`` (every name under the
suffix, at any depth), an IP address, or an IP network (``127.0.0.0/8``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from devtls.acmeserver.problems import AcmeProblem
from devtls.errors import UsageError
from devtls.names import NameKind, parse_name

DEFAULT_ALLOW = ("localhost", "*.localhost", "*.test", "*.internal", "127.0.0.0/8", "::1")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Identifier:
    """A validated identifier: ``dns`` with a lower-case name, or ``ip`` in canonical form."""

    type: str
    value: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "value": self.value}


@dataclass(frozen=True)
class AllowList:
    names: frozenset[str]
    suffixes: tuple[str, ...]  # each starts with "."
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, patterns: tuple[str, ...] | list[str]) -> AllowList:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for pattern in patterns or DEFAULT_ALLOW:
            text = pattern.strip().lower()
            try:
                networks.append(ipaddress.ip_network(text, strict=True))
                continue
            except ValueError:
                pass
            under = text[2:] if text.startswith("*.") else text[1:] if text[:1] == "." else None
            try:
                name = parse_name(under if under is not None else text)
            except UsageError:
                name = None
            if name is None or name.kind is not NameKind.DNS or name.value.startswith("*"):
                raise UsageError(
                    f"--allow {pattern!r} is neither a DNS name, '*.suffix', an IP nor a network",
                    "use e.g. --allow localhost --allow '*.test' --allow 127.0.0.0/8",
                )
            if under is not None:
                suffixes.append("." + name.value)
            else:
                names.add(name.value)
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def allows(self, identifier: Identifier) -> bool:
        if identifier.type == "ip":
            address = ipaddress.ip_address(identifier.value)
            return any(address in network for network in self.networks)
        value = identifier.value
        return value in self.names or any(value.endswith(s) for s in self.suffixes)

    def describe(self) -> str:
        parts = sorted(self.names) + [f"*{s}" for s in self.suffixes]
        return ", ".join(parts + [str(n) for n in self.networks])


def parse_identifier(raw: object) -> Identifier:
    """An identifier from a newOrder payload, validated; AcmeProblem if it is not one."""
    if not isinstance(raw, dict) or not isinstance(raw.get("value"), str):
        raise AcmeProblem("malformed", "an identifier is an object with 'type' and 'value'")
    kind, value = raw.get("type"), raw["value"]
    shown = {"type": str(kind)[:16], "value": value[:256]}
    if kind == "ip":
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise AcmeProblem(
                "malformed", f"{value[:64]!r} is not an IP address", identifier=shown
            ) from None
        # RFC 8738 3: the textual form of RFC 1123 / RFC 5952, nothing else. A zone is no
        # part of that (a certificate cannot hold one) and its text is whatever the client
        # sends, newlines included; the address without it would still pass the allow-list.
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            bare = address.compressed.partition("%")[0]
            raise AcmeProblem(
                "malformed", f"an IP identifier has no zone: write {bare}", identifier=shown
            )
        if str(address) != value:
            raise AcmeProblem("malformed", f"write the IP address as {address}", identifier=shown)
        return Identifier("ip", value)
    if kind != "dns":
        raise AcmeProblem(
            "unsupportedIdentifier",
            f"identifier type {shown['type']!r}: only dns and ip",
            identifier=shown,
        )
    if value.startswith("*."):
        raise AcmeProblem(
            "rejectedIdentifier",
            f"{value[:64]} is a wildcard, which needs dns-01; this server offers http-01 and"
            " tls-alpn-01",
            identifier=shown,
        )
    try:
        name = parse_name(value)
    except UsageError:
        name = None
    if name is None or name.kind is not NameKind.DNS or name.value != value.lower():
        raise AcmeProblem(
            "rejectedIdentifier", f"{value[:64]!r} is not a DNS name", identifier=shown
        )
    return Identifier("dns", name.value)
