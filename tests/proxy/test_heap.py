"""The heap is trimmed once after a burst of connections, not per close; sans-IO (a fake clock)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from devtls.proxy import heap
from devtls.proxy.heap import TRIM_DELAY_SECONDS, TRIM_MAX_WAIT_SECONDS, HeapTrimmer


class FakeLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        self.timers.append((self.now + delay, callback))
        return object()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while due := [t for t in self.timers if t[0] <= self.now]:
            self.timers.remove(due[0])
            due[0][1]()


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(heap, "malloc_trim", lambda pad: calls.append(pad) or 1)
    return calls


def close_all(trimmer: HeapTrimmer, loop: FakeLoop, count: int, every: float = 0.001) -> None:
    for remaining in range(count - 1, -1, -1):
        trimmer.closed(remaining)
        loop.advance(every)


def test_one_trim_after_a_burst_once_closes_stop(trims: list[int]) -> None:
    loop = FakeLoop()
    trimmer = HeapTrimmer(loop)  # type: ignore[arg-type]
    close_all(trimmer, loop, 1200)
    assert trims == []  # closes still coming a moment ago
    loop.advance(TRIM_DELAY_SECONDS + 0.1)
    assert trims == [0]
    loop.advance(60)
    assert trims == [0]


def test_few_connections_or_a_small_dip_never_trim(trims: list[int]) -> None:
    loop = FakeLoop()
    trimmer = HeapTrimmer(loop)  # type: ignore[arg-type]
    close_all(trimmer, loop, 40)  # below TRIM_AFTER_CLOSES
    for remaining in range(999, 600, -1):  # 1,000 open, 400 close: not a quarter
        trimmer.closed(remaining)
    loop.advance(60)
    assert trims == []


def test_endless_closes_still_trim_by_the_latest_deadline(trims: list[int]) -> None:
    loop = FakeLoop()
    trimmer = HeapTrimmer(loop)  # type: ignore[arg-type]
    close_all(trimmer, loop, 200)
    for _ in range(int(TRIM_MAX_WAIT_SECONDS * 4)):  # churn: one close every 0.25 s
        trimmer.closed(0)
        loop.advance(0.25)
    assert len(trims) == 1


def test_tune_malloc_leaves_a_user_setting_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(heap, "_mallopt", lambda param, value: calls.append((param, value)) or 1)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    heap.tune_malloc()
    assert calls == []
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    for name in [n for n in os.environ if n.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    heap.tune_malloc()
    assert calls == [(-3, heap.MMAP_THRESHOLD), (-1, heap.TRIM_THRESHOLD)]
