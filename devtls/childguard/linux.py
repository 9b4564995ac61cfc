"""Linux: prctl(PR_SET_PDEATHSIG) makes the kernel send SIGTERM to the child when its parent
dies, SIGKILL included.

The signal comes when the parent *thread* that forked the child ends, so the child must be
spawned from the thread that lives as long as the parent process (the main thread).
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def child_setup(parent_pid: int) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int

    def setup() -> None:  # pragma: no cover - runs in the forked child
        os.setpgid(0, 0)
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl: then no signal would ever come.
        if os.getppid() != parent_pid:
            os._exit(1)

    return setup
