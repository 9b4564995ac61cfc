"""Imports run one way: cli -> services -> core. Core never imports asyncio, typer or rich."""

from __future__ import annotations

import ast
from pathlib import Path

import devtls

PACKAGE = Path(devtls.__file__).parent
CORE = {
    "errors",
    "_files",
    "_x509",
    "certfiles",
    "names",
    "ca",
    "issue",
    "config",
    "serve_settings",
    "proxy.http1",
    "proxy.uri",
    "proxy.clienthello",
    "proxy.forwarding",
    "proxy.h2fields",
    "proxy.routes",
    "proxy.routetable",
    "control_protocol",
    "hostsfile",
    "devrun_inject",
    "proxy.pages",
    "expiry",
    "lan",
    "proxy.onboarding",
    "constraints",
    "castaging",
    "dockerenv",
    # The ACME server's protocol side: sans-IO (server.py and validate.py do the I/O).
    "acmeserver",
    "acmeserver.allowlist",
    "acmeserver.challenges",
    "acmeserver.jwsverify",
    "acmeserver.nonces",
    "acmeserver.orders",
    "acmeserver.problems",
    "acmeserver.revocation",
    "acmeserver.saved",
    "acmeserver.service",
    "acmeserver.state",
    "acmeserver.wire",
}
FORBIDDEN_IN_CORE = {"asyncio", "typer", "rich", "click"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def all_modules() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_core_modules_stay_free_of_io_frameworks() -> None:
    for name, imported in all_modules().items():
        if name in CORE:
            heads = {i.split(".")[0] for i in imported}
            assert not heads & FORBIDDEN_IN_CORE, f"{name} imports {heads & FORBIDDEN_IN_CORE}"
            assert not any(i.startswith("devtls.") and i[7:] not in CORE for i in imported), (
                f"core module {name} imports a service: {imported}"
            )


def test_nothing_imports_the_cli() -> None:
    for name, imported in all_modules().items():
        if name not in {"cli", "__main__"}:
            assert "devtls.cli" not in imported, name


def test_errors_imports_nothing_internal() -> None:
    assert not any(i.startswith("devtls") for i in imports_of(PACKAGE / "errors.py"))


def test_truststore_platform_modules_do_not_import_each_other() -> None:
    stores = PACKAGE / "truststores"
    if not stores.exists():
        return
    # base and policies hold what the stores share; the others never import each other.
    platform_files = {p.stem for p in stores.glob("*.py")} - {"__init__", "base", "policies"}
    for stem in platform_files:
        imported = imports_of(stores / f"{stem}.py")
        others = {f"devtls.truststores.{o}" for o in platform_files - {stem}}
        assert not imported & others, f"{stem} imports {imported & others}"


def runtime_imports_of(path: Path) -> set[str]:
    """Imports that run: those under ``if TYPE_CHECKING:`` only feed the type checker."""
    found: set[str] = set()

    def walk(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                walk(node.orelse)
                continue
            for child in ast.walk(node):
                if isinstance(child, ast.Import):
                    found.update(alias.name for alias in child.names)
                elif isinstance(child, ast.ImportFrom) and child.module:
                    found.add(child.module)
                    # "from devtls.proxy import http1" imports the module devtls.proxy.http1.
                    found.update(f"{child.module}.{alias.name}" for alias in child.names)

    walk(ast.parse(path.read_text()).body)
    return found


def test_no_import_cycles() -> None:
    modules = {p: module_name(p) for p in PACKAGE.rglob("*.py")}
    names = {f"devtls.{m}".removesuffix(".__init__") for m in modules.values()}
    graph = {
        f"devtls.{name}".removesuffix(".__init__"): {
            i for i in runtime_imports_of(path) if i in names and i != "devtls"
        }
        for path, name in modules.items()
    }
    # Depth-first search; a module met again while still on the path closes a cycle.
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles)
