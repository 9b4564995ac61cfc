"""What runs or is configured here: the router's routes and port, ./devtls.toml's settings.

Both are only read: the router is asked over its owner-only control socket (the client checks
that socket belongs to the user), and devtls.toml is parsed with serve's own validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from devtls.doctor.model import Check, Context


@dataclass
class Running:
    router_port: int | None = None
    router_hosts: list[str] = field(default_factory=list)
    default_listen: tuple[str, int] | None = None
    toml_listen: tuple[str, int] | None = None
    toml_hosts: list[str] = field(default_factory=list)
    problems: list[Check] = field(default_factory=list)

    @property
    def hosts(self) -> list[str]:
        """Every route host, each once, in order (the catch-all route has no host)."""
        seen: list[str] = []
        for host in [*self.router_hosts, *self.toml_hosts]:
            if host and host not in seen:
                seen.append(host)
        return seen


def discover(ctx: Context) -> Running:
    running = Running()
    _default_listen(ctx, running)
    _ask_router(ctx, running)
    _read_toml(ctx, running)
    return running


def connect_host(host: str) -> str:
    """Where to reach a listener on ``host``: a wildcard one answers on loopback too."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104


def _default_listen(ctx: Context, running: Running) -> None:
    from devtls.config import parse_address
    from devtls.devrun_router import LISTEN_VARIABLE
    from devtls.errors import ConfigError

    try:
        address = parse_address(ctx.default_listen, LISTEN_VARIABLE)
    except ConfigError as exc:
        found = f"{LISTEN_VARIABLE}={ctx.default_listen}: {exc.message}"
        running.problems.append(Check("router", "fail", found, f"unset {LISTEN_VARIABLE}"))
        return
    running.default_listen = (connect_host(address.host), address.port)


def _ask_router(ctx: Context, running: Running) -> None:
    from devtls.control_client import ControlClient, NotRunning
    from devtls.errors import DevtlsError

    try:
        with ControlClient.connect(timeout=ctx.timeout) as client:
            listing = client.routes()
    except NotRunning:
        return
    except DevtlsError as exc:
        running.problems.append(Check("router", "warn", f"cannot ask the router: {exc}", None))
        return
    port = listing.get("listen_port")
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        running.router_port = port
    for row in listing.get("routes", []):
        host = row.get("host") if isinstance(row, dict) else None
        if isinstance(host, str) and host != "*":
            running.router_hosts.append(_valid_host(host))


def _valid_host(host: str) -> str:
    """A host from the router, checked as a route host is (it came from another process)."""
    from devtls.config import parse_route
    from devtls.errors import ConfigError

    try:
        return parse_route(f"{host}=1").host
    except ConfigError:
        return ""


def _read_toml(ctx: Context, running: Running) -> None:
    from devtls.config import DEFAULT_CONFIG_FILE, build_config
    from devtls.errors import DevtlsError
    from devtls.serve_settings import ServeOptions

    path = ctx.cwd / DEFAULT_CONFIG_FILE
    if not path.is_file():
        return
    try:
        config = build_config(ServeOptions(), cwd=ctx.cwd)
    except DevtlsError as exc:
        running.problems.append(Check("devtls.toml", "fail", f"{path}: {exc.message}", exc.hint))
        return
    running.toml_listen = (connect_host(config.listen.host), config.listen.port)
    running.toml_hosts = [r.host for r in config.routes if r.host]
