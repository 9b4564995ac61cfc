"""Challenge validation over the network: http-01 and tls-alpn-01 (RFC 8555 8.3, RFC 8737).

Names under ``.localhost`` (and ``localhost`` itself) are looked for on loopback whatever the
system resolver says (RFC 6761 6.3); other names go through the resolver, IP identifiers are
used as they are. Every address found is tried in turn; one that answers right is enough.
Each attempt is bounded in time and in the bytes read. What came back is judged in
challenges.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from devtls.acmeserver import challenges as checks
from devtls.acmeserver.allowlist import Identifier
from devtls.acmeserver.problems import AcmeProblem
from devtls.acmeserver.wire import ValidationJob
from devtls.config import parse_port
from devtls.errors import ProtocolError
from devtls.proxy import http1

HTTP_PORT_ENV = "DEVTLS_ACME_HTTP_PORT"
TLS_PORT_ENV = "DEVTLS_ACME_TLS_PORT"
# RFC 8555 8.3 and RFC 8737 3: port 80 for http-01, 443 for tls-alpn-01.
DEFAULT_HTTP_PORT = 80
DEFAULT_TLS_PORT = 443
# Per address tried: Let's Encrypt gives a challenge about 10 s per connection too.
ATTEMPT_SECONDS = 10.0
MAX_ADDRESSES = 4
MAX_HTTP_RESPONSE = 16 * 1024
LOOPBACK = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class ValidationPorts:
    http: int = DEFAULT_HTTP_PORT
    tls: int = DEFAULT_TLS_PORT

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ValidationPorts:
        """The ports to validate on: 80 and 443, unless the test variables say otherwise."""
        http = environ.get(HTTP_PORT_ENV)
        tls = environ.get(TLS_PORT_ENV)
        return cls(
            parse_port(http, HTTP_PORT_ENV) if http else DEFAULT_HTTP_PORT,
            parse_port(tls, TLS_PORT_ENV) if tls else DEFAULT_TLS_PORT,
        )


def is_localhost_name(name: str) -> bool:
    return name == "localhost" or name.endswith(".localhost")


async def addresses_of(identifier: Identifier) -> list[str]:
    if identifier.type == "ip":
        return [identifier.value]
    if is_localhost_name(identifier.value):
        return list(LOOPBACK)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(identifier.value, None, type=socket.SOCK_STREAM), ATTEMPT_SECONDS
        )
    except (OSError, asyncio.TimeoutError):
        raise AcmeProblem("dns", f"{identifier.value} does not resolve here") from None
    found: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in found:
            found.append(address)
    return found[:MAX_ADDRESSES]


async def validate(job: ValidationJob, ports: ValidationPorts) -> AcmeProblem | None:
    """None when the challenge was answered right, else the problem to record."""
    try:
        found = await addresses_of(job.identifier)
    except AcmeProblem as problem:
        return problem
    problems: list[AcmeProblem] = []
    for address in found:
        try:
            if job.type == checks.HTTP01:
                await asyncio.wait_for(_http01(job, address, ports.http), ATTEMPT_SECONDS)
            else:
                await asyncio.wait_for(_tls_alpn01(job, address, ports.tls), ATTEMPT_SECONDS)
            return None
        except AcmeProblem as problem:
            problems.append(problem)
        except asyncio.TimeoutError:
            problems.append(AcmeProblem("connection", f"{address}: no answer in time"))
        except ssl.SSLError as exc:
            problems.append(AcmeProblem("tls", f"{address}: TLS failed: {exc.reason or exc}"))
        except OSError as exc:
            problems.append(
                AcmeProblem("connection", f"{address}: cannot connect: {exc.strerror or exc}")
            )
    if not problems:
        return AcmeProblem("dns", f"{job.identifier.value} has no address")
    first = problems[0]
    detail = "; ".join(p.detail for p in problems)
    port = ports.http if job.type == checks.HTTP01 else ports.tls
    return AcmeProblem(first.kind, f"{job.type} for {job.identifier.value} (port {port}): {detail}")


async def _http01(job: ValidationJob, address: str, port: int) -> None:
    reader, writer = await asyncio.open_connection(address, port)
    try:
        host = checks.host_header(job.identifier)
        target = checks.HTTP01_PATH + job.token
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: devtls-acme-server\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n".encode("ascii")
        )
        data = await reader.read(MAX_HTTP_RESPONSE + 1)
        while data and len(data) <= MAX_HTTP_RESPONSE:
            more = await reader.read(MAX_HTTP_RESPONSE + 1 - len(data))
            if not more:
                break
            data += more
    finally:
        await _close(writer)
    if len(data) > MAX_HTTP_RESPONSE:
        raise AcmeProblem("incorrectResponse", f"{address}: the answer is too large")
    status, body = _parse_response(data, address)
    checks.check_http01(status, body, job.key_authorization)


def _parse_response(data: bytes, address: str) -> tuple[int, bytes]:
    response = http1.ResponseReader()
    response.expect_response(head_request=False)
    response.feed(data)
    response.feed_eof()
    status, body = 0, b""
    try:
        while True:
            event = response.next_event()
            if isinstance(event, http1.ResponseHead):
                status = event.status
            elif isinstance(event, http1.Data):
                body += event.data
                if len(body) > checks.MAX_HTTP01_BODY:
                    raise AcmeProblem("incorrectResponse", f"{address}: the body is too large")
            else:
                break
    except ProtocolError as exc:
        raise AcmeProblem(
            "connection", f"{address}: not a valid HTTP answer ({exc.message})"
        ) from None
    if status == 0:
        raise AcmeProblem("connection", f"{address}: closed without an answer")
    return status, body


async def _tls_alpn01(job: ValidationJob, address: str, port: int) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The certificate is self-signed by design (RFC 8737 3): only its extension is checked.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([checks.ACME_TLS_ALPN])
    _, writer = await asyncio.open_connection(
        address, port, ssl=context, server_hostname=checks.sni_for(job.identifier)
    )
    try:
        tls = writer.get_extra_info("ssl_object")
        alpn = tls.selected_alpn_protocol() if tls is not None else None
        der = tls.getpeercert(binary_form=True) if tls is not None else None
    finally:
        await _close(writer)
    checks.check_tls_alpn01(der, alpn, job.identifier, job.key_authorization)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 2.0)
