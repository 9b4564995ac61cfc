"""The control protocol of a running router, sans-IO: newline-delimited JSON.

Each request is one JSON object on one line; each answer is one line too, in the order the
requests came. Every message carries ``"v"`` (PROTOCOL_VERSION). A request:

    {"v": 1, "op": "list"}
    {"v": 1, "op": "add", "route": "api.localhost/v1", "upstream": "3001",
     "hold": false, "force": false, "host_header": "upstream", "starting": false}
    {"v": 1, "op": "remove", "route": "api.localhost/v1"}
    {"v": 1, "op": "stop"}

An answer is ``{"v": 1, "ok": true, ...}`` or ``{"v": 1, "ok": false, "error": "...",
"hint": "...", "kind": "usage" | "refused" | "protocol"}``. The socket is owner-only, yet
every line is still validated here as if it came from anyone: it either parses into a
request, or raises ``ControlError`` (which the server turns into an error answer).
A route held (``"hold": true``) lasts as long as the connection that added it. The optional
``host_header`` ("client" or "upstream") is the Host the upstream is sent (without it: the
router's own setting); with ``"starting": true`` a request that finds the upstream refusing
connections gets a page that reloads itself until it answers (``devtls run``), not a 502.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal

from devtls.config import HostHeader, Route, check_host_header, parse_route
from devtls.errors import ConfigError, DevtlsError, ProtocolError, UsageError

PROTOCOL_VERSION = 1
# A request is a few hundred bytes; a route list of a few hundred routes fits easily.
MAX_REQUEST_LINE = 16 * 1024
MAX_RESPONSE_LINE = 4 * 1024 * 1024
# The route target and the upstream are short texts (a host name is at most 253 bytes).
MAX_FIELD = 2048

ErrorKind = Literal["usage", "refused", "protocol"]


class ControlError(DevtlsError):
    """A request that cannot be done; ``kind`` says whose fault (usage: exit status 2)."""

    def __init__(self, message: str, hint: str | None = None, kind: ErrorKind = "refused") -> None:
        super().__init__(message, hint)
        self.kind: ErrorKind = kind
        self.exit_code = 2 if kind == "usage" else 1


@dataclass(frozen=True)
class ListRoutes:
    pass


@dataclass(frozen=True)
class AddRoute:
    route: Route
    hold: bool = False
    force: bool = False
    # None: the router's --host-header applies.
    host_header: HostHeader | None = None


@dataclass(frozen=True)
class RemoveRoute:
    host: str
    path: str


@dataclass(frozen=True)
class Stop:
    pass


Request = ListRoutes | AddRoute | RemoveRoute | Stop

_FIELDS: dict[str, frozenset[str]] = {
    "list": frozenset(),
    "add": frozenset({"route", "upstream", "hold", "force", "host_header", "starting"}),
    "remove": frozenset({"route"}),
    "stop": frozenset(),
}


class LineReader:
    """Bytes in, complete lines out; a line longer than ``limit`` is a ProtocolError."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def next_line(self) -> bytes | None:
        """The next line without its newline, or None until one is complete."""
        end = self._buffer.find(b"\n", 0, self.limit + 1)
        if end < 0:
            if len(self._buffer) > self.limit:
                raise ProtocolError(f"a control message is longer than {self.limit} bytes")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line


def parse_target(text: str) -> tuple[str, str]:
    """``HOST[/PATH]`` -> (host, path), checked exactly as the target of ``--route``."""
    route = route_from(text, "1")
    return route.host, route.path


def route_from(target: str, upstream: str, host_header: HostHeader = "client") -> Route:
    """A route from its two halves, with the validation (and messages) of ``--route``."""
    if "=" in target:
        raise ControlError(f"{target!r} is not HOST[/PATH]", "e.g. api.localhost/v1", "usage")
    try:
        return parse_route(
            f"{target}={upstream}",
            host_header=host_header,
            label=f"route {target!r} {upstream!r}",
            example="e.g. devtls route add api.localhost/v1 3001",
        )
    except ConfigError as exc:
        raise ControlError(exc.message, exc.hint, "usage") from None


