"""Connection timers: one per connection, moved lazily, all on one event-loop timer.

A connection's deadline changes with every request. Re-arming the loop's timer each time would
cost a heap push and a cancel; and one loop timer per connection costs every idle connection
about 600 bytes (the handle, its libuv timer, the bound method). So a ``LazyTimer`` is only a
deadline in a ``TimerWheel`` slot: the wheel wakes once per slot that holds timers, and a timer
whose deadline moved on meanwhile goes into a later slot instead of firing.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable

# Timers fire at most this late: the timeouts they serve are whole seconds.
RESOLUTION = 0.25


def _nothing() -> None:
    pass


class TimerWheel:
    """The timers of one event loop, in slots of RESOLUTION seconds, on one loop timer."""

    __slots__ = ("_handle", "_loop", "_order", "_slots", "_woken_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, set[LazyTimer]] = {}
        self._order: list[int] = []  # the slots' numbers, as a heap
        self._handle: asyncio.TimerHandle | None = None
        self._woken_at = math.inf  # the slot the loop timer wakes for

    def time(self) -> float:
        return self._loop.time()

    def add(self, timer: LazyTimer, deadline: float) -> None:
        slot = math.ceil(deadline / RESOLUTION)
        timers = self._slots.get(slot)
        if timers is None:
            self._slots[slot] = timers = set()
            heapq.heappush(self._order, slot)
        timers.add(timer)
        timer.slot = slot
        if slot < self._woken_at:
            self._wake_for(slot)

    def remove(self, timer: LazyTimer) -> None:
        timers = self._slots.get(timer.slot)
        timer.slot = 0
        if timers is not None:
            timers.discard(timer)
            # An empty slot is left in the heap: its wake-up finds nothing and costs one call.

    def _wake_for(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._woken_at = slot
        self._handle = self._loop.call_at(slot * RESOLUTION, self._tick)

    def _tick(self) -> None:
        self._handle = None
        # While the wheel turns, add() schedules nothing: the one wake-up is set at the end.
        self._woken_at = -math.inf
        order, slots = self._order, self._slots
        try:
            now_slot = self._loop.time() / RESOLUTION
            while order and order[0] <= now_slot:
                timers = slots.pop(heapq.heappop(order), None)
                while timers:
                    timer = timers.pop()
                    timer.slot = 0
                    try:
                        timer.fire()
                    except Exception as exc:  # a fault of one connection's, logged as asyncio would
                        self._loop.call_exception_handler(
                            {"message": "a connection timer failed", "exception": exc}
                        )
        finally:
            # Slots emptied by remove() are skipped, not woken for.
            while order and not slots.get(order[0]):
                slots.pop(heapq.heappop(order), None)
            self._woken_at = math.inf
            if order:
                self._wake_for(order[0])


class LazyTimer:
    """Calls ``callback`` once the deadline has passed; ``disarm`` makes it a no-op."""

    __slots__ = ("_callback", "_wheel", "deadline", "slot")

    def __init__(self, wheel: TimerWheel, callback: Callable[[], None]) -> None:
        self._wheel = wheel
        self._callback = callback
        self.deadline = 0.0  # 0: disarmed
        self.slot = 0  # the wheel slot this timer is in; 0: none

    def arm(self, seconds: float) -> None:
        wheel = self._wheel
        self.deadline = deadline = wheel.time() + seconds
        if self.slot and self.slot * RESOLUTION > deadline + RESOLUTION:
            wheel.remove(self)  # it would fire too late: an earlier slot
        if not self.slot:
            wheel.add(self, deadline)

    def push_back(self, seconds: float) -> None:
        """Move an armed deadline later; costs no timer operation."""
        if not self.slot:
            self.arm(seconds)
        else:
            self.deadline = self._wheel.time() + seconds

    def disarm(self) -> None:
        self.deadline = 0.0

    def drop(self) -> None:
        """Disarm for good: the connection is done.

        The callback (a method of the connection, which holds this timer) is let go too, and
        the wheel lets go of the timer, so that nothing keeps a closed connection.
        """
        self.deadline = 0.0
        self._callback = _nothing
        if self.slot:
            self._wheel.remove(self)

    def fire(self) -> None:
        """Called by the wheel when this timer's slot is due."""
        deadline = self.deadline
        if deadline == 0.0:
            return
        if self._wheel.time() < deadline:
            self._wheel.add(self, deadline)
            return
        self.deadline = 0.0
        self._callback()
