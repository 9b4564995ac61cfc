"""A conftest for the plugin's test sessions: after the last teardown, it writes down the
threads and child processes still there, and whether any code that changes a trust store was
ever loaded (to the file named by DEVTLS_LEFTOVERS)."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest


def child_processes() -> list[str]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == os.getpid():
            children.append(stat.split(" ", 2)[1])
    return children


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    report = os.environ.get("DEVTLS_LEFTOVERS")
    if report:
        threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        stores = sorted(m for m in sys.modules if m.startswith("devtls.truststores"))
        Path(report).write_text(
            json.dumps({"threads": threads, "children": child_processes(), "stores": stores})
        )
