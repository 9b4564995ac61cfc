"""What a NAME on the command line means, and mkcert's output file names.

Pure functions: no cryptography, no I/O, so they are cheap to import and easy to test.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import Enum

from devtls.errors import UsageError

# The same shape mkcert accepts: letters, digits, '-', '_' and dots, optionally behind "*.".
_HOSTNAME = re.compile(r"^(\*\.)?[0-9a-z_-]([0-9a-z._-]*[0-9a-z_-])?$", re.IGNORECASE)
# RFC 1035 limits, which resolvers and TLS libraries enforce.
MAX_LABEL_LENGTH = 63
MAX_HOSTNAME_LENGTH = 253
# An email local part as a person types it (RFC 5322 dot-atom); quoted forms are not worth it here.
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
# RFC 3986 appendix A, the parts a URI SAN is checked against.
MAX_PORT = 65535
_UNRESERVED = r"A-Za-z0-9._~\-"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT_ENCODED = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT_ENCODED})"
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_URI_USERINFO = re.compile(rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT_ENCODED})*")
_URI_REG_NAME = re.compile(rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT_ENCODED})+")
_URI_IPVFUTURE = re.compile(rf"[vV][0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+")
_URI_PATH = re.compile(rf"(?:/{_PCHAR}*)*")  # path-abempty: it follows an authority
_URI_QUERY = re.compile(rf"(?:{_PCHAR}|[/?])*")  # query and fragment share the grammar
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
    """A URI SAN: RFC 3986 syntax with an authority that names a host (as mkcert requires).

    ``scheme://[userinfo@]host[:port][/path][?query][#fragment]``, ASCII only (RFC 3986 2.1:
    other characters are percent-encoded), a port of digits from 0 to 65535 if any. Anything
    else is a UsageError, never a certificate for a name no client will match.
    """
    example = "like spiffe://a.test/x or https://a.test:8443/path"
    bad = text if len(text) <= 80 else text[:77] + "..."

    def refuse(why: str, hint: str = f"write it {example}") -> UsageError:
        return UsageError(f"{bad!r} is not a valid URI: {why}", hint)

    if not text.isascii() or not text.isprintable():
        raise refuse(
            "it holds a character that is not printable ASCII",
            "percent-encode it (RFC 3986 2.1), e.g. %C3%A9 for é",
        )
    scheme, _, rest = text.partition("://")
    if not _URI_SCHEME.fullmatch(scheme):
        raise refuse(
            f"the scheme {scheme!r} is not a letter followed by letters, digits, +, - or ."
        )
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host_port = authority.rpartition("@")
    if at and not _URI_USERINFO.fullmatch(userinfo):
        raise refuse(f"the user part {userinfo!r} holds characters a URI cannot")
    if host_port.startswith("["):
        host, bracket, port_part = host_port.partition("]")
        host += bracket
        if not bracket or not _uri_ip_literal(host[1:-1]):
            raise refuse(
                f"{host!r} is not a bracketed IPv6 address", "write it like https://[::1]:8443/"
            )
    else:
        host, colon, port = host_port.partition(":")
        port_part = colon + port
        if not host:
            raise refuse("it names no host", "a URI needs a scheme and a host, " + example)
        if not _URI_REG_NAME.fullmatch(host):
            raise refuse(f"the host {host!r} holds characters a URI cannot")
    if port_part and not port_part.startswith(":"):
        raise refuse(f"{port_part!r} follows the host where only ':PORT' may")
    if port_part:
        port = port_part[1:]
        if port and (not port.isdigit() or int(port) > MAX_PORT):
            raise refuse(f"the port {port_part.lstrip(':')!r} is not a number from 0 to {MAX_PORT}")
    path_and_query, _, fragment = tail.partition("#")
    path, _, query = path_and_query.partition("?")
    if not _URI_PATH.fullmatch(path):
        raise refuse(f"the path {path!r} holds characters a URI cannot (percent-encode them)")
    if not _URI_QUERY.fullmatch(query) or not _URI_QUERY.fullmatch(fragment):
        raise refuse("the query or fragment holds characters a URI cannot (percent-encode them)")
    return text


def _uri_ip_literal(inside: str) -> bool:
    """RFC 3986 3.2.2 IP-literal: an IPv6 address (no zone) or an IPvFuture."""
    if inside[:1] in ("v", "V"):
        return _URI_IPVFUTURE.fullmatch(inside) is not None
    if "%" in inside:  # an RFC 6874 zone: certificates cannot hold it
        return False
    try:
        ipaddress.IPv6Address(inside)
    except ValueError:
        return False
    return True


def wildcard_warnings(names: list[Name]) -> list[str]:
    """The reminders mkcert prints, because wildcards surprise people in two ways."""
    messages = []
    given = {name.value for name in names if name.kind is NameKind.DNS}
    for name in names:
        if name.kind is NameKind.DNS and name.value.startswith("*."):
            base = name.value[2:]
            message = f"X.509 wildcards only go one level deep, so {name.value!r} won't match "
            if base in given:
                messages.append(f"{message}'a.b.{base}'")
            else:
                messages.append(
                    f"{message}'a.b.{base}'; it doesn't match {base!r} itself either "
                    "(add it as a name)"
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
