"""Transport typing and flow control: read gates, write-buffer water marks.

When one side's send buffer fills up, the other side stops reading until it drains; reading
also pauses for reasons of the connection's own (a backlog, a connect in progress). A gate
holds every reason at once and resumes reading when the last one is gone.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast

# Write-buffer marks, per side: above HIGH the other side stops reading until below LOW.
# The kernel's socket buffer does the bulk of the buffering (megabytes on loopback); ours only
# needs to keep it fed, as nginx's proxy_buffers (8 x 4/8 KiB) and uvicorn's 64 KiB
# HIGH_WATER_LIMIT do. 256 KiB cost a quarter of a MiB per slow reader, for no throughput.
WRITE_HIGH_WATER = 64 * 1024
WRITE_LOW_WATER = 16 * 1024

# Why reading is paused (bits of one gate).
PEER_FULL = 1  # the other side's send buffer is full
BACKLOG = 2  # bytes wait that cannot be passed on yet
CONNECTING = 4  # the upstream connection is being opened
ANSWERS_WAIT = 8  # answers to this side wait unread in its own send buffer


class Readable(Protocol):
    """Something whose reading can be paused: a transport, or an HTTP/2 stream (its window)."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Transport(Readable, Protocol):
    """What both asyncio transports and our TLS layer offer."""

    def write(self, data: bytes) -> None: ...
    def writelines(self, pieces: list[bytes]) -> None: ...
    def write_eof(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...
    def set_write_buffer_limits(self, high: int | None = ..., low: int | None = ...) -> None: ...
    def get_extra_info(self, name: str, default: Any = ...) -> Any: ...


class ReadGate:
    """Reading pauses while any reason holds, and resumes when the last is gone."""

    __slots__ = ("_reasons", "_source")

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._reasons = 0

    def pause(self, reason: int) -> None:
        if not self._reasons:
            self._source.pause_reading()
        self._reasons |= reason

    def resume(self, reason: int) -> None:
        if self._reasons & reason:
            self._reasons &= ~reason
            if not self._reasons:
                self._source.resume_reading()


def open_gate(transport: asyncio.BaseTransport) -> tuple[Transport, ReadGate]:
    """A new connection's transport, with the water marks set, and its read gate."""
    t = cast(Transport, transport)
    t.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
    return t, ReadGate(t)


class FlowControlled(asyncio.Protocol):
    """When this side's send buffer fills up, the other side stops reading until it drains."""

    def peer_gate(self) -> ReadGate | None:
        """The gate of whatever writes into this side's transport."""
        raise NotImplementedError

    def pause_writing(self) -> None:
        gate = self.peer_gate()
        if gate is not None:
            gate.pause(PEER_FULL)

    def resume_writing(self) -> None:
        gate = self.peer_gate()
        if gate is not None:
            gate.resume(PEER_FULL)
