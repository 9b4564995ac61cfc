"""The CA variables runtimes read: set, but at a missing file or a bundle without the root.

Each variable replaces (or, for Node, adds to) what one family of clients trusts, so a stale
one from an old project silently wins over ``devtls env`` and the system store.
"""

from __future__ import annotations

import binascii
import re
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from devtls._files import NotRegularFileError, read_regular_file
from devtls.doctor.model import Check, Context, quote

# The variable, who reads it, and whether it replaces the client's roots (else adds to them).
VARIABLES = (
    ("NODE_EXTRA_CA_CERTS", "Node, in addition to its bundled roots", False),
    ("SSL_CERT_FILE", "OpenSSL clients: Python's ssl, httpx, Go, Ruby, openssl", True),
    ("REQUESTS_CA_BUNDLE", "Python requests", True),
    ("CURL_CA_BUNDLE", "curl, instead of its built-in bundle", True),
)
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)
# A bundle larger than this is not a CA bundle (the system one is about 200 KiB).
MAX_BUNDLE_BYTES = 16 * 1024 * 1024


def setting_for(ctx: Context, variable: str) -> str:
    """The one setting that makes ``variable`` right for this CA."""
    if variable == "NODE_EXTRA_CA_CERTS":
        return f"export NODE_EXTRA_CA_CERTS={quote(ctx.root_file())}"
    if ctx.bundle().is_file():
        return f"export {variable}={quote(ctx.bundle())}"
    return 'eval "$(devtls env)"'


def check_variables(ctx: Context) -> list[Check]:
    checks: list[Check] = []
    for variable, reader, replaces in VARIABLES:
        value = ctx.environ.get(variable)
        if not value:
            continue
        checks.append(_check_one(ctx, variable, value, reader, replaces))
    return checks


def _check_one(ctx: Context, variable: str, value: str, reader: str, replaces: bool) -> Check:
    name = f"env {variable}"
    try:
        data = read_bundle(value)
    except (FileNotFoundError, NotRegularFileError) as exc:
        what = "a missing file"
        if isinstance(exc, NotRegularFileError):
            what = "a folder" if exc.kind == "a directory" else f"{exc.kind}, not a file"
        fix = setting_for(ctx, variable) if ctx.ca is not None else f"unset {variable}"
        found = f"{variable}={value} points at {what} (read by {reader})"
        return Check(name, "fail", found, fix)
    except OSError as exc:
        return Check(
            name, "fail", f"{variable}={value}: {exc.strerror}", setting_for(ctx, variable)
        )
    certificates = der_blocks(data)
    if not certificates:
        why = "no PEM certificates in it"
        return Check(name, "fail", f"{variable}={value}: {why}", setting_for(ctx, variable))
    if ctx.ca is None:
        return Check(name, "skip", f"{variable}={value} ({len(certificates)} certificates)")
    if ctx.ca.cert.public_bytes(Encoding.DER) not in certificates:
        override = ""
        if variable == "CURL_CA_BUNDLE":
            override = "; curl reads it instead of the system store"
        return Check(
            name,
            "fail",
            f"{variable}={value} ({len(certificates)} certificates) does not hold the devtls "
            f"root{override}",
            setting_for(ctx, variable),
        )
    if replaces and len(certificates) == 1:
        return Check(
            name,
            "warn",
            f"{variable}={value} holds only the devtls root: {reader} trust no other site with it",
            setting_for(ctx, variable),
        )
    return Check(name, "ok", f"{variable}={value} holds the devtls root; read by {reader}")


def holds_root(ctx: Context, value: str | None) -> bool:
    """Whether the file ``value`` names is readable and holds the devtls root."""
    if not value or ctx.ca is None:
        return False
    try:
        data = read_bundle(value)
    except (OSError, NotRegularFileError):
        return False
    return ctx.ca.cert.public_bytes(Encoding.DER) in der_blocks(data)


def read_bundle(value: str) -> bytes:
    """The start of the file a variable names; a FIFO or a device is refused, not waited on."""
    return read_regular_file(Path(value).expanduser(), MAX_BUNDLE_BYTES)[:MAX_BUNDLE_BYTES]


def der_blocks(data: bytes) -> list[bytes]:
    """The certificates of a PEM bundle as DER, compared as bytes: parsing each one would
    cost more and warn about the odd old root in system bundles."""
    blocks: list[bytes] = []
    for match in _PEM_BLOCK.finditer(data):
        try:
            blocks.append(binascii.a2b_base64(b"".join(match.group(1).split())))
        except binascii.Error:
            continue
    return blocks
