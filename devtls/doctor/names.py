"""Whether each route name resolves to loopback, through the system resolver (getaddrinfo).

That is the resolver Node, Python and wget ask. Browsers and curl answer ``*.localhost``
themselves, so a ``.localhost`` name the system does not know is a warning, any other name
that does not resolve, or resolves anywhere but loopback, a failure.
"""

from __future__ import annotations

import ipaddress
import socket
import threading

from devtls.doctor.model import Check, Context
from devtls.doctor.running import Running

# A wildcard route is looked up through one name under it.
WILDCARD_PROBE_LABEL = "doctor-check"
# Route names looked up; the rest of a very long route list is left out (and said so).
MAX_NAMES = 32


def lookup_name(host: str) -> str:
    return f"{WILDCARD_PROBE_LABEL}{host[1:]}" if host.startswith("*.") else host


def resolve_all(hosts: list[str], timeout: float) -> dict[str, list[str] | str]:
    """getaddrinfo for every host at once: its addresses, or why there are none.

    The lookups run in daemon threads: a resolver that hangs cannot hold doctor (or its exit).
    """
    results: dict[str, list[str] | str] = {}
    lock = threading.Lock()

    def one(host: str) -> None:
        try:
            infos = socket.getaddrinfo(lookup_name(host), None, proto=socket.IPPROTO_TCP)
            answer: list[str] | str = sorted({str(info[4][0]) for info in infos})
        except (OSError, UnicodeError) as exc:
            answer = str(getattr(exc, "strerror", None) or exc)
        with lock:
            results[host] = answer

    threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    with lock:
        return {h: results.get(h, f"no answer within {timeout:g} s") for h in hosts}


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_names(ctx: Context, running: Running) -> list[Check]:
    hosts = running.hosts
    if not hosts:
        return [Check("route names", "skip", "no routes (no router runs, no ./devtls.toml)")]
    checks: list[Check] = []
    if len(hosts) > MAX_NAMES:
        checks.append(
            Check("route names", "skip", f"only the first {MAX_NAMES} of {len(hosts)} checked")
        )
        hosts = hosts[:MAX_NAMES]
    answers = resolve_all(hosts, ctx.timeout)
    listable = [h for h in hosts if not h.startswith("*.") and not _is_ip(h)]
    sync = f"devtls hosts sync {' '.join(listable)}"
    for host in hosts:
        checks.append(judge_answer(host, answers[host], sync))
    return checks


def judge_answer(host: str, answer: list[str] | str, sync: str) -> Check:
    name = f"route {host}"
    shown = lookup_name(host)
    wildcard = host.startswith("*.")
    fix = sync
    if wildcard:
        suffix = host[2:]
        fix = (
            f"a hosts file cannot name {host}: let a local resolver answer it "
            f"(dnsmasq: address=/{suffix}/127.0.0.1)"
        )
    elif _is_ip(host):
        fix = f"route a loopback name instead of {host} (e.g. --route 'app.localhost=...')"
    if isinstance(answer, str):
        local = shown.endswith(".localhost") or shown == "localhost"
        found = f"{shown} does not resolve ({answer})"
        if local:
            found += (
                "; browsers and curl resolve *.localhost themselves, Node, Python and wget do not"
            )
        return Check(name, "warn" if local else "fail", found, fix)
    outside = [a for a in answer if not _is_loopback(a)]
    if outside and _is_ip(host):
        return Check(name, "fail", f"{host} is not a loopback address", fix)
    if outside:
        return Check(
            name,
            "fail",
            f"{shown} resolves to {', '.join(outside)}, not loopback: clients do not reach devtls",
            fix,
        )
    return Check(name, "ok", f"{shown} resolves to {', '.join(answer)}")
