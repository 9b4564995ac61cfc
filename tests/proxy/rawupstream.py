"""An upstream that logs exactly what reaches it, parsed by h11 (a parser that is not ours),
and answers with raw bytes a test chooses, well-formed or not."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import h11


@dataclass
class Seen:
    connection: int
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    # The chunked body's trailer section, as it came.
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def field(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name.lower()]


# Given what was seen, the raw bytes to answer (the default: a small 200 with a length).
Answer = Callable[[Seen], bytes]


def ok(seen: Seen) -> bytes:
    body = b"ok " + seen.target
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@dataclass
class RawUpstream:
    answer: Answer = ok
    host: str = "127.0.0.1"
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    # Request heads parsed so far, their bodies complete or not.
    heads: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
            thread = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        parser = h11.Connection(h11.SERVER)
        current: Seen | None = None
        conn.settimeout(10)
        with contextlib.closing(conn):
            while True:
                try:
                    event = parser.next_event()
                except h11.RemoteProtocolError as exc:
                    self.errors.append(f"h11: {exc}")
                    return
                if event is h11.NEED_DATA:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    parser.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    current = Seen(number, event.method, event.target, list(event.headers), b"")
                    with self.lock:
                        self.heads += 1
                elif isinstance(event, h11.Data) and current is not None:
                    current.body += event.data
                elif isinstance(event, h11.EndOfMessage) and current is not None:
                    current.trailers = list(event.headers)
                    with self.lock:
                        self.seen.append(current)
                    try:
                        conn.sendall(self.answer(current))
                    except OSError:
                        return
                    answered, current = current, None
                    if parser.our_state is h11.MUST_CLOSE or answered.field(b"connection") == [
                        b"close"
                    ]:
                        return
                    # The answer was written raw: tell h11 the exchange is over.
                    try:
                        parser.send(
                            h11.Response(status_code=200, headers=[("Content-Length", "0")])
                        )
                        parser.send(h11.EndOfMessage())
                        parser.start_next_cycle()
                    except h11.LocalProtocolError:
                        return
                elif isinstance(event, h11.ConnectionClosed):
                    return

    def close(self) -> None:
        # shutdown wakes the accepting thread; close alone would leave the port listening.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@contextlib.contextmanager
def raw_upstream(answer: Answer = ok, host: str = "127.0.0.1") -> Iterator[RawUpstream]:
    upstream = RawUpstream(answer, host)
    try:
        yield upstream
    finally:
        upstream.close()
