"""Settings of ``devtls serve``: parsing of upstreams, routes and addresses, TOML loading.

Everything here is immutable and validated on construction; a bad value raises
ConfigError naming the setting and an example of a good one.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from devtls._files import NotRegularFileError, read_regular_file
from devtls.errors import ConfigError, UsageError
from devtls.names import NameKind, parse_name
from devtls.serve_settings import (
    BY_FIELD,
    DEFAULT_LISTEN,
    DEFAULT_NAMES,
    LETS_ENCRYPT_STAGING,
    SETTINGS,
    TOML_KEYS,
    ServeOptions,
)

__all__ = ["DEFAULT_LISTEN", "DEFAULT_NAMES", "ServeConfig", "ServeOptions", "build_config"]

DEFAULT_CONFIG_FILE = "devtls.toml"

# Which Host an upstream is sent: the browser's (as nginx and Caddy do), or the upstream's own
# address (http-proxy's changeOrigin), which dev servers' host checks accept unconfigured.
HostHeader = Literal["client", "upstream"]
HOST_HEADERS: tuple[HostHeader, ...] = ("client", "upstream")


@dataclass(frozen=True)
class Address:
    """Where to listen or connect: ``host`` may be "" for every interface."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host or '*'}:{self.port}"

    @property
    def url_host(self) -> str:
        """The host as a browser should be pointed at it."""
        if self.host in ("", "0.0.0.0", "::", "127.0.0.1", "::1"):  # noqa: S104 - a name only
            # The minted certificate covers "localhost", and browsers treat it as secure.
            return "localhost"
        return f"[{self.host}]" if ":" in self.host else self.host


@dataclass(frozen=True)
class Upstream:
    """Where requests go: plain HTTP over TCP or a unix socket, or HTTPS."""

    scheme: Literal["http", "https", "unix"]
    host: str = ""
    port: int = 0
    socket_path: str = ""
    # A path in the upstream URL replaces the route's path prefix (as nginx's proxy_pass).
    base_path: str = ""
    # The built-in demo gets the TLS details of the client connection as headers.
    wants_tls_info: bool = False
    # "upstream": Host names the upstream (the browser's goes in X-Forwarded-Host).
    host_header: HostHeader = "client"
    # Not "": the app's name on the page answered while it refuses connections (a dev server
    # started by `devtls run` that is still booting), instead of a 502.
    starting: str = ""

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}"

    @property
    def authority(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Route:
    host: str  # lower case; "*.app.test" matches one label; "" matches every host
    path: str  # "/" or a prefix like "/api"
    upstream: Upstream

    def __str__(self) -> str:
        path = "" if self.path == "/" else self.path
        return f"{self.host or '*'}{path} -> {self.upstream}"


@dataclass(frozen=True)
class Limits:
    """Timeouts (seconds) and sizes; each has a ``--limit NAME=VALUE`` override."""

    handshake_timeout: float = 10.0
    # Slowloris: a request head must arrive within this time.
    head_timeout: float = 30.0
    # The longest pause while a request body arrives (nginx's client_body_timeout).
    body_timeout: float = 60.0
    # HTTP/2: the longest wait for a client's window to take a stream's response (nginx's
    # send_timeout); the stream is reset after it.
    send_timeout: float = 60.0
    # nginx's keepalive_timeout default.
    idle_timeout: float = 75.0
    upstream_connect_timeout: float = 10.0
    # nginx's proxy_read_timeout default: the longest silence from an upstream.
    upstream_timeout: float = 60.0
    # Bounded wait for requests in flight when stopping.
    drain_timeout: float = 10.0
    max_connections: int = 1024
    # Connections to one upstream at once, HTTP/2 streams and HTTP/1 clients together; more
    # requests wait for one (nginx's max_conns). WebSockets are not counted.
    max_upstream_connections: int = 256
    max_request_line: int = 8 * 1024
    max_head_size: int = 32 * 1024
    max_headers: int = 100
    # New names given a certificate minted on demand, per minute; others get the default
    # certificate meanwhile (each mint costs a millisecond of CPU; a client can invent names).
    mint_per_minute: int = 60

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            expected = int if item.type == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, expected) or value <= 0:
                raise ConfigError(
                    f"limit {item.name} must be a positive number, not {value!r}",
                    f"for example {item.name}={item.default}",
                )


