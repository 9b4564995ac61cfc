"""One timer per connection, moved lazily: its deadline changes with every request, the event
loop's timer only when it has to.

Re-arming the loop's timer for every request would cost a heap push and a cancel each time;
instead the handle fires, looks at the deadline, and sleeps again if it moved on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def _nothing() -> None:
    pass


class LazyTimer:
    """Calls ``callback`` once the deadline has passed; ``disarm`` makes it a no-op."""

    __slots__ = ("_callback", "_handle", "_loop", "deadline")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self.deadline = 0.0  # 0: disarmed

    def arm(self, seconds: float) -> None:
        self.deadline = deadline = self._loop.time() + seconds
        handle = self._handle
        if handle is not None and handle.when() > deadline:
            handle.cancel()
            handle = None
        if handle is None:
            self._handle = self._loop.call_at(deadline, self._fire)

    def push_back(self, seconds: float) -> None:
        """Move an armed deadline later; costs no timer operation."""
        if self._handle is None:
            self.arm(seconds)
        else:
            self.deadline = self._loop.time() + seconds

    def disarm(self) -> None:
        self.deadline = 0.0

    def drop(self) -> None:
        """Disarm for good: the connection is done.

        The callback (a method of the connection, which holds this timer) is let go too, so
        that no reference cycle keeps a closed connection until the cycle collector runs.
        """
        self.deadline = 0.0
        self._callback = _nothing
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        deadline = self.deadline
        if deadline == 0.0:
            return
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._fire)
            return
        self.deadline = 0.0
        self._callback()
