"""The forwarder in a background thread of this process, on an event loop of its own.

For tests: the pytest plugin's ``devtls_https`` and devtls's own suite start servers here, so
blocking clients (requests, curl in a subprocess) and async tests on another loop alike can
talk to them. Signals stay with the main thread; stopping is ``stop()``, bounded in time.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from devtls.config import ServeConfig
from devtls.proxy.server import Certificates, RunningServer, new_event_loop, shutdown, start

T = TypeVar("T")

# The longest wait for the loop to do one thing asked of it (start a server, stop one).
DEFAULT_TIMEOUT = 60.0
JOIN_SECONDS = 10.0


class LoopThread:
    """An event loop (the one ``devtls serve`` runs on) turning in a daemon thread."""

    def __init__(self, name: str = "devtls-loop") -> None:
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = DEFAULT_TIMEOUT) -> T:
        """Run ``coro`` on the loop and wait for its result (at most ``timeout`` seconds)."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    def call(self, fn: Callable[[], Any]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def stop(self) -> None:
        """Stop the loop, join the thread, close the loop; tasks still pending are cancelled."""
        if self.loop.is_closed():
            return
        self.run(_cancel_other_tasks())
        # Its threads (asyncio's getaddrinfo runs there) end with the loop, not after.
        self.run(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(JOIN_SECONDS)
        self.loop.close()


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def start_server(
    loop: LoopThread,
    config: ServeConfig,
    *,
    certificates: Certificates | None = None,
    write_log: Callable[[str], None] | None = None,
    listen_sockets: list[socket.socket] | None = None,
) -> RunningServer:
    """Open the forwarder's listeners on ``loop`` (or serve ``listen_sockets``, bound already);
    DevtlsError (port in use...) is raised here."""

    async def boot() -> RunningServer:
        return await start(
            config,
            certificates=certificates,
            write_log=write_log or (lambda _line: None),
            listen_sockets=listen_sockets,
        )

    return loop.run(boot())


def stop_server(loop: LoopThread, running: RunningServer) -> None:
    """Stop accepting, let requests in flight finish (``drain_timeout``), close everything."""
    loop.run(shutdown(running))
