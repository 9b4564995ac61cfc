"""Small X.509 pieces shared by the CA and by leaf issuing (so neither imports the other)."""

from __future__ import annotations

import getpass
import secrets
import socket
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# iOS lists a root under "Certificate Trust Settings" only if it has a CN; X.520 caps it at 64.
MAX_COMMON_NAME = 64

KeyType = Literal["rsa", "ecdsa"]
CAKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def user_and_host() -> str:
    """``user@host``, so a person can tell whose CA this is in a certificate viewer."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, as in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def signing_hash(key: CAKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def random_serial() -> int:
    """A random positive 128-bit serial, as mkcert makes them."""
    return secrets.randbits(128) or 1
