"""A WSGI or ASGI app served over plain HTTP on a free loopback port, in a thread of its own.

``devtls_https(app)`` puts the forwarder in front of one. WSGI runs on the standard library's
wsgiref (a thread per request, joined when it stops); ASGI runs on uvicorn, if installed: an
ASGI server is not devtls's to write.
"""

from __future__ import annotations

import inspect
import socket
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any, Literal, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from devtls.errors import DevtlsError, UsageError

Interface = Literal["auto", "asgi", "wsgi"]
# The longest wait for an app server to listen, and for one to stop.
START_SECONDS = 10.0
STOP_SECONDS = 10.0
# uvicorn gives open connections this long to finish when stopping.
ASGI_GRACEFUL_SECONDS = 2.0


class AppServer(Protocol):
    port: int

    def stop(self) -> None: ...


def is_asgi(app: object) -> bool:
    """An ASGI app is a coroutine function, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - the method itself is inspected
    return call is not None and inspect.iscoroutinefunction(call)


def start_app(app: Any, interface: Interface = "auto") -> AppServer:
    if interface not in ("auto", "asgi", "wsgi"):
        raise UsageError(f"interface {interface!r} is unknown", "use 'auto', 'asgi' or 'wsgi'")
    if not callable(app):
        raise UsageError(
            f"{type(app).__name__} is neither an app nor an upstream",
            "pass a WSGI or ASGI app, a port number or an http(s):// URL",
        )
    if interface == "asgi" or (interface == "auto" and is_asgi(app)):
        return ASGIServer(app)
    return WSGIAppServer(app)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per request on stderr: the forwarder keeps an access log."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # Request threads are joined by server_close(): none outlives the server.
    daemon_threads = False
    block_on_close = True


class WSGIAppServer:
    def __init__(self, app: Any) -> None:
        self._server = _ThreadingWSGIServer(("127.0.0.1", 0), _QuietHandler)
        self._server.set_app(app)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"devtls-wsgi-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STOP_SECONDS)


class ASGIServer:
    def __init__(self, app: Any) -> None:
        try:
            import uvicorn
        except ImportError:
            raise DevtlsError(
                "devtls_https runs ASGI apps with uvicorn, which is not installed",
                "pip install uvicorn (or pass the port of a server you started)",
            ) from None
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            # None: uvicorn leaves the test session's logging configuration alone.
            log_config=None,
            access_log=False,
            lifespan="auto",
            timeout_graceful_shutdown=int(ASGI_GRACEFUL_SECONDS),
        )
        self._server = uvicorn.Server(config)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"devtls-asgi-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                self.stop()
                raise DevtlsError(f"the ASGI app did not start within {START_SECONDS:g} s")
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise DevtlsError(f"the ASGI app did not start: {self._failure or 'uvicorn exited'}")

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported by the starting thread
            self._failure = exc

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(STOP_SECONDS)
        self._socket.close()
