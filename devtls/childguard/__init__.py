"""A child that does not outlive its parent: the one platform switch for ``devtls run``.

``child_setup(parent_pid)`` is what the child runs between fork and exec: its own process
group (so that signals to the dev server and its children are sent explicitly, to the
group) and, where the kernel offers it, a signal when the parent dies (even by SIGKILL).
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def child_setup(parent_pid: int) -> Callable[[], None]:
    """The function to run in the child before exec (Popen's preexec_fn)."""
    if sys.platform == "linux":
        from devtls.childguard.linux import child_setup as linux_setup

        return linux_setup(parent_pid)
    from devtls.childguard.posix import child_setup as posix_setup  # pragma: no cover

    return posix_setup(parent_pid)  # pragma: no cover


def dies_with_parent() -> bool:
    """Whether the kernel ends the child when the parent dies (else only the route goes)."""
    return sys.platform == "linux"