CHALLENGES = ("http-01", "tls-alpn-01")


@dataclass(frozen=True)
class AcmeSettings:
    """Certificates from an ACME CA (RFC 8555) instead of the local CA."""

    directory: str = BY_FIELD["acme_directory"].default
    hosts: tuple[str, ...] = ()  # the allow-list: no other name is ever ordered
    email: str | None = None
    agree_tos: bool = False
    http: Address = field(default_factory=lambda: Address("", 80))
    key_type: Literal["rsa", "ecdsa"] = BY_FIELD["acme_key_type"].default
    cache: Path | None = None
    # The roots the ACME server's TLS must chain to; None: the OS roots plus the devtls root.
    ca_root: Path | None = None
    challenge: Literal["http-01", "tls-alpn-01"] = BY_FIELD["acme_challenge"].default
    # Renew when this fraction of the lifetime has passed (Let's Encrypt advises two thirds).
    renew_fraction: float = BY_FIELD["acme_renew_fraction"].default
    check_interval: float = BY_FIELD["acme_check_interval"].default


@dataclass(frozen=True)
class ServeConfig:
    listen: Address = field(default_factory=lambda: parse_address(DEFAULT_LISTEN))
    upstream: Upstream | None = None
    routes: tuple[Route, ...] = ()
    # What UPSTREAM and the routes without their own setting were given (routes added
    # while running get it too).
    host_header: HostHeader = "client"
    names: tuple[str, ...] = DEFAULT_NAMES
    redirect_http: Address | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tcp: bool = BY_FIELD["tcp"].default
    # ALPN protocols offered in --tcp mode (none unless given).
    alpn: tuple[str, ...] = ()
    # HTTP mode offers h2 and http/1.1, or with --http1-only (http2 = false) http/1.1 alone.
    http2: bool = not BY_FIELD["http1_only"].default
    quiet: bool = BY_FIELD["quiet"].default
    # Without an upstream and routes: the built-in demo (else a 404 listing the live routes).
    demo_page: bool = BY_FIELD["demo"].default
    limits: Limits = field(default_factory=Limits)
    acme: AcmeSettings | None = None
    workers: int = BY_FIELD["workers"].default
    # Also the LAN addresses, HOSTNAME.local and the onboarding page (devtls.proxy.lan).
    lan: bool = BY_FIELD["lan"].default

    @property
    def offered_alpn(self) -> tuple[str, ...]:
        """The ALPN protocols the TLS port offers, in the server's order of preference.

        A protocol offered in --tcp mode is a promise about the upstream (h2 for a gRPC
        server): a client told h2 by us in front of an HTTP/1.1 server gets nothing it can
        read, so --tcp offers only what --alpn says.
        """
        if self.tcp:
            return self.alpn
        return ("h2", "http/1.1") if self.http2 else ("http/1.1",)

    @property
    def demo(self) -> bool:
        return self.demo_page and self.upstream is None and not self.routes

    def certificate_names(self) -> tuple[str, ...]:
        """The --names plus every concrete route host (wildcards included), deduplicated."""
        names = list(self.names)
        for route in self.routes:
            if route.host and route.host not in names:
                names.append(route.host)
        return tuple(names)


# -- parsing -------------------------------------------------------------------------------


def parse_port(text: str, what: str, *, allow_any: bool = False) -> int:
    """A port number; 0 ("any free port") only where we listen."""
    lowest = 0 if allow_any else 1
    if not text.isdigit() or not lowest <= int(text) < 65536:
        raise ConfigError(f"{what}: {text!r} is not a port number", "use 1 to 65535")
    return int(text)


