"""glibc's heap under a forwarder's load: predictable thresholds, and memory given back.

CPython frees a closed connection's objects, but glibc keeps the freed memory in its heap:
pages between live allocations are never returned by ``free`` alone, so after 1,200
connections come and go the process stays at its peak. ``malloc_trim(0)`` returns every
free page (``madvise``) in every arena. It walks the heap (5 ms for 150 MiB, measured in
the soak), so it runs once a burst is over, not per connection. It can only return what is
free: a closed connection caught in a reference cycle waits for a full gc, so connections
must not be (see ``UpstreamPool._open``). Elsewhere (musl, macOS) it is a no-op.

glibc's thresholds move with the load (a freed mapped block raises the mmap threshold to its
size, the trim threshold to twice that), so whether a 256 KiB socket read is mapped, taken
from the heap top and trimmed again, or reused, depended on what else was in the heap: a
download through the TLS layer cost 2.5 page faults per 4 KiB forwarded, doubling its CPU
time. ``tune_malloc`` fixes them, once per process.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Callable
from typing import Any

# A burst worth trimming after: at least this many connections closed since the last trim...
TRIM_AFTER_CLOSES = 64
# ...and the count fell to a quarter of its peak since then, or less.
TRIM_BELOW_FRACTION = 4
# Closes come in waves: trim once none came for this long (memory freed after a trim stays
# in the heap until the next), or at the latest this long after the fall.
TRIM_DELAY_SECONDS = 1.0
TRIM_MAX_WAIT_SECONDS = 10.0
# Blocks up to this size come from the heap, never from mmap: the biggest transient objects
# of a busy connection (a 256 KiB socket read, its copies, its TLS records joined) are below it.
MMAP_THRESHOLD = 1024 * 1024
# A free heap top bigger than this goes back to the system at once; the rest after bursts.
TRIM_THRESHOLD = 4 * 1024 * 1024
# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _glibc_function(name: str, *argtypes: type[ctypes._SimpleCData[Any]]) -> Any:
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # pragma: no cover - no C library to load
        return None
    function = getattr(libc, name, None)
    if function is None:  # pragma: no cover - not glibc
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function


malloc_trim: Callable[[int], int] | None = _glibc_function("malloc_trim", ctypes.c_size_t)
_mallopt: Callable[[int, int], int] | None = _glibc_function("mallopt", ctypes.c_int, ctypes.c_int)


def tune_malloc() -> None:
    """Fixed glibc thresholds for this process, unless the user set MALLOC_*_ variables."""
    if _mallopt is None or any(name.startswith("MALLOC_") for name in os.environ):
        return
    _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


class HeapTrimmer:
    """Told of every closed connection; trims the heap once a burst is over."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._peak = 0
        self._remaining = 0
        self._closes = 0
        self._last_close = 0.0
        self._fell_at = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self.trims = 0

    def closed(self, remaining: int) -> None:
        self._remaining = remaining
        self._closes += 1
        now = self._last_close = self._loop.time()
        # The count before this close: the highest seen since the last trim is the peak.
        if remaining >= self._peak:
            self._peak = remaining + 1
        if (
            self._handle is None
            and self._closes >= TRIM_AFTER_CLOSES
            and remaining * TRIM_BELOW_FRACTION <= self._peak
            and malloc_trim is not None
        ):
            self._fell_at = now
            self._handle = self._loop.call_later(TRIM_DELAY_SECONDS, self._trim)

    def _trim(self) -> None:
        self._handle = None
        now = self._loop.time()
        quiet_for = now - self._last_close
        if quiet_for < TRIM_DELAY_SECONDS and now - self._fell_at < TRIM_MAX_WAIT_SECONDS:
            self._handle = self._loop.call_later(TRIM_DELAY_SECONDS - quiet_for, self._trim)
            return
        self._peak = self._remaining
        self._closes = 0
        self.trims += 1
        if malloc_trim is not None:
            malloc_trim(0)
