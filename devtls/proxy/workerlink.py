"""How the control owner hands live changes to the other workers: one socket pair each.

Made before forking, so only the two processes ever hold either end; that is why pickle
(of our own frozen dataclasses) is safe here, and keeps every field of a Route exact.
Each message is a 4-byte length and the pickled Snapshot.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from collections.abc import Callable
from typing import cast

from devtls.proxy.livestate import Snapshot

_LENGTH = struct.Struct("!I")
# A snapshot of a few hundred routes is tens of KiB.
MAX_MESSAGE = 16 * 1024 * 1024


def socket_pairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """(owner end, worker end) for ``count`` workers."""
    return [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(count)]


def frame(snapshot: Snapshot) -> bytes:
    payload = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


class Senders:
    """The owner's ends: every snapshot goes to every worker, buffered by the loop."""

    def __init__(self) -> None:
        self.transports: list[asyncio.WriteTransport] = []

    async def connect(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for sock in sockets:
            transport, _ = await loop.create_unix_connection(asyncio.Protocol, sock=sock)
            # uvloop's transports are not asyncio.WriteTransport subclasses, only alike.
            self.transports.append(cast(asyncio.WriteTransport, transport))

    def send(self, snapshot: Snapshot) -> None:
        data = frame(snapshot)
        for transport in self.transports:
            if not transport.is_closing():
                transport.write(data)

    def close(self) -> None:
        for transport in self.transports:
            transport.close()


class Receiver(asyncio.Protocol):
    """A worker's end: each complete snapshot is applied in the order sent."""

    def __init__(self, apply: Callable[[Snapshot], None]) -> None:
        self._apply = apply
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer)
            if size > MAX_MESSAGE:
                raise ValueError("a live update is too large")
            if len(buffer) < _LENGTH.size + size:
                return
            payload = bytes(buffer[_LENGTH.size : _LENGTH.size + size])
            del buffer[: _LENGTH.size + size]
            snapshot = pickle.loads(payload)  # noqa: S301 - our own pipe; see the module doc
            if isinstance(snapshot, Snapshot):
                self._apply(snapshot)


async def receive(sock: socket.socket, apply: Callable[[Snapshot], None]) -> asyncio.BaseTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_unix_connection(lambda: Receiver(apply), sock=sock)
    return transport
