"""``devtls serve --lan``: the LAN listeners, the onboarding page, the mDNS announcement.

The rules (which addresses, which name, what the banner says) are in devtls.lan and
devtls.proxy.onboarding; this module asks the system and opens the sockets. zeroconf,
ifaddr and segno come with the ``lan`` extra and are imported only when ``--lan`` is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from devtls.ca import LocalCA
from devtls.config import Address, Limits
from devtls.errors import DevtlsError
from devtls.lan import (
    ONBOARDING_PORT,
    InterfaceAddress,
    IPAddress,
    LanPlan,
    banner_lines,
    lan_addresses,
    mdns_label,
    qr_lines,
    uncovered_by,
)
from devtls.proxy import http1
from devtls.proxy.onboarding import OnboardingSite
from devtls.proxy.responder import ListenerState, Reply, Responder

if TYPE_CHECKING:
    from zeroconf import Zeroconf

log = logging.getLogger("devtls")

EXTRA_HINT = "run: pip install 'devtls[lan]'"
# Where Linux says whether an interface is up (IFF_UP in its flags); ifaddr does not say.
SYSFS_NET = Path("/sys/class/net")
IFF_UP = 0x1
# RFC 2863 operational states of an interface that has no link.
NO_LINK_STATES = frozenset({"down", "lowerlayerdown", "notpresent"})
# A documentation address (RFC 5737): connecting a UDP socket to it sends nothing, and
# tells which source address the default route would use.
_ROUTE_PROBE = ("192.0.2.1", 9)
# Registering probes the name three times 250 ms apart (RFC 6762 8.1), then announces;
# leaving sends goodbyes. Both are bounded so a stuck network cannot hold a stop.
MDNS_TIMEOUT = 10.0
MDNS_SERVICE_TYPE = "_https._tcp.local."


def check_installed() -> None:
    """Raise DevtlsError when the ``lan`` extra is missing, before anything is opened."""
    try:
        import ifaddr  # noqa: F401
        import segno  # noqa: F401
        import zeroconf  # noqa: F401
    except ImportError as exc:
        missing = (exc.name or "zeroconf").partition(".")[0]
        raise DevtlsError(
            f"--lan needs the {missing!r} package, which is not installed", EXTRA_HINT
        ) from None


def interface_is_up(name: str, sysfs: Path = SYSFS_NET) -> bool:
    """Whether the system says the interface is up; True where it cannot say.

    Up means administratively up (IFF_UP) and not known to be without a link: an idle
    Docker bridge or an unplugged port keeps its address but reaches nobody.
    """
    folder = sysfs / name
    try:
        flags = int((folder / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return True
    try:
        state = (folder / "operstate").read_text().strip()
    except OSError:
        state = "unknown"  # what loopback and many virtual drivers say anyway
    return bool(flags & IFF_UP) and state not in NO_LINK_STATES


def system_interfaces() -> list[InterfaceAddress]:
    """Every address of every interface, as ifaddr lists them."""
    import ifaddr

    found: list[InterfaceAddress] = []
    for adapter in ifaddr.get_adapters():
        up = interface_is_up(adapter.name)
        for ip in adapter.ips:
            text = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
            with contextlib.suppress(ValueError):
                found.append(InterfaceAddress(adapter.name, ipaddress.ip_address(text), up))
    return found


def default_route_source() -> IPAddress | None:
    """The address this host sends from by default, None without a default route."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_ROUTE_PROBE)
            return ipaddress.ip_address(probe.getsockname()[0])
    except OSError:
        return None


def discover(
    hostname: Callable[[], str] = socket.gethostname,
    interfaces: Callable[[], Iterable[InterfaceAddress]] = system_interfaces,
    preferred: Callable[[], IPAddress | None] = default_route_source,
) -> LanPlan:
    """The addresses and the .local name ``--lan`` serves (the functions are the system's)."""
    return LanPlan(mdns_label(hostname()), lan_addresses(interfaces(), preferred()))


def qr_block(text: str) -> list[str]:
    import segno

    # Error correction M: a code read off a screen, at a size a terminal can show.
    code = segno.make(text, error="m", boost_error=False)
    return qr_lines([list(row) for row in code.matrix_iter(border=2)])


def root_site(ca: LocalCA, https_urls: list[str]) -> OnboardingSite:
    names = ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else ca.subject
    return OnboardingSite(ca.cert.public_bytes(serialization.Encoding.DER), name, https_urls)


