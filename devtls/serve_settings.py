"""Every setting of ``devtls serve``, declared once.

The command-line options (cli.py builds them from this), the ``devtls.toml`` keys, the
defaults and the type a file value must have all come from ``SETTINGS``; ``config`` turns the
merged raw values into a checked ``ServeConfig``. Flags win over the file, the file over the
defaults. ``--limit NAME=VALUE`` and the ``[limits]`` table come from ``config.Limits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_LISTEN = "127.0.0.1:8443"
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

# What a flag takes on the command line; a TOML value must have the matching type.
Kind = Literal["text", "path", "switch", "count", "many", "number"]
_TOML_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "path": (str,),
    "switch": (bool,),
    "count": (int,),
    "many": (list,),
    "number": (int, float),
}


@dataclass(frozen=True)
class Setting:
    """One setting: ``field`` names it in ``ServeOptions`` and in the CLI function."""

    field: str
    help: str
    # The command-line flag; None for the UPSTREAM argument and for file-only settings.
    flag: str | None = None
    kind: Kind = "text"
    metavar: str | None = None
    # The key in devtls.toml, in the ``[table]`` when ``table`` is set; None: not in the file.
    toml: str | None = None
    table: str = ""
    # Used when neither a flag nor the file gives a value.
    default: Any = None
    # How the default reads in --help, when it is not the value itself.
    default_text: str | None = None
    # Other types a file value may have (``upstream = 3000``, ``alpn = ["h2"]``).
    also: tuple[type, ...] = ()
    # The file states the opposite of the flag (``--http1-only`` is ``http2 = false``).
    negated_in_file: bool = False

    @property
    def toml_types(self) -> tuple[type, ...]:
        # bool is an int in Python: a count or a number never accepts true/false.
        return _TOML_TYPES[self.kind] + self.also

    @property
    def help_text(self) -> str:
        shown = self.default_text
        if shown is None and self.default not in (None, False, ()):
            shown = ", ".join(self.default) if isinstance(self.default, tuple) else self.default
        return f"{self.help} (default: {shown})" if shown is not None else self.help


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "upstream",
        "Where to forward: 3000, host:port, http(s)://URL or unix:/path.sock. "
        "Without it (and without routes): the built-in demo page.",
        metavar="UPSTREAM",
        toml="upstream",
        also=(int,),
    ),
    Setting(
        "listen",
        "Where to accept TLS.",
        "--listen",
        metavar="ADDR",
        toml="listen",
        default=DEFAULT_LISTEN,
    ),
    Setting(
        "names",
        "A name the certificate covers (repeatable).",
        "--name",
        kind="many",
        metavar="NAME",
        toml="names",
        default=DEFAULT_NAMES,
    ),
    Setting(
        "routes",
        "Send HOST (and path prefix) to UPSTREAM.",
        "--route",
        kind="many",
        metavar="HOST[/PATH]=UPSTREAM",
        toml="routes",
        default=(),
    ),
    Setting(
        "host_header",
        "The Host sent upstream: 'client' (the browser's) or 'upstream' (its address; "
        "dev servers' host checks accept it). For UPSTREAM and every route without its own.",
        "--host-header",
        metavar="client|upstream",
        toml="host_header",
        default="client",
    ),
    Setting(
        "redirect_http",
        "Also redirect plain HTTP there to https.",
        "--redirect-http",
        metavar="ADDR",
        toml="redirect_http",
    ),
    Setting(
        "cert_file",
        "Serve this certificate (chain) instead.",
        "--cert",
        kind="path",
        metavar="FILE",
        toml="cert",
    ),
    Setting("key_file", "The key of --cert.", "--key", kind="path", metavar="FILE", toml="key"),
    Setting(
        "tcp",
        "Pass decrypted bytes to UPSTREAM as they are.",
        "--tcp",
        kind="switch",
        toml="tcp",
        default=False,
    ),
    Setting(
        "alpn",
        "ALPN protocols offered with --tcp, e.g. h2 for gRPC.",
        "--alpn",
        metavar="LIST",
        toml="alpn",
        default_text="none",
        also=(list,),
    ),
    Setting(
        "http1_only",
        "Do not offer HTTP/2 (ALPN h2) to clients.",
        "--http1-only",
        kind="switch",
        toml="http2",
        negated_in_file=True,
        default=False,
    ),
    Setting(
        "lan",
        "Also listen on the LAN addresses (reachable from the network), cover them and "
        "HOSTNAME.local in the certificate, announce it over mDNS, serve the onboarding page "
        "of the root for phones. Needs pip install 'devtls[lan]'.",
        "--lan",
        kind="switch",
        toml="lan",
        default=False,
    ),
    Setting(
        "config_file",
        "Settings file.",
        "--config",
        kind="path",
        metavar="FILE",
        default_text="./devtls.toml",
    ),
    Setting("quiet", "No access log lines.", "--quiet", kind="switch", toml="quiet", default=False),
    Setting(
        "demo",
        "Serve the built-in demo page when there is neither an UPSTREAM nor a route "
        "(false: a 404 listing the routes, as for a router started by devtls run).",
        kind="switch",
        toml="demo",
        default=True,
    ),
    Setting(
        "limits",
        "Override a timeout or limit (see README).",
        "--limit",
        kind="many",
        metavar="NAME=VALUE",
        default=(),
    ),
    Setting(
        "workers",
        "Processes sharing the port (Linux, SO_REUSEPORT).",
        "--workers",
        kind="count",
        metavar="N",
        toml="workers",
        default=1,
        default_text="1",
    ),
    # ACME: the [acme] table of devtls.toml.
    Setting(
        "acme",
        "Certificates from an ACME CA (Let's Encrypt) for the route hosts.",
        "--acme",
        kind="switch",
        toml="enabled",
        table="acme",
        default=False,
    ),
    Setting(
        "acme_directory",
        "ACME v2 directory; 'staging' is Let's Encrypt staging.",
        "--acme-directory",
        metavar="URL",
        toml="directory",
        table="acme",
        default=LETS_ENCRYPT,
        default_text="Let's Encrypt",
    ),
    Setting(
        "acme_hosts",
        "Allow-list: only these names are ordered.",
        "--acme-host",
        kind="many",
        metavar="NAME",
        toml="hosts",
        table="acme",
        default=(),
        default_text="route hosts",
    ),
    Setting(
        "acme_email",
        "Account contact.",
        "--acme-email",
        metavar="ADDR",
        toml="email",
        table="acme",
    ),
    Setting(
        "acme_agree_tos",
        "Agree to the ACME CA's terms of service.",
        "--acme-agree-tos",
        kind="switch",
        toml="agree_tos",
        table="acme",
        default=False,
    ),
    Setting(
        "acme_http",
        "Where http-01 is answered.",
        "--acme-http",
        metavar="ADDR",
        toml="http",
        table="acme",
        default_text="--redirect-http, else :80",
    ),
    Setting(
        "acme_key_type",
        "Key type of ordered certificates.",
        "--acme-key-type",
        metavar="rsa|ecdsa",
        toml="key_type",
        table="acme",
        default="ecdsa",
    ),
    Setting(
        "acme_cache",
        "Account key and certificates.",
        "--acme-cache",
        kind="path",
        metavar="DIR",
        toml="cache",
        table="acme",
        default_text="user cache dir",
    ),
    Setting(
        "acme_ca_root",
        "Trust this root (PEM, may hold several) for the ACME server's own TLS.",
        "--acme-ca-root",
        kind="path",
        metavar="FILE",
        toml="ca_root",
        table="acme",
        default_text="OS store + devtls root",
    ),
    Setting(
        "acme_challenge",
        "Challenge to answer.",
        "--acme-challenge",
        metavar="http-01|tls-alpn-01",
        toml="challenge",
        table="acme",
        default="http-01",
    ),
    Setting(
        "acme_renew_fraction",
        "Renew when this fraction of a certificate's lifetime has passed.",
        kind="number",
        toml="renew_fraction",
        table="acme",
        default=2 / 3,
    ),
    Setting(
        "acme_check_interval",
        "Seconds between renewal checks.",
        kind="number",
        toml="check_interval",
        table="acme",
        default=3600.0,
    ),
)

BY_FIELD = {s.field: s for s in SETTINGS}
# The keys of each part of devtls.toml ("" is the top level); tables are keys there too.
TOML_KEYS: dict[str, frozenset[str]] = {
    table: frozenset(s.toml for s in SETTINGS if s.table == table and s.toml)
    for table in {s.table for s in SETTINGS}
}


class ServeOptions:
    """What the command line gave, by ``Setting.field``; None or () means "not given"."""

    __slots__ = ("_given",)

    def __init__(self, **given: Any) -> None:
        unknown = set(given) - set(BY_FIELD)
        if unknown:
            raise TypeError(f"unknown serve setting {sorted(unknown)[0]!r}")
        self._given = {k: v for k, v in given.items() if v is not None and v not in ((), [])}

    def given(self, field: str) -> Any:
        return self._given.get(field)

    def __repr__(self) -> str:
        return f"ServeOptions({self._given!r})"
