"""A client for the serve --lan tests, run inside the other network namespace.

``tls HOST PORT CAFILE SERVER_NAME``: a verified TLS connection and one GET; prints the
server's certificate (hex DER) and the status line as JSON.
``resolve NAME LOCAL_ADDRESS [TIMEOUT_MS]``: an mDNS query for NAME's addresses from that
interface.
``raw HOST PORT HEX``: sends the bytes, prints what comes back until the server closes.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys

TIMEOUT = 10.0


def tls(host: str, port: str, cafile: str, server_name: str) -> dict[str, object]:
    context = ssl.create_default_context(cafile=cafile)
    with (
        socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as conn,
    ):
        der = conn.getpeercert(binary_form=True) or b""
        conn.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    return {"cert": der.hex(), "status": response.split(b"\r\n", 1)[0].decode()}


def resolve(name: str, local_address: str, timeout_ms: str = "3000") -> list[str]:
    from zeroconf import AddressResolver, Zeroconf

    zc = Zeroconf(interfaces=[local_address], use_asyncio=False)
    try:
        resolver = AddressResolver(name)
        resolver.request(zc, int(timeout_ms))
        return resolver.parsed_addresses()
    finally:
        zc.close()


def raw(host: str, port: str, data_hex: str) -> str:
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as conn:
        conn.sendall(bytes.fromhex(data_hex))
        response = b""
        try:
            while chunk := conn.recv(65536):
                response += chunk
        except ConnectionResetError:
            pass
    return response.hex()


def main() -> None:
    command, *args = sys.argv[1:]
    result = {"tls": tls, "resolve": resolve, "raw": raw}[command](*args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
