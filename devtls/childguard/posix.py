"""Other POSIX systems (macOS): no parent-death signal; the child gets its own process group.

A ``devtls run`` killed with SIGKILL here leaves the dev server running (its route still
goes: the router notices the closed control connection).
"""

from __future__ import annotations

import os
from collections.abc import Callable


def child_setup(parent_pid: int) -> Callable[[], None]:
    def setup() -> None:  # pragma: no cover - runs in the forked child
        os.setpgid(0, 0)

    return setup
