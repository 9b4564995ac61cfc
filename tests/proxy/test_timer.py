"""The connection timers: on one loop timer, never early, at most RESOLUTION late."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from devtls.proxy.timer import RESOLUTION, LazyTimer, TimerWheel


class Handle:
    def __init__(self, when: float, callback: Any) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """The two loop methods the wheel uses, with a time the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.handles: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> Handle:
        handle = Handle(when, callback)
        self.handles.append(handle)
        return handle

    def pending(self) -> list[Handle]:
        return [h for h in self.handles if not h.cancelled]

    def advance(self, seconds: float) -> None:
        """Run the loop's due timers, in order, up to now + seconds."""
        end = self.now + seconds
        while True:
            due = sorted((h for h in self.pending() if h.when <= end), key=lambda h: h.when)
            if not due:
                break
            handle = due[0]
            handle.cancelled = True  # run once
            self.now = max(self.now, handle.when)
            handle.callback()
        self.now = end


def make() -> tuple[Clock, TimerWheel]:
    clock = Clock()
    return clock, TimerWheel(cast(asyncio.AbstractEventLoop, clock))


def test_a_timer_fires_after_its_deadline_never_before() -> None:
    clock, wheel = make()
    fired: list[float] = []
    timer = LazyTimer(wheel, lambda: fired.append(clock.now))
    timer.arm(5)
    clock.advance(4.99)
    assert fired == []
    clock.advance(RESOLUTION + 0.02)
    assert len(fired) == 1
    assert 1005 <= fired[0] <= 1005 + RESOLUTION
    clock.advance(60)
    assert len(fired) == 1  # once


def test_many_timers_share_one_loop_timer() -> None:
    clock, wheel = make()
    fired: list[int] = []
    timers = [LazyTimer(wheel, lambda i=i: fired.append(i)) for i in range(1000)]
    for timer in timers:
        timer.arm(10)
        clock.now += 0.0001  # all within one slot
    assert len(clock.pending()) == 1
    clock.advance(11)
    assert sorted(fired) == list(range(1000))


def test_push_back_moves_the_deadline_without_a_loop_timer_operation() -> None:
    clock, wheel = make()
    fired: list[float] = []
    timer = LazyTimer(wheel, lambda: fired.append(clock.now))
    timer.arm(5)
    operations = len(clock.handles)
    for _ in range(20):
        clock.advance(1)
        timer.push_back(5)  # a request every second
    assert len(clock.handles) <= operations + 5  # a wake-up per 5 s, not per request
    assert fired == []
    clock.advance(5 + RESOLUTION)
    assert len(fired) == 1
    assert fired[0] >= 1025


def test_arming_earlier_moves_the_timer_to_an_earlier_slot() -> None:
    clock, wheel = make()
    fired: list[float] = []
    timer = LazyTimer(wheel, lambda: fired.append(clock.now))
    timer.arm(300)  # an idle timeout
    timer.arm(2)  # then a shorter one
    clock.advance(2 + RESOLUTION)
    assert len(fired) == 1
    assert fired[0] <= 1002 + RESOLUTION


def test_disarmed_and_dropped_timers_do_not_fire_and_drop_lets_go() -> None:
    clock, wheel = make()
    fired: list[str] = []
    disarmed = LazyTimer(wheel, lambda: fired.append("disarmed"))
    dropped = LazyTimer(wheel, lambda: fired.append("dropped"))
    disarmed.arm(1)
    dropped.arm(1)
    disarmed.disarm()
    dropped.drop()
    assert dropped.slot == 0
    assert all(dropped not in timers for timers in wheel._slots.values())
    clock.advance(5)
    assert fired == []
    # Re-armed after a disarm, it fires again.
    disarmed.arm(1)
    clock.advance(2)
    assert fired == ["disarmed"]


def test_a_callback_may_arm_and_drop_timers_while_the_wheel_turns() -> None:
    clock, wheel = make()
    fired: list[str] = []
    other = LazyTimer(wheel, lambda: fired.append("other"))

    def first() -> None:
        fired.append("first")
        other.drop()  # in the same slot, dropped before its turn
        again.arm(1)

    again = LazyTimer(wheel, lambda: fired.append("again"))
    timer = LazyTimer(wheel, first)
    timer.arm(1)
    other.arm(1)
    clock.advance(1 + RESOLUTION)
    assert fired in (["first"], ["other", "first"])
    clock.advance(1 + RESOLUTION)
    assert fired[-1] == "again"
    assert not wheel._slots or all(not timers for timers in wheel._slots.values())


def test_a_failing_callback_does_not_stop_the_others() -> None:
    clock, wheel = make()
    errors: list[dict[str, Any]] = []
    clock.call_exception_handler = errors.append  # type: ignore[attr-defined]
    fired: list[int] = []

    def fail() -> None:
        raise RuntimeError("a bug")

    timers = [
        LazyTimer(wheel, fail),
        *(LazyTimer(wheel, lambda i=i: fired.append(i)) for i in range(3)),
    ]
    for timer in timers:
        timer.arm(1)
    clock.advance(2)
    assert sorted(fired) == [0, 1, 2]
    assert len(errors) == 1
    later = LazyTimer(wheel, lambda: fired.append(9))
    later.arm(1)
    clock.advance(2)
    assert fired[-1] == 9
