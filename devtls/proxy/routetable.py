"""The routes of a running router in two layers, pure: no I/O.

The base layer comes from the settings (``devtls.toml`` or ``--route``) and is replaced whole
on a reload; the control layer holds the routes added over the control socket and survives
reloads. A control route shadows a base route with the same host and path. A held control
route belongs to one control connection (its lease) and goes when that connection does.
"""

from __future__ import annotations

from dataclasses import dataclass

from devtls.config import Route, Upstream
from devtls.errors import DevtlsError

SOURCE_CONFIG = "config"
SOURCE_COMMAND_LINE = "command-line"
SOURCE_CONTROL = "control"


class RouteRefused(DevtlsError):
    """A change of the routes that is not made (held by another process, not there)."""


@dataclass(frozen=True)
class Entry:
    route: Route
    source: str
    lease: int | None = None  # the control connection holding it
    held_by: int | None = None  # that connection's process id, when known


def route_key(route: Route) -> tuple[str, str]:
    return (route.host, route.path)


def target_text(host: str, path: str) -> str:
    """How a user writes a route's HOST[/PATH]."""
    return (host or "*") + ("" if path == "/" else path)


class RouteTable:
    def __init__(
        self,
        base: tuple[Route, ...] = (),
        base_source: str = SOURCE_CONFIG,
        fallback: Upstream | None = None,
    ) -> None:
        self._base: dict[tuple[str, str], Entry] = {}
        self._control: dict[tuple[str, str], Entry] = {}
        self.fallback = fallback
        self.fallback_source = base_source
        self.set_base(base, base_source, fallback)

    def set_base(self, routes: tuple[Route, ...], source: str, fallback: Upstream | None) -> None:
        """The settings' routes, replaced whole (a reload); control routes stay."""
        self._base = {route_key(r): Entry(r, source) for r in routes}
        self.fallback = fallback
        self.fallback_source = source

    def add(
        self, route: Route, *, lease: int | None = None, pid: int | None = None, force: bool = False
    ) -> None:
        """Add or replace a control route; one held by another connection needs ``force``."""
        key = route_key(route)
        current = self._control.get(key)
        if (
            current is not None
            and current.lease is not None
            and current.lease != lease
            and not force
        ):
            holder = f"process {current.held_by}" if current.held_by else "another process"
            raise RouteRefused(
                f"route {target_text(*key)} is held by {holder}",
                "stop that process, choose another name, or add it with force",
            )
        self._control[key] = Entry(route, SOURCE_CONTROL, lease, pid if lease is not None else None)

    def remove(self, host: str, path: str) -> Route:
        """Remove a control route; a route from the settings is changed in its file."""
        key = (host, path)
        entry = self._control.pop(key, None)
        if entry is not None:
            return entry.route
        base = self._base.get(key)
        if base is not None:
            where = "devtls.toml" if base.source == SOURCE_CONFIG else "the command line"
            raise RouteRefused(
                f"route {target_text(*key)} comes from {where}",
                f"remove it from {where} (then reload with SIGHUP, or restart)"
                if base.source == SOURCE_CONFIG
                else "restart devtls serve without that --route",
            )
        raise RouteRefused(
            f"there is no route {target_text(*key)}", "'devtls routes' lists the routes"
        )

    def release(self, lease: int) -> list[Route]:
        """The connection ``lease`` is gone: its held routes go too."""
        gone = [key for key, entry in self._control.items() if entry.lease == lease]
        return [self._control.pop(key).route for key in gone]

    def entries(self) -> list[Entry]:
        """The routes in effect: control routes, then the base routes they do not shadow."""
        shadowed = self._control.keys()
        return [*self._control.values(), *(e for k, e in self._base.items() if k not in shadowed)]

    def routes(self) -> tuple[Route, ...]:
        return tuple(entry.route for entry in self.entries())