def parse_address(text: str, what: str = "--listen", *, listening: bool = True) -> Address:
    """``HOST:PORT``, ``[V6]:PORT``, or ``:PORT`` for every interface."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"{what}: {text!r} is not an address", "use [::1]:8443")
        _check_ip(host, what, text)
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ConfigError(f"{what}: {text!r} has no port", "use HOST:PORT, e.g. 127.0.0.1:8443")
        if ":" in host:
            raise ConfigError(f"{what}: {text!r} is ambiguous", "write IPv6 as [::1]:8443")
    if host and not host.replace("-", "").replace(".", "").isalnum() and ":" not in host:
        raise ConfigError(f"{what}: {host!r} is not a host name or IP address")
    return Address(host, parse_port(port, what, allow_any=listening))


def _check_ip(host: str, what: str, text: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not an IPv6 address") from None


def parse_upstream(
    text: str, what: str = "UPSTREAM", *, host_header: HostHeader = "client"
) -> Upstream:
    """``3000``, ``host:port``, ``http(s)://host[:port][/path]`` or ``unix:/path.sock``."""
    return replace(_parse_upstream(text, what), host_header=check_host_header(host_header))


def check_host_header(value: object, what: str = "--host-header") -> HostHeader:
    for choice in HOST_HEADERS:
        if value == choice:
            return choice
    raise ConfigError(
        f"{what} {value!r} is neither 'client' nor 'upstream'",
        "'client' passes the browser's Host, 'upstream' sends the upstream's address",
    )


def _parse_upstream(text: str, what: str) -> Upstream:
    text = text.strip()
    if not text:
        raise ConfigError(f"{what} is empty", "use a port like 3000, host:port, a URL or unix:PATH")
    if text.isdigit():
        # localhost: 127.0.0.1 or ::1, whichever the dev server listens on.
        return Upstream("http", "localhost", parse_port(text, what))
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError(f"{what}: {text!r} names no socket", "use unix:/path/to/app.sock")
        return Upstream("unix", socket_path=path)
    if "://" not in text:
        address = parse_address(text, what, listening=False)
        return Upstream("http", address.host or "localhost", address.port)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{what}: {text!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"{what}: scheme {parts.scheme!r} is not supported", "use http://, https:// or unix:"
        )
    if not parts.hostname:
        raise ConfigError(f"{what}: {text!r} names no host")
    if parts.query or parts.fragment or parts.username:
        raise ConfigError(f"{what}: {text!r} may not carry a query, fragment or user")
    default_port = 443 if parts.scheme == "https" else 80
    base_path = parts.path.rstrip("/")
    return Upstream(
        "https" if parts.scheme == "https" else "http",
        parts.hostname,
        port or default_port,
        base_path=base_path,
    )


def parse_route(
    text: str,
    *,
    host_header: HostHeader = "client",
    label: str | None = None,
    example: str = "e.g. --route 'api.test/v1=3001'",
) -> Route:
    """``HOST[/PATH]=UPSTREAM``; HOST may be a wildcard (``*.app.test``) or ``*`` for any.

    Errors start with ``label`` (``--route 'TEXT'`` unless told) and end with ``example``.
    """
    label = label or f"--route {text!r}"
    target, sep, upstream_text = text.partition("=")
    if not sep or not target.strip() or not upstream_text.strip():
        raise ConfigError(f"{label} is not HOST[/PATH]=UPSTREAM", example)
    target = target.strip()
    host, slash, path = target.partition("/")
    path = "/" + path.rstrip("/") if slash else "/"
    if path != "/" and ("//" in path or any(c in path for c in "?# ")):
        raise ConfigError(f"{label}: {path!r} is not a path prefix", example)
    if host == "*":
        host = ""
    elif host:
        host = host.lower()
        try:
            name = parse_name(host)
        except UsageError:
            name = None
        if name is None or name.kind not in (NameKind.DNS, NameKind.IP):
            raise ConfigError(f"{label}: {host!r} is not a host name or IP", example)
        host = name.value
    else:
        raise ConfigError(f"{label} names no host", "use '*' to match every host")
    upstream = parse_upstream(upstream_text, label, host_header=host_header)
    return Route(host, path, upstream)


_ROUTE_TABLE_KEYS = frozenset({"route", "host_header"})


