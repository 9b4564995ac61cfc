"""The onboarding page of ``serve --lan``, pure: the devtls root for phones and other machines.

It serves the root certificate and nothing else, never a key: as DER for Android, as an iOS
configuration profile, as PEM for desktops, and a page with the steps for each. Every
answer is made here from the request head; the responder sends it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import plistlib
import uuid
from collections.abc import Sequence

from devtls.proxy.http1 import RequestHead, simple_response

CRT_PATH = b"/devtls-root.crt"
MOBILECONFIG_PATH = b"/devtls-root.mobileconfig"
PEM_PATH = b"/devtls-root.pem"

# Android's installer and Chrome take this type for a CA certificate; iOS installs a
# configuration profile only when it comes with Apple's type.
CRT_TYPE = b"application/x-x509-ca-cert"
MOBILECONFIG_TYPE = b"application/x-apple-aspen-config"
PEM_TYPE = b"application/x-pem-file"
HTML_TYPE = b"text/html; charset=utf-8"

# The page loads nothing and runs nothing; it only links to the files beside it.
_PAGE_HEADERS = [
    (b"Content-Security-Policy", b"default-src 'none'; style-src 'unsafe-inline'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
]
# Any name will do, stable for one root: a profile installed again replaces the old one.
_UUID_NAMESPACE = uuid.UUID("5b0f1c52-4c8e-4f5e-9a38-6d6576746c73")

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;margin:2em auto;max-width:40em;padding:0 1em;"
    "color:#222}code{background:#eee;padding:0 .2em;word-break:break-all}a{color:#0645ad}"
    "a.file{display:inline-block;margin:.3em 0;padding:.5em 1em;border:1px solid #0645ad;"
    "border-radius:.4em;text-decoration:none}"
)


def fingerprint(der: bytes) -> str:
    """SHA-256 of the certificate, as ``devtls status`` and the phones show it."""
    return hashlib.sha256(der).hexdigest().upper()


def _colons(hex_digits: str) -> str:
    return ":".join(hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2))


def mobileconfig(root_der: bytes, root_name: str) -> bytes:
    """An iOS configuration profile holding the root (payload com.apple.security.root).

    Unsigned, so iOS calls it unverified; the steps tell the user to compare fingerprints.
    """
    digest = fingerprint(root_der)

    def stable_uuid(part: str) -> str:
        return str(uuid.uuid5(_UUID_NAMESPACE, f"{digest}/{part}")).upper()

    identifier = f"devtls.root.{digest[:16].lower()}"
    profile = {
        "PayloadContent": [
            {
                "PayloadCertificateFileName": "devtls-root.cer",
                "PayloadContent": root_der,
                "PayloadDescription": "The root of the devtls development CA.",
                "PayloadDisplayName": root_name,
                "PayloadIdentifier": f"{identifier}.certificate",
                "PayloadType": "com.apple.security.root",
                "PayloadUUID": stable_uuid("certificate"),
                "PayloadVersion": 1,
            }
        ],
        "PayloadDescription": (
            "Makes this device trust HTTPS servers of the devtls development CA "
            f"(SHA-256 {_colons(digest)})."
        ),
        "PayloadDisplayName": f"devtls: {root_name}",
        "PayloadIdentifier": identifier,
        "PayloadRemovalDisallowed": False,
        "PayloadType": "Configuration",
        "PayloadUUID": stable_uuid("profile"),
        "PayloadVersion": 1,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def page(root_name: str, digest: str, https_urls: Sequence[str]) -> bytes:
    """The steps for iOS, Android and other computers, with links to the files."""
    name = html.escape(root_name)
    links = "".join(
        f'<li><a href="{html.escape(u, quote=True)}">{html.escape(u)}</a></li>' for u in https_urls
    )
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>devtls: trust this computer's development CA</title><style>{_STYLE}</style></head>
<body><h1>Trust the devtls CA on this device</h1>
<p>The computer that runs <code>devtls serve --lan</code> serves HTTPS with certificates of
its own development CA, <b>{name}</b>. Install that root once on each phone, tablet or
computer, then open:</p><ul>{links}</ul>
<p>This page comes over plain HTTP: before you trust the root, check that the SHA-256
fingerprint your device shows is this one (<code>devtls status</code> prints it on the
computer running devtls):<br><code>{_colons(digest)}</code></p>
<p>Only the root certificate is here, never a key. Remove it from a device when you no longer
develop with it.</p>
<h2>iPhone and iPad</h2>
<p><a class="file" href="{MOBILECONFIG_PATH.decode()}">Download the iOS profile</a></p>
<ol><li>Open this page in Safari, tap the link above and allow the download.</li>
<li>Settings &rarr; General &rarr; VPN &amp; Device Management (Profiles on older iOS)
&rarr; the devtls profile &rarr; Install.</li>
<li>Settings &rarr; General &rarr; About &rarr; Certificate Trust Settings &rarr; turn on
full trust for <b>{name}</b>. Without this step Safari still refuses the certificates.</li></ol>
<h2>Android</h2>
<p><a class="file" href="{CRT_PATH.decode()}">Download the certificate (.crt)</a></p>
<ol><li>Tap the link above; the file is saved to Downloads.</li>
<li>Settings &rarr; Security &rarr; Encryption &amp; credentials &rarr; Install a certificate
&rarr; CA certificate &rarr; Install anyway, and choose <code>devtls-root.crt</code> (the
menu names differ between makers: search Settings for &ldquo;CA certificate&rdquo;).</li>
<li>Chrome and the system browser trust it from then on; other apps only if they trust
user-installed CAs.</li></ol>
<h2>Another computer</h2>
<p><a class="file" href="{CRT_PATH.decode()}">.crt (DER)</a>
<a class="file" href="{PEM_PATH.decode()}">.pem</a></p>
<p><code>devtls install</code> does not apply there: it installs that computer's own CA.
Add this root to its trust store instead: on macOS open the .crt in Keychain Access and set
it to Always Trust; on Windows open the .crt &rarr; Install Certificate &rarr; Trusted Root
Certification Authorities; on Debian or Ubuntu copy the .pem to
<code>/usr/local/share/ca-certificates/devtls-root.crt</code> and run <code>sudo
update-ca-certificates</code>; in Firefox, Settings &rarr; Certificates &rarr; Import.</p>
</body></html>
"""
    return body.encode()


