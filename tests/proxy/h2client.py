"""A raw HTTP/2 client for hostile tests: well-formed frames from the ``h2`` library,
malformed ones written by hand, and a reader that parses what comes back frame by frame
(with ``hyperframe``, so a server's answer to nonsense never trips a client state machine).

Loopback only, and everything is bounded: each read has a deadline, each collection a cap.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def tls_socket(
    port: int,
    ca_file: Path,
    *,
    alpn: str = "h2",
    timeout: float = 10.0,
    receive_buffer: int | None = None,
) -> ssl.SSLSocket:
    """A verified TLS connection to devtls on loopback that negotiated ``alpn``."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols([alpn])
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if receive_buffer is not None:
            # Before connecting: the window the server may fill is set at the handshake.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        # As browsers and curl do: no frame waits for the peer's ACK of the one before.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.settimeout(timeout)
        raw.connect(("127.0.0.1", port))
        tls = context.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise
    assert tls.selected_alpn_protocol() == alpn
    return tls


# The most frames one collection keeps (a server answering a flood could send many).
MAX_FRAMES = 100_000

Fields = list[tuple[bytes, bytes]]


def request_fields(
    path: bytes = b"/", method: bytes = b"GET", authority: bytes = b"localhost"
) -> Fields:
    return [
        (b":method", method),
        (b":scheme", b"https"),
        (b":authority", authority),
        (b":path", path),
    ]


