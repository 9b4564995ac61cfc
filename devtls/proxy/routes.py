"""Which upstream serves a request: pure matching of host and path, no I/O."""

from __future__ import annotations

from devtls.config import Route, Upstream


def host_without_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def host_matches(pattern: str, host: str) -> bool:
    """Exact match, ``*.x.test`` for exactly one more label, or ``""`` for any host."""
    if not pattern or pattern == host:
        return True
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return False


def path_matches(prefix: str, path: str) -> bool:
    """``/api`` matches ``/api``, ``/api/x`` and ``/api?q`` but not ``/apix``."""
    if prefix == "/":
        return True
    if not path.startswith(prefix):
        return False
    rest = path[len(prefix) :]
    return not rest or rest[0] in "/?"


class Router:
    """Routes sorted once: exact hosts before wildcards before catch-alls, longest path first."""

    def __init__(self, routes: tuple[Route, ...], fallback: Upstream | None) -> None:
        def rank(route: Route) -> tuple[int, int]:
            host_rank = 0 if route.host and not route.host.startswith("*.") else 1
            if not route.host:
                host_rank = 2
            return (host_rank, -len(route.path))

        self.routes = tuple(sorted(routes, key=rank))
        self.fallback = fallback
        self._exact_hosts = {r.host for r in routes if r.host and not r.host.startswith("*.")}

    def match(self, host: str, path: str) -> tuple[Route | None, Upstream | None]:
        """The route and upstream for a request; (None, None) when nothing serves it."""
        bare = host_without_port(host.lower())
        for route in self.routes:
            if host_matches(route.host, bare) and path_matches(route.path, path):
                return route, route.upstream
        return None, self.fallback

    def serves_host(self, host: str) -> bool:
        """Whether some route (or the fallback) would take requests for this host (for SNI)."""
        bare = host_without_port(host.lower())
        if self.fallback is not None or bare in self._exact_hosts:
            return True
        return any(host_matches(r.host, bare) for r in self.routes)


def upstream_target(route: Route | None, upstream: Upstream, target: str) -> str:
    """The request target sent upstream: the route prefix replaced by the upstream's path.

    ``target`` is normalized already (no dot segments); ``*`` (``OPTIONS *``) stays ``*``.
    """
    if not upstream.base_path or route is None or target == "*":
        return target
    prefix = "" if route.path == "/" else route.path
    return upstream.base_path + target[len(prefix) :] if target.startswith(prefix) else target