class OnboardingSite:
    """The answers of the onboarding listener, made once for one root."""

    def __init__(self, root_der: bytes, root_name: str, https_urls: Sequence[str]) -> None:
        digest = fingerprint(root_der)
        self.files: dict[bytes, tuple[bytes, bytes, list[tuple[bytes, bytes]]]] = {
            b"/": (HTML_TYPE, page(root_name, digest, https_urls), _PAGE_HEADERS),
            CRT_PATH: (CRT_TYPE, root_der, _download("devtls-root.crt")),
            MOBILECONFIG_PATH: (
                MOBILECONFIG_TYPE,
                mobileconfig(root_der, root_name),
                _download("devtls-root.mobileconfig"),
            ),
            PEM_PATH: (PEM_TYPE, _pem(root_der), _download("devtls-root.pem")),
        }

    def answer(self, head: RequestHead) -> tuple[bytes, bool]:
        """(the whole response, whether to close after it)."""
        close = not head.keep_alive
        found = self.files.get(head.path)
        if found is None:
            return simple_response(404, b"not found\n", close=close), close
        if head.method not in (b"GET", b"HEAD"):
            extra = [(b"Allow", b"GET, HEAD")]
            return simple_response(405, b"GET only\n", extra=extra, close=close), close
        content_type, body, extra = found
        response = simple_response(
            200,
            body,
            content_type=content_type,
            extra=extra,
            close=close,
            head_only=head.method == b"HEAD",
        )
        return response, close


def _download(filename: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"Content-Disposition", b'attachment; filename="%s"' % filename.encode()),
        (b"X-Content-Type-Options", b"nosniff"),
    ]
