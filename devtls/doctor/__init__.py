"""``devtls doctor``: read-only checks of everything that decides whether a client trusts devtls.

One module per group of checks; this one orders them. The CA comes first (everything else
needs it), then the system store (the runtimes' fixes depend on its verdict), then the rest
side by side: each group is bounded by its tools' timeouts, so the whole run stays short.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devtls.doctor.model import Check, Context, Report
from devtls.errors import DevtlsError
from devtls.truststores import TrustStore

__all__ = ["Check", "Context", "Report", "context_from_environment", "run"]


def context_from_environment() -> Context:
    """The context of the current user and process: CAROOT, HOME, the working folder."""
    from devtls.ca import resolve_caroot
    from devtls.devrun_router import listen_address

    return Context(
        caroot=resolve_caroot(),
        home=Path.home(),
        cwd=Path.cwd(),
        environ=dict(os.environ),
        default_listen=listen_address(),
    )


def run(ctx: Context) -> Report:
    from devtls.doctor.ca_files import check_ca
    from devtls.doctor.stores import (
        CHECKED_HERE,
        check_java,
        check_other,
        check_system,
        check_wsl,
        selected_stores,
    )

    checks = check_ca(ctx)
    if ctx.ca is None:
        skipped = ("stores", "browser profiles", "runtimes", "served certificates")
        checks += [Check(group, "skip", ctx.ca_missing) for group in skipped]
        from devtls.doctor.environment import check_variables
        from devtls.doctor.names import check_names
        from devtls.doctor.running import discover

        running = discover(ctx)
        checks += check_variables(ctx) + running.problems + check_names(ctx, running)
        return Report(ctx.caroot, tuple(checks))

    selected, note = selected_stores(ctx)
    if note is not None:
        checks.append(note)
    system = next((s for s in selected if s.name == "system"), None)
    groups: list[tuple[str, Callable[[], list[Check]]]] = []
    if system is not None:
        # Its verdict decides the runtimes' fixes: they wait for it (ctx.system_pending).
        # Its verifier hides SSL_CERT_FILE from this process for a moment, which the others
        # do not see: their tools get the environment of the context.
        pending = ctx.system_pending = threading.Event()

        def system_check(store: TrustStore = system) -> list[Check]:
            try:
                return [check_system(ctx, store)]
            finally:
                pending.set()

        groups.append(("store system", system_check))
    if any(s.name == "java" for s in selected):
        groups.append(("store java", lambda: [check_java(ctx)]))
    nss = next((s for s in selected if s.name == "nss"), None)
    if nss is not None:
        from devtls.doctor.profiles import check_profiles

        policy = getattr(nss, "policy", None)
        groups.append(("nss", lambda: check_profiles(ctx, policy)))
    others = [s for s in selected if s.name not in CHECKED_HERE]
    groups.append(("stores", lambda: [check_other(ctx, s) for s in others]))
    groups.append(("wsl", lambda: check_wsl(ctx, selected)))
    groups.append(("runtimes", lambda: _environment(ctx)))
    groups.append(("served", lambda: _running(ctx)))
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        futures = [pool.submit(_guarded, name, group) for name, group in groups]
        for future in futures:
            checks += future.result()
    return Report(ctx.caroot, tuple(checks))


def _guarded(name: str, group: Callable[[], list[Check]]) -> list[Check]:
    """A group that cannot finish (a store tool failing oddly) says so; the others go on."""
    try:
        return group()
    except DevtlsError as exc:
        return [Check(name, "warn", f"cannot tell: {exc}")]


def _environment(ctx: Context) -> list[Check]:
    from devtls.doctor.environment import check_variables
    from devtls.doctor.runtimes import check_runtimes

    return check_variables(ctx) + check_runtimes(ctx)


def _running(ctx: Context) -> list[Check]:
    from devtls.doctor.names import check_names
    from devtls.doctor.running import discover
    from devtls.doctor.served import check_served

    running = discover(ctx)
    return running.problems + check_names(ctx, running) + check_served(ctx, running)
