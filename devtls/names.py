"""What a NAME on the command line means, and mkcert's output file names.

Pure functions: no cryptography, no I/O, so they are cheap to import and easy to test.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from devtls.errors import UsageError

# The same shape mkcert accepts: letters, digits, '-', '_' and dots, optionally behind "*.".
_HOSTNAME = re.compile(r"^(\*\.)?[0-9a-z_-]([0-9a-z._-]*[0-9a-z_-])?$", re.IGNORECASE)
# RFC 1035 limits, which resolvers and TLS libraries enforce.
MAX_LABEL_LENGTH = 63
MAX_HOSTNAME_LENGTH = 253
# An email local part as a person types it (RFC 5322 dot-atom); quoted forms are not worth it here.
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
# Characters that may appear in a file name on every platform; everything else becomes "_".
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._@+-]")


class NameKind(Enum):
    DNS = "dns"
    IP = "ip"
    EMAIL = "email"
    URI = "uri"


@dataclass(frozen=True)
class Name:
    """One subjectAltName entry: its kind and its canonical text (IDNA for DNS names)."""

    kind: NameKind
    value: str

    def __str__(self) -> str:
        return self.value


def parse_name(text: str) -> Name:
    """Turn a NAME into a SAN entry, or raise UsageError saying why it cannot be one."""
    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise UsageError(
            f"{text!r} is not a valid hostname, IP, URL or email (empty or contains spaces)",
            "give each name as a separate argument",
        )
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise UsageError(
                f"{text!r} has an IPv6 zone, which certificates cannot hold",
                f"use {text.split('%')[0]!r}",
            )
        return Name(NameKind.IP, str(address))
    if "@" in text and "://" not in text:
        return Name(NameKind.EMAIL, _parse_email(text))
    if "://" in text:
        return Name(NameKind.URI, _parse_uri(text))
    return Name(NameKind.DNS, _parse_hostname(text))


def parse_names(texts: list[str] | tuple[str, ...]) -> list[Name]:
    """Parse every NAME; duplicates (after normalisation) are kept once, in order."""
    if not texts:
        raise UsageError("no names given", "name at least one host, IP, email or URI")
    names: list[Name] = []
    for text in texts:
        name = parse_name(text)
        if name not in names:
            names.append(name)
    return names


def _parse_hostname(text: str) -> str:
    wildcard = text.startswith("*.")
    rest = text[2:] if wildcard else text
    try:
        # Internationalised names go into certificates in their ASCII (punycode) form.
        ascii_rest = rest.encode("idna").decode("ascii") if not rest.isascii() else rest
    except UnicodeError as exc:
        raise UsageError(f"{text!r} is not a valid hostname: {exc}") from None
    hostname = ("*." if wildcard else "") + ascii_rest.lower()
    if (
        not _HOSTNAME.match(hostname)
        or ".." in hostname
        or any(label.startswith("-") or label.endswith("-") for label in hostname.split("."))
    ):
        raise UsageError(
            f"{text!r} is not a valid hostname, IP, URL or email",
            "hostnames use letters, digits, '-', '_' and dots, with an optional leading '*.'",
        )
    labels = ascii_rest.split(".")
    if labels[-1].isdigit():
        # "1.2.3" or "010.0.0.1": clients read these as IP addresses, never as hostnames.
        raise UsageError(
            f"{text!r} looks like an IP address but is not a valid one",
            "write IPv4 addresses as four decimal numbers, like 127.0.0.1",
        )
    if len(hostname) > MAX_HOSTNAME_LENGTH or any(len(lbl) > MAX_LABEL_LENGTH for lbl in labels):
        raise UsageError(
            f"{text!r} is too long for a hostname",
            f"labels have at most {MAX_LABEL_LENGTH} characters, names at most "
            f"{MAX_HOSTNAME_LENGTH}",
        )
    if wildcard and len(labels) < 2:
        raise UsageError(
            f"{text!r} is a wildcard for a whole top-level domain, which no browser accepts",
            "put the wildcard under a name of your own, like '*.app.test'",
        )
    return hostname


def _parse_email(text: str) -> str:
    local, _, domain = text.rpartition("@")
    if not local or not _EMAIL_LOCAL.match(local):
        raise UsageError(f"{text!r} is not a valid email address")
    try:
        domain = _parse_hostname(domain)
    except UsageError:
        raise UsageError(f"{text!r} is not a valid email address (bad domain)") from None
    if domain.startswith("*."):
        raise UsageError(f"{text!r} is not a valid email address (wildcard domain)")
    return f"{local}@{domain}"


def _parse_uri(text: str) -> str:
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise UsageError(f"{text!r} is not a valid URI: {exc}") from None
    if not parts.scheme or not parts.netloc:
        raise UsageError(
            f"{text!r} is not a valid URI",
            "a URI needs a scheme and a host, like spiffe://a.test/x",
        )
    return text


def wildcard_warnings(names: list[Name]) -> list[str]:
    """The reminders mkcert prints, because wildcards surprise people in two ways."""
    messages = []
    for name in names:
        if name.kind is NameKind.DNS and name.value.startswith("*."):
            base = name.value[2:]
            messages.append(
                f"X.509 wildcards only go one level deep, so {name.value!r} won't match "
                f"'a.b.{base}'; it doesn't match {base!r} itself either (add it as a name)"
            )
    return messages


@dataclass(frozen=True)
class OutputFiles:
    cert: str
    key: str
    p12: str


def default_file_names(names: list[Name] | list[str], *, client: bool = False) -> OutputFiles:
    """mkcert's naming: first name (``*`` as ``_wildcard``, ``:`` as ``_``), ``+N``, ``-client``.

    Characters mkcert would pass through into a path (``/`` in a URI) also become ``_``,
    so a name can never write outside the current folder.
    """
    if not names:
        raise UsageError("no names given", "name at least one host, IP, email or URI")
    first = str(names[0]).replace(":", "_").replace("*", "_wildcard")
    stem = _UNSAFE_FILE_CHARS.sub("_", first)
    if stem.startswith("."):
        stem = "_" + stem[1:]
    if len(names) > 1:
        stem += f"+{len(names) - 1}"
    if client:
        stem += "-client"
    return OutputFiles(cert=f"{stem}.pem", key=f"{stem}-key.pem", p12=f"{stem}.p12")