def frame_bytes(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame by hand: any type, flags and stream, whatever the payload."""
    header = struct.pack(">I", len(payload))[1:] + bytes((kind, flags))
    return header + struct.pack(">I", stream_id & 0x7FFFFFFF) + payload


@dataclass
class Received:
    """What a server sent: its frames, with the header blocks decoded."""

    frames: list[Frame] = field(default_factory=list)
    # stream ID -> the decoded fields of each complete header block on it
    headers: dict[int, list[Fields]] = field(default_factory=dict)
    closed: bool = False  # the server closed the connection (or reset it)

    def of(self, kind: type[Frame]) -> list[Frame]:
        return [f for f in self.frames if isinstance(f, kind)]

    @property
    def goaway(self) -> GoAwayFrame | None:
        frames = self.of(GoAwayFrame)
        return frames[-1] if frames else None  # type: ignore[return-value]

    def resets(self) -> dict[int, int]:
        """stream ID -> the error code of its RST_STREAM."""
        return {f.stream_id: f.error_code for f in self.of(RstStreamFrame)}  # type: ignore[attr-defined]

    def status(self, stream_id: int) -> int | None:
        for block in self.headers.get(stream_id, []):
            status = dict(block).get(b":status")
            if status is not None and not status.startswith(b"1"):
                return int(status)
        return None

    def body(self, stream_id: int) -> bytes:
        return b"".join(
            f.data  # type: ignore[attr-defined]
            for f in self.of(DataFrame)
            if f.stream_id == stream_id
        )

    def ended(self, stream_id: int) -> bool:
        """Whether the stream's response is complete (END_STREAM) or the stream was reset."""
        for f in self.frames:
            if f.stream_id != stream_id:
                continue
            if isinstance(f, RstStreamFrame):
                return True
            if isinstance(f, (DataFrame, HeadersFrame)) and "END_STREAM" in f.flags:
                return True
        return False


class H2Client:
    """One TLS connection with ALPN h2 to a devtls on loopback.

    ``self.h2`` is a client-side h2 connection for well-formed frames (call ``flush`` to send
    what it queued); ``send`` writes any bytes. Do not mix the two for header blocks on one
    connection: each has its own HPACK encoder.
    """

    def __init__(
        self,
        port: int,
        ca_file: Path,
        *,
        settings: dict[int, int] | None = None,
        ack_settings: bool = True,
        timeout: float = 5.0,
        receive_buffer: int | None = None,
    ) -> None:
        self.sock = tls_socket(port, ca_file, timeout=timeout, receive_buffer=receive_buffer)
        self.timeout = timeout
        self.ack_settings = ack_settings
        self.h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 20
        self._buffer = bytearray()
        self._block: list[Frame] = []
        self.received = Received()
        # Bytes written, and whether a write failed (the server closed, or stopped reading).
        self.sent = 0
        self.write_failed = False
        # The preface by hand, so that the settings sent are exactly these (h2's own are
        # dropped: it serves to encode well-formed frames, and is never fed what comes back).
        self.h2.initiate_connection()
        self.h2.data_to_send()
        self.send(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())

    # -- out ----------------------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Write bytes; False once the server has closed the connection."""
        if self.write_failed:
            return False
        try:
            self.sock.sendall(data)
        except OSError:  # ssl.SSLError and timeouts too
            self.write_failed = True
            return False
        self.sent += len(data)
        return True

    def flush(self) -> bool:
        return self.send(self.h2.data_to_send())

    def headers_frame(
        self,
        stream_id: int,
        fields: Fields,
        *,
        end_stream: bool = True,
        end_headers: bool = True,
    ) -> bytes:
        """A HEADERS frame encoded with this connection's own HPACK encoder (no validation)."""
        frame = HeadersFrame(stream_id, self.encoder.encode(fields))
        if end_stream:
            frame.flags.add("END_STREAM")
        if end_headers:
            frame.flags.add("END_HEADERS")
        return frame.serialize()

    def data_frame(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> bytes:
        frame = DataFrame(stream_id, data)
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame.serialize()

    def rst_frame(self, stream_id: int, code: int = 8) -> bytes:
        return RstStreamFrame(stream_id, error_code=code).serialize()

    # -- in -----------------------------------------------------------------------------------

    def handshake(self) -> Received:
        """Wait for the server's SETTINGS and its acknowledgement of ours."""
        return self.read(lambda r: any("ACK" in f.flags for f in r.of(SettingsFrame)))

    def _frames(self) -> Iterator[Frame]:
        buffer = self._buffer
        while len(buffer) >= 9:
            header = bytes(buffer[:9])
            frame, length = Frame.parse_frame_header(memoryview(header))
            if len(buffer) < 9 + length:
                return
            frame.parse_body(memoryview(bytes(buffer[9 : 9 + length])))
            del buffer[: 9 + length]
            yield frame

    def _take(self, frame: Frame) -> None:
        received = self.received
        received.frames.append(frame)
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags and self.ack_settings:
            self.send(SettingsFrame(0, flags=["ACK"]).serialize())
        if isinstance(frame, (HeadersFrame, ContinuationFrame)):
            self._block.append(frame)
            if "END_HEADERS" in frame.flags:
                data = b"".join(f.data for f in self._block)  # type: ignore[attr-defined]
                stream_id = self._block[0].stream_id
                self._block = []
                fields = [(bytes(n), bytes(v)) for n, v in self.decoder.decode(data, raw=True)]
                received.headers.setdefault(stream_id, []).append(fields)

    def read(
        self, until: Callable[[Received], bool] | None = None, timeout: float | None = None
    ) -> Received:
        """Read frames until ``until`` holds, the server closes, or ``timeout`` passes."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        received = self.received
        try:
            while not received.closed and not (until is not None and until(received)):
                left = deadline - time.monotonic()
                if left <= 0 or len(received.frames) > MAX_FRAMES:
                    break
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    break
                except OSError:  # a reset, or a TLS error
                    data = b""
                if not data:
                    received.closed = True
                    break
                self._buffer += data
                for frame in self._frames():
                    self._take(frame)
        finally:
            self.sock.settimeout(self.timeout)
        return received

    def read_until_closed(self, timeout: float | None = None) -> Received:
        return self.read(None, timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get(port: int, ca_file: Path, path: bytes = b"/") -> tuple[int | None, bytes]:
    """A well-behaved GET on a fresh connection (frames by the h2 library): (status, body)."""
    with H2Client(port, ca_file) as client:
        client.h2.send_headers(1, request_fields(path), end_stream=True)
        client.flush()
        received = client.read(lambda r: r.ended(1))
        return received.status(1), received.body(1)
