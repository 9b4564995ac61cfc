"""Imports run one way: cli -> services -> core. Core never imports asyncio, typer or rich."""

from __future__ import annotations

import ast
from pathlib import Path

import devtls

PACKAGE = Path(devtls.__file__).parent
CORE = {
    "errors",
    "_files",
    "names",
    "ca",
    "issue",
    "config",
    "proxy.http1",
    "proxy.uri",
    "proxy.clienthello",
    "proxy.forwarding",
    "proxy.routes",
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
    platform_files = {p.stem for p in stores.glob("*.py")} - {"__init__", "base"}
    for stem in platform_files:
        imported = imports_of(stores / f"{stem}.py")
        others = {f"devtls.truststores.{o}" for o in platform_files - {stem}}
        assert not imported & others, f"{stem} imports {imported & others}"
