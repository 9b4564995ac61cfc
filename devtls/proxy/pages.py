"""The router's own pages, pure: the "starting" page of a dev server that boots, the 404.

Every name on them comes from a validated route host, and is HTML-escaped all the same.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from devtls.config import Route

TEXT = b"text/plain; charset=utf-8"
HTML = b"text/html; charset=utf-8"
# The "starting" page asks again after this many seconds (its meta refresh and Retry-After).
STARTING_RETRY_SECONDS = 1

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;margin:3em auto;max-width:40em;padding:0 1em;"
    "color:#222}code{background:#eee;padding:0 .2em}a{color:#0645ad}"
)


def starting_page(name: str) -> bytes:
    """A page that reloads itself until the dev server behind it answers."""
    escaped = html.escape(name)
    return (
        "<!doctype html>\n<html><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{STARTING_RETRY_SECONDS}">'
        f"<title>starting {escaped}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>starting {escaped}&hellip;</h1>"
        "<p>The dev server is not accepting connections yet; this page reloads itself until "
        "it does.</p></body></html>\n"
    ).encode()


def starting_headers() -> list[tuple[bytes, bytes]]:
    return [(b"Retry-After", b"%d" % STARTING_RETRY_SECONDS)]


def wants_html(accept: bytes | None) -> bool:
    """Whether the client is a browser (it asks for HTML), not curl or a script."""
    return accept is not None and b"text/html" in accept.lower()


def route_url(route: Route, port: int) -> str | None:
    """The https URL of a route with one concrete host (wildcards and catch-alls have none)."""
    if not route.host or "*" in route.host:
        return None
    host = f"[{route.host}]" if ":" in route.host else route.host
    suffix = "" if port in (0, 443) else f":{port}"
    return f"https://{host}{suffix}{'' if route.path == '/' else route.path}/"


def no_route_page(
    host: str, routes: Sequence[Route], port: int, *, as_html: bool
) -> tuple[bytes, bytes]:
    """(content type, body) of the 404 for a host no route serves: the routes there are, as
    links for a browser."""
    if not as_html:
        lines = [f"devtls: no route for host {host!r}.", "", "Configured routes:"]
        lines += [f"  {route}" for route in routes] or ["  (none)"]
        return TEXT, ("\n".join(lines) + "\n").encode()
    items = []
    for route in routes:
        url = route_url(route, port)
        label = html.escape(url if url is not None else str(route).partition(" -> ")[0])
        if url is not None:
            label = f'<a href="{html.escape(url, quote=True)}">{label}</a>'
        items.append(f"<li>{label} &rarr; <code>{html.escape(str(route.upstream))}</code></li>")
    listing = "<ul>" + "".join(items) + "</ul>" if items else "<p>There are no routes.</p>"
    body = (
        "<!doctype html>\n<html><head><meta charset=utf-8><title>no route</title>"
        f"<style>{_STYLE}</style></head>\n<body><h1>No app at {html.escape(host)}</h1>"
        f"<p>This devtls router serves:</p>{listing}</body></html>\n"
    )
    return HTML, body.encode()