class Announcer:
    """``LABEL.local`` and the https service over mDNS, on the LAN interfaces only.

    zeroconf runs on a thread and event loop of its own: its blocking calls never hold the
    forwarder's loop, which may be uvloop.
    """

    def __init__(self, plan: LanPlan, port: int) -> None:
        self.plan = plan
        self.port = port
        self.zeroconf: Zeroconf | None = None

    def start(self) -> None:
        from zeroconf import ServiceInfo, Zeroconf

        plan = self.plan
        zc = Zeroconf(interfaces=[str(a) for a in plan.addresses], use_asyncio=False)
        self.zeroconf = zc
        info = ServiceInfo(
            MDNS_SERVICE_TYPE,
            f"devtls on {plan.label}.{MDNS_SERVICE_TYPE}",
            port=self.port,
            parsed_addresses=[str(a) for a in plan.addresses],
            server=f"{plan.local_name}.",
            properties={"path": "/"},
        )
        zc.register_service(info, allow_name_change=True)

    def close(self) -> None:
        zc, self.zeroconf = self.zeroconf, None
        if zc is not None:
            with contextlib.suppress(Exception):  # a goodbye that cannot be sent changes nothing
                zc.unregister_all_services()
            zc.close()


@dataclass
class LanRunning:
    """What ``--lan`` opened: closed with the server."""

    servers: list[asyncio.Server] = field(default_factory=list)
    listeners: list[ListenerState] = field(default_factory=list)
    announcer: Announcer | None = None
    banner: list[str] = field(default_factory=list)
    onboarding_port: int = 0

    async def close(self) -> None:
        announcer, self.announcer = self.announcer, None
        if announcer is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(asyncio.TimeoutError, OSError):
                await asyncio.wait_for(loop.run_in_executor(None, announcer.close), MDNS_TIMEOUT)


Listen = Callable[[Callable[[], asyncio.Protocol], Address], Awaitable[asyncio.Server]]


async def open_lan(
    plan: LanPlan,
    *,
    ca: LocalCA,
    tls_factory: Callable[[], asyncio.Protocol],
    tls_port: int,
    listen_host: str,
    limits: Limits,
    kind: str,
    listen: Listen,
) -> LanRunning:
    """The TLS port on every LAN address ``--listen`` does not cover already, the
    onboarding page on each, then the mDNS announcement. ``listen(factory, address)`` opens
    one listener (the server's own, with its error for a port in use)."""
    running = LanRunning()
    try:
        for address in uncovered_by(listen_host, plan.addresses):
            running.servers.append(await listen(tls_factory, Address(str(address), tls_port)))
        site = root_site(ca, plan.https_urls(tls_port))
        running.onboarding_port = await _open_onboarding(running, plan, site, limits)
        announced = await _announce(running, plan, tls_port)
        running.banner = banner_lines(plan, tls_port, running.onboarding_port, kind, announced)
        running.banner += qr_block(plan.https_urls(tls_port)[0])
    except BaseException:
        for server in running.servers:
            server.close()
        await running.close()
        raise
    return running


async def _open_onboarding(
    running: LanRunning, plan: LanPlan, site: OnboardingSite, limits: Limits
) -> int:
    loop = asyncio.get_running_loop()

    def respond(head: http1.RequestHead) -> Reply:
        data, close = site.answer(head)
        return Reply(data, close=close)

    listener = ListenerState(limits)
    running.listeners.append(listener)
    port = ONBOARDING_PORT
    opened: list[asyncio.Server] = []
    for address in plan.addresses:
        try:
            server = await loop.create_server(
                lambda: Responder(listener, respond), str(address), port, reuse_address=True
            )
        except OSError as exc:
            # Only the first address may move to a free port: all of them share one.
            if exc.errno != errno.EADDRINUSE or opened:
                raise DevtlsError(
                    f"cannot open the onboarding page on {address}:{port}: {exc.strerror or exc}",
                    "leave out --lan, or free the port",
                ) from None
            log.warning(
                "port %d is in use: the onboarding page gets a free one (printed below)", port
            )
            server = await loop.create_server(
                lambda: Responder(listener, respond), str(address), 0, reuse_address=True
            )
        port = server.sockets[0].getsockname()[1]
        opened.append(server)
        running.servers.append(server)
    return port


async def _announce(running: LanRunning, plan: LanPlan, port: int) -> bool:
    """Announce over mDNS; a network that refuses is one warning, the IP URLs still work."""
    announcer = Announcer(plan, port)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, announcer.start), MDNS_TIMEOUT)
    except Exception as exc:  # zeroconf's own errors too: none of them stops serving
        log.warning(
            "lan: %s could not be announced over mDNS (%s); the address URLs work",
            plan.local_name,
            exc or type(exc).__name__,
        )
        with contextlib.suppress(Exception):
            await loop.run_in_executor(None, announcer.close)
        return False
    running.announcer = announcer
    return True
