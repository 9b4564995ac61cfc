"""``devtls serve --lan``, the pure part: which addresses are the LAN, the mDNS name, the URLs.

Nothing here asks the system anything: the interfaces and the host name come in as values
(devtls.proxy.lan reads them), so the rules are tested without a network.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from devtls.errors import DevtlsError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Plain HTTP for the onboarding page: a phone that does not trust the root yet cannot open
# an https page without a warning, so the root itself comes over http. The port is fixed
# so that a bookmark, or a QR code printed once, stays right across restarts; it is above
# 1024 (no privileges needed), beside the default TLS port 8443 so the two read as a pair,
# and none that dev servers take by default (3000, 4200, 5173, 8000, 8080, 8888). When
# another program holds it, the OS picks a free one and the banner prints that.
ONBOARDING_PORT = 8442

# RFC 6762 names are DNS labels; one label under .local, at most 63 bytes (RFC 1035 2.3.4).
MAX_LABEL = 63
_NOT_IN_LABEL = re.compile(r"[^a-z0-9-]+")

# fec0::/10 was site-local, deprecated by RFC 3879; nothing should be handed out in it.
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")


@dataclass(frozen=True)
class InterfaceAddress:
    """One address of one network interface, as the system lists it."""

    interface: str
    address: IPAddress
    up: bool = True


def is_lan_address(address: IPAddress) -> bool:
    """An address another machine on the network can reach this one at.

    Loopback, link-local (169.254/16, fe80::/10: they need an interface named, and browsers
    do not take a zone in a URL), multicast and unspecified addresses are not. For IPv6 this
    is what Linux calls scope global, unique local addresses (fd00::/8) included: a home
    router hands those out for the LAN.
    """
    if address.is_loopback or address.is_link_local or address.is_multicast:
        return False
    if address.is_unspecified:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped is None and address not in _SITE_LOCAL
    # 240/4 (and the broadcast address in it) is reserved: no host has such an address.
    return not address.is_reserved


def lan_addresses(
    entries: Iterable[InterfaceAddress], preferred: IPAddress | None = None
) -> tuple[IPAddress, ...]:
    """The LAN addresses of the interfaces that are up, without repeats: ``preferred`` (the
    source address of the default route) first, then IPv4 before IPv6, each in the order
    listed. The first is the one the banner's QR code names."""
    found: list[IPAddress] = []
    for entry in entries:
        if entry.up and is_lan_address(entry.address) and entry.address not in found:
            found.append(entry.address)
    found.sort(key=lambda a: (a != preferred, a.version))
    return tuple(found)


def mdns_label(hostname: str) -> str:
    """The host's name as one DNS label for ``LABEL.local``.

    The first label of what the system calls the host (``build-box.corp.test`` is
    ``build-box``; macOS's ``Mac-Mini.local`` is ``mac-mini``), in lower case, every run of
    other characters made one ``-``.
    """
    first = hostname.strip().split(".", 1)[0].lower()
    label = _NOT_IN_LABEL.sub("-", first).strip("-")[:MAX_LABEL].strip("-")
    if not label:
        raise DevtlsError(
            f"the host name {hostname!r} makes no name under .local",
            "give this machine a host name of letters and digits (hostnamectl set-hostname)",
        )
    return label


def url_host(address: IPAddress) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def port_suffix(port: int, default: int) -> str:
    return "" if port == default else f":{port}"


@dataclass(frozen=True)
class LanPlan:
    """What ``--lan`` serves on: the host's LAN addresses and its name under .local."""

    label: str
    addresses: tuple[IPAddress, ...]

    def __post_init__(self) -> None:
        if not self.addresses:
            raise DevtlsError(
                "--lan found no LAN address: no interface that is up has one",
                "connect this machine to a network, or leave out --lan",
            )

    @property
    def local_name(self) -> str:
        return f"{self.label}.local"

    @property
    def names(self) -> tuple[str, ...]:
        """What the leaf covers besides the usual names."""
        return (self.local_name, *(str(a) for a in self.addresses))

    def https_urls(self, port: int) -> list[str]:
        suffix = port_suffix(port, 443)
        return [f"https://{url_host(a)}{suffix}/" for a in self.addresses] + [
            f"https://{self.local_name}{suffix}/"
        ]

    def onboarding_url(self, port: int) -> str:
        return f"http://{url_host(self.addresses[0])}{port_suffix(port, 80)}/"


def uncovered_by(listen_host: str, addresses: Sequence[IPAddress]) -> list[IPAddress]:
    """The LAN addresses that need a listener of their own besides ``--listen``: none of one
    family when it listens on every address of that family already."""
    every = {"": (4, 6), "0.0.0.0": (4,), "::": (6,)}.get(listen_host, ())  # noqa: S104
    return [a for a in addresses if a.version not in every and str(a) != listen_host]


def qr_lines(matrix: Sequence[Sequence[int]]) -> list[str]:
    """A QR code's modules (1 is dark) as text, two rows a line in half blocks.

    Dark modules are drawn as the foreground: on a terminal with light text on a dark
    background the code comes out inverted, which phone cameras read as well.
    """
    blocks = {(0, 0): " ", (1, 0): "\u2580", (0, 1): "\u2584", (1, 1): "\u2588"}
    rows = [list(row) for row in matrix]
    if len(rows) % 2:
        rows.append([0] * (len(rows[0]) if rows else 0))
    return [
        "".join(blocks[(1 if t else 0, 1 if b else 0)] for t, b in zip(top, bottom, strict=True))
        for top, bottom in zip(rows[::2], rows[1::2], strict=True)
    ]


def banner_lines(
    plan: LanPlan, tls_port: int, onboarding_port: int, kind: str, announced: bool
) -> list[str]:
    """What ``serve --lan`` prints besides the usual lines: that it is reachable from the
    network, where, and where a phone gets the root."""
    urls = plan.https_urls(tls_port)
    if kind != "https":
        urls = [kind + u[len("https") :] for u in urls]
    if not announced:
        urls = urls[:-1]  # nobody answers for LABEL.local
    lines = [
        "devtls: --lan: this server is reachable from the network: anyone on it can connect",
        *(f"devtls: lan: {url}" for url in urls),
    ]
    if announced:
        lines.append(f"devtls: lan: {plan.local_name} is announced over mDNS")
    lines.append(
        "devtls: lan: on a phone or another machine, install the devtls root first: "
        f"{plan.onboarding_url(onboarding_port)}"
    )
    return lines