def route_setting(item: object, host_header: HostHeader) -> Route:
    """One entry of ``routes``: ``"HOST[/PATH]=UPSTREAM"``, or a table of that ``route`` and
    its own ``host_header`` (``{ route = "app.test=5173", host_header = "upstream" }``)."""
    if not isinstance(item, dict):
        return parse_route(str(item), host_header=host_header)
    unknown = set(item) - _ROUTE_TABLE_KEYS
    text = item.get("route")
    if unknown or not isinstance(text, str):
        raise ConfigError(
            f"routes: {item!r} is not a route table",
            'e.g. { route = "app.test=5173", host_header = "upstream" }',
        )
    own = item.get("host_header", host_header)
    return parse_route(text, host_header=check_host_header(own, f"routes: {text!r}: host_header"))


# RFC 7301 3.1: a protocol name is 1 to 255 bytes. A list longer than this is a mistake.
MAX_ALPN_NAME = 255
MAX_ALPN_PROTOCOLS = 16


def parse_alpn(value: object, what: str = "--alpn") -> tuple[str, ...]:
    """``h2,http/1.1`` (or a TOML list) -> the protocol names, in order of preference."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{what} {value!r} is not a list of protocols", "e.g. h2,http/1.1")
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{what}: {item!r} is not a protocol name", "e.g. h2,http/1.1")
        name = item.strip()
        if not name:
            raise ConfigError(f"{what} {value!r} has an empty protocol name", "e.g. h2,http/1.1")
        if not all("!" <= c <= "~" for c in name):
            raise ConfigError(
                f"{what}: {name!r} is not printable ASCII without spaces", "e.g. h2,http/1.1"
            )
        if len(name) > MAX_ALPN_NAME:
            raise ConfigError(f"{what}: a protocol name is at most {MAX_ALPN_NAME} bytes")
        names.append(name)
    if len(names) > MAX_ALPN_PROTOCOLS:
        raise ConfigError(f"{what}: at most {MAX_ALPN_PROTOCOLS} protocols")
    return tuple(names)


def parse_limits(items: list[str]) -> dict[str, int | float]:
    valid = {f.name: f.type for f in fields(Limits)}
    result: dict[str, int | float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in valid:
            raise ConfigError(
                f"--limit {item!r} is not NAME=VALUE with a known NAME",
                "known: " + ", ".join(valid),
            )
        try:
            result[name] = float(value) if "." in value else int(value)
        except ValueError:
            raise ConfigError(f"--limit {item!r}: {value!r} is not a number") from None
    return result


# -- TOML ---------------------------------------------------------------------------------

# The tables of devtls.toml besides the settings' own keys.
_TOML_TABLES = frozenset({"limits", "acme"})
# A devtls.toml of many routes is a few KiB; a file far larger is not one, and /dev/zero (or a
# sparse file of a gigabyte) would otherwise be read whole into memory.
MAX_CONFIG_BYTES = 1024 * 1024
# Several PEM roots are a few KiB each; the same bound as for devtls.toml.
MAX_CA_ROOT_BYTES = 1024 * 1024


def load_toml(path: Path) -> dict[str, Any]:
    """Read a devtls.toml; the keys are the long option names with ``_`` (see README)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        # Not read_regular_file: ``--config <(...)`` is a pipe, and the user's own choice.
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path} is too large for a devtls.toml (over {MAX_CONFIG_BYTES // 1024} KiB)",
            "point --config at the settings file, or move this one away",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 (byte {exc.start + 1} is not), which TOML requires",
            "save it as UTF-8 (iconv -f latin1 -t utf-8 converts a Latin-1 file)",
        ) from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and tables by recursion
        raise ConfigError(
            f"{path} nests arrays or tables too deeply to be a devtls.toml",
            "see the README for its settings",
        ) from None
    known = TOML_KEYS[""] | _TOML_TABLES
    unknown = set(data) - known
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting {sorted(unknown)[0]!r}",
            "known settings: " + ", ".join(sorted(known)),
        )
    for table in _TOML_TABLES:
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError(f"{path}: {table} must be a table")
    unknown = set(data.get("acme", {})) - TOML_KEYS["acme"]
    if unknown:
        raise ConfigError(
            f"{path}: unknown acme setting {sorted(unknown)[0]!r}",
            "known: " + ", ".join(sorted(TOML_KEYS["acme"])),
        )
    return data