def starting_name(host: str) -> str:
    """What the "starting" page calls the app: its host without ``.localhost``."""
    name = host.removesuffix(".localhost")
    return name or host or "app"


def _decode(line: bytes, what: str) -> dict[str, Any]:
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ControlError(f"a control {what} is not JSON", None, "protocol") from None
    if not isinstance(message, dict):
        raise ControlError(f"a control {what} is not a JSON object", None, "protocol")
    version = message.get("v")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ControlError(
            f"control protocol version {version!r} is not supported (this one speaks "
            f"{PROTOCOL_VERSION})",
            "use the same devtls version for the router and the command",
            "protocol",
        )
    return message


def _text(message: dict[str, Any], name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
        raise ControlError(
            f"control request field {name!r} must be a text of 1 to {MAX_FIELD} characters",
            None,
            "protocol",
        )
    return value


def _flag(message: dict[str, Any], name: str) -> bool:
    value = message.get(name, False)
    if not isinstance(value, bool):
        raise ControlError(
            f"control request field {name!r} must be true or false", None, "protocol"
        )
    return value


def parse_request(line: bytes) -> Request:
    """One request line -> a Request; anything else raises ControlError."""
    message = _decode(line, "request")
    op = message.get("op")
    if not isinstance(op, str) or op not in _FIELDS:
        raise ControlError(
            f"unknown control operation {op!r}", "known: " + ", ".join(_FIELDS), "protocol"
        )
    unknown = set(message) - {"v", "op"} - _FIELDS[op]
    if unknown:
        raise ControlError(
            f"control request {op!r} has an unknown field {sorted(unknown)[0]!r}", None, "protocol"
        )
    if op == "list":
        return ListRoutes()
    if op == "stop":
        return Stop()
    if op == "remove":
        host, path = parse_target(_text(message, "route"))
        return RemoveRoute(host, path)
    host_header: HostHeader | None = None
    if "host_header" in message:
        try:
            host_header = check_host_header(message["host_header"], "host_header")
        except ConfigError as exc:
            raise ControlError(exc.message, exc.hint, "protocol") from None
    route = route_from(_text(message, "route"), _text(message, "upstream"), host_header or "client")
    if _flag(message, "starting"):
        upstream = replace(route.upstream, starting=starting_name(route.host))
        route = replace(route, upstream=upstream)
    return AddRoute(
        route, hold=_flag(message, "hold"), force=_flag(message, "force"), host_header=host_header
    )


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, **message}, separators=(",", ":")).encode() + b"\n"


def request_line(op: str, **fields: object) -> bytes:
    """A request as the client sends it (the router validates it again)."""
    return encode({"op": op, **fields})


def ok_line(**fields: object) -> bytes:
    return encode({"ok": True, **fields})


def error_line(error: DevtlsError) -> bytes:
    if isinstance(error, ControlError):
        kind: ErrorKind = error.kind
    elif isinstance(error, UsageError):
        kind = "usage"
    elif isinstance(error, ProtocolError):
        kind = "protocol"
    else:
        kind = "refused"
    return encode({"ok": False, "error": error.message, "hint": error.hint, "kind": kind})


def parse_response(line: bytes) -> dict[str, Any]:
    """An answer line -> its fields; an error answer raises the ControlError it carries."""
    message = _decode(line, "answer")
    if message.get("ok") is True:
        return message
    error = message.get("error")
    hint = message.get("hint")
    kind = message.get("kind")
    if message.get("ok") is not False or not isinstance(error, str):
        raise ControlError("a control answer is neither ok nor an error", None, "protocol")
    raise ControlError(
        error,
        hint if isinstance(hint, str) else None,
        kind if kind in ("usage", "refused", "protocol") else "refused",
    )