def resolve_settings(
    options: ServeOptions, file_data: dict[str, Any], config_file: Path | None
) -> dict[str, Any]:
    """Each setting's raw value: the flag, else the file's (of the declared type), else the
    default."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        value = options.given(setting.field)
        if value is None and setting.toml is not None:
            source = file_data.get(setting.table, {}) if setting.table else file_data
            value = source.get(setting.toml)
            if value is not None:
                types = setting.toml_types
                if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                    where = f"{setting.table}." if setting.table else ""
                    raise ConfigError(
                        f"{config_file}: {where}{setting.toml} has the wrong type "
                        f"({type(value).__name__})"
                    )
                if setting.negated_in_file:
                    value = not value
        values[setting.field] = setting.default if value is None else value
    return values


def build_config(options: ServeOptions, cwd: Path | None = None) -> ServeConfig:
    """Merge flags over the TOML file over defaults, validating everything."""
    file_data: dict[str, Any] = {}
    config_file = options.given("config_file")
    if config_file is None:
        candidate = (cwd or Path.cwd()) / DEFAULT_CONFIG_FILE
        if candidate.is_file():
            config_file = candidate
    if config_file is not None:
        file_data = load_toml(config_file)

    values = resolve_settings(options, file_data, config_file)
    names = values["names"]
    tcp = values["tcp"]
    alpn = values["alpn"]
    workers = values["workers"]
    cert, key = values["cert_file"], values["key_file"]
    limit_values = parse_limits([f"{k}={v}" for k, v in file_data.get("limits", {}).items()])
    limit_values.update(parse_limits(list(values["limits"])))

    for name in names:
        try:
            parse_name(str(name))
        except UsageError as exc:
            raise ConfigError(f"--name {name!r}: {exc}") from None
    if (cert is None) != (key is None):
        raise ConfigError("--cert and --key go together", "give both files, or neither")
    _check_workers(workers)
    if alpn is not None and not tcp:
        raise ConfigError(
            "--alpn applies only with --tcp",
            "HTTP mode offers h2 and http/1.1; add --tcp or drop --alpn",
        )
    upstream, redirect = values["upstream"], values["redirect_http"]
    host_header = check_host_header(values["host_header"])
    config = ServeConfig(
        listen=parse_address(str(values["listen"])),
        upstream=(
            parse_upstream(str(upstream), host_header=host_header) if upstream is not None else None
        ),
        routes=tuple(route_setting(r, host_header) for r in values["routes"]),
        host_header=host_header,
        names=tuple(str(n) for n in names),
        redirect_http=parse_address(str(redirect), "--redirect-http") if redirect else None,
        cert_file=Path(cert) if cert is not None else None,
        key_file=Path(key) if key is not None else None,
        tcp=bool(tcp),
        alpn=parse_alpn(alpn) if alpn is not None else (),
        http2=not values["http1_only"],
        quiet=bool(values["quiet"]),
        demo_page=bool(values["demo"]),
        limits=replace(Limits(), **limit_values),  # type: ignore[arg-type] # checked in Limits
        workers=workers,
        lan=bool(values["lan"]),
    )
    _check_lan(config)
    if config.tcp and config.upstream is None and not config.routes:
        raise ConfigError("--tcp needs an UPSTREAM", "e.g. devtls serve --tcp 5432")
    if values["acme"]:
        if config.cert_file is not None:
            raise ConfigError("--acme and --cert cannot be used together", "choose one")
        if config.workers > 1:
            raise ConfigError(
                "--acme runs in one process", "leave out --workers (one worker orders certificates)"
            )
        config = replace(config, acme=_acme_settings(values, config))
    return config


MAX_WORKERS = 64


def _check_lan(config: ServeConfig) -> None:
    if not config.lan:
        return
    if config.cert_file is not None:
        raise ConfigError(
            "--lan mints its certificate for the LAN addresses, so --cert cannot be used with it",
            "leave out --cert and --key, or --lan",
        )
    if config.workers > 1:
        raise ConfigError("--lan runs in one process", "leave out --workers")


def _check_workers(workers: int) -> None:
    if isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers {workers!r} is out of range", f"give 1 to {MAX_WORKERS}")
    if workers > 1 and not (sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")):
        raise ConfigError(
            "--workers needs Linux (SO_REUSEPORT spreads connections only there)",
            "leave out --workers",
        )


def check_ca_root_file(path: Path) -> int:
    """How many certificates the --acme-ca-root file holds; ConfigError if none or unreadable."""
    from cryptography import x509

    hint = "give the PEM file of the ACME CA's root (step-ca: $(step path)/certs/root_ca.crt)"
    try:
        data = read_regular_file(path, MAX_CA_ROOT_BYTES)
    except OSError as exc:
        raise ConfigError(f"--acme-ca-root {path}: cannot read it ({exc.strerror})", hint) from None
    except NotRegularFileError as exc:
        raise ConfigError(f"--acme-ca-root {path} is {exc.kind}, not a PEM file", hint) from None
    if len(data) > MAX_CA_ROOT_BYTES:
        raise ConfigError(
            f"--acme-ca-root {path} is too large to be a PEM file of roots"
            f" (over {MAX_CA_ROOT_BYTES // 1024} KiB)",
            hint,
        )
    try:
        roots = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(
            f"--acme-ca-root {path} holds no PEM certificate",
            "give the ACME CA's root as PEM (-----BEGIN CERTIFICATE-----)",
        ) from None
    return len(roots)


def _acme_settings(values: dict[str, Any], config: ServeConfig) -> AcmeSettings:
    directory = str(values["acme_directory"])
    if directory == "staging":
        directory = LETS_ENCRYPT_STAGING
    if not directory.startswith("https://"):
        raise ConfigError(f"--acme-directory {directory!r} is not an https:// URL")
    hosts = tuple(str(h).lower() for h in values["acme_hosts"])
    if not hosts:
        hosts = tuple(r.host for r in config.routes if r.host and "*" not in r.host)
    if not hosts:
        raise ConfigError(
            "--acme has no host names to order certificates for",
            "add --route HOST=UPSTREAM or --acme-host NAME",
        )
    for host in hosts:
        try:
            name = parse_name(host)
        except UsageError as exc:
            raise ConfigError(f"--acme-host {host!r}: {exc}") from None
        if name.kind is not NameKind.DNS or "*" in host:
            raise ConfigError(f"--acme-host {host!r} must be a DNS name without wildcards")
    http_text = values["acme_http"]
    if http_text is not None:
        http = parse_address(str(http_text), "--acme-http")
    else:
        http = config.redirect_http or Address("", 80)
    key_type = str(values["acme_key_type"])
    if key_type not in ("rsa", "ecdsa"):
        raise ConfigError(f"--acme-key-type {key_type!r}", "use rsa or ecdsa")
    challenge = str(values["acme_challenge"])
    if challenge not in CHALLENGES:
        raise ConfigError(f"--acme-challenge {challenge!r}", "use http-01 or tls-alpn-01")
    cache = values["acme_cache"]
    renew_fraction = float(values["acme_renew_fraction"])
    check_interval = float(values["acme_check_interval"])
    if not 0 <= renew_fraction < 1 or check_interval <= 0:
        raise ConfigError("acme renew_fraction must be in [0, 1) and check_interval positive")
    email = values["acme_email"]
    ca_root = values["acme_ca_root"]
    if ca_root is not None:
        check_ca_root_file(Path(ca_root))
    return AcmeSettings(
        directory=directory,
        hosts=hosts,
        email=str(email) if email else None,
        agree_tos=bool(values["acme_agree_tos"]),
        http=http,
        key_type=key_type,  # type: ignore[arg-type] # checked above
        cache=Path(cache) if cache else None,
        ca_root=Path(ca_root) if ca_root is not None else None,
        challenge=challenge,  # type: ignore[arg-type] # checked above
        renew_fraction=renew_fraction,
        check_interval=check_interval,
    )
