"""devtls's build: the sans-IO core compiled with mypyc where a C compiler works, else pure Python.

One source. The modules in CORE are plain, strictly typed Python; mypyc (part of mypy, a build
requirement in pyproject.toml) turns them into C extension modules that sit next to the .py
files, and Python imports the extension first. Without a working C compiler, with
``DEVTLS_PURE=1``, or if the compiled build fails, the same files install as pure Python.
The build says which it made in one line ("devtls: core: ...", shown by ``pip -v``); the
wheel's name says it too (``cp311-cp311-linux_x86_64`` against ``py3-none-any``), and so does
``devtls --version`` once installed.

Everything else (metadata, dependencies, packages) is in pyproject.toml.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

CORE = [
    "devtls/proxy/http1.py",
    "devtls/proxy/uri.py",
    "devtls/proxy/routes.py",
    "devtls/proxy/forwarding.py",
    "devtls/proxy/h2fields.py",
    "devtls/proxy/clienthello.py",
]
# The compiled modules share one library: mypyc names it "<group>__mypyc". Inside the package,
# so that it installs (and, for an editable install, builds in place) next to them.
GROUP = "devtls.proxy.core"
LIBRARY = GROUP + "__mypyc"

log = logging.getLogger("devtls.build")


def say(message: str) -> None:
    # setuptools' own logging shows warnings whatever the verbosity.
    log.warning("devtls: core: %s", message)


def forced_pure() -> bool:
    return os.environ.get("DEVTLS_PURE", "").strip().lower() not in ("", "0", "false", "no")


def compiler_problem() -> str | None:
    """Why no extension module can be built here, or None when a C compiler works.

    Compiles and links a file that includes Python.h, as the real build will (``CC`` and
    ``LDSHARED`` are honoured, as setuptools honours them).
    """
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    here = Path.cwd()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            Path("probe.c").write_text(
                "#include <Python.h>\nint devtls_probe(void) { return 0; }\n"
            )
            objects = compiler.compile(["probe.c"], include_dirs=[sysconfig.get_paths()["include"]])
            compiler.link_shared_object(objects, "probe.so")
            os.chdir(here)
    except Exception as exc:  # no compiler, no Python.h, a failing linker (the tool said why)
        cc = " ".join(getattr(compiler, "compiler_so", ["cc"])[:1])
        return f"{cc} cannot build an extension module ({type(exc).__name__})"
    finally:
        os.chdir(here)
    return None


class BuildCore(build_ext):
    """Compiles the core, whole, or falls back to the pure-Python one.

    mypyc's C is generated only when the extensions are really built: the build's other
    steps (metadata, file lists) finalize this command too, and see the placeholders.
    """

    def run(self) -> None:
        if not self.extensions:
            super().run()
            return
        from mypyc.build import mypycify

        # Only the compiled modules must type-check here: the build environment lacks the
        # runtime dependencies (cryptography) of modules they import, which mypy reads silently.
        paths = ["--follow-imports=silent", *CORE]
        real = {ext.name: ext for ext in mypycify(paths, group_name=GROUP, opt_level="3")}
        if set(real) != {ext.name for ext in self.extensions}:
            raise RuntimeError(f"mypyc made other extension modules than expected: {sorted(real)}")
        for placeholder in self.extensions:
            # What mypyc made, into what this command has finalized already (its "_" fields).
            done = vars(placeholder)
            done.update(
                {
                    k: v
                    for k, v in vars(real[placeholder.name]).items()
                    if k not in done or k[0] != "_"
                }
            )
        try:
            super().run()
        except Exception as exc:
            # Never half a core: a shim without its shared library would not import.
            self._remove_outputs()
            self.extensions = []
            # (Its wheel keeps the platform tag, chosen before anything was built.)
            say(f"pure Python (compiling failed: {type(exc).__name__}, the messages above say why)")
            return
        say(f"compiled with mypyc ({len(CORE)} modules: {', '.join(Path(p).stem for p in CORE)})")

    def _remove_outputs(self) -> None:
        for ext in self.extensions:
            relative = self.get_ext_filename(self.get_ext_fullname(ext.name))
            for where in (Path(self.build_lib), Path.cwd()):
                (where / relative).unlink(missing_ok=True)


class BuildPy(build_py):
    """Says why the core is pure Python when it is; an editable pure build also removes the
    extension modules an earlier compiled one left in the source tree (they would shadow it)."""

    def run(self) -> None:
        super().run()
        if PURE_BECAUSE is None:
            return
        if self.editable_mode:
            for stale in compiled_files_in(Path.cwd()):
                stale.unlink()
                log.warning("devtls: removed %s (an earlier compiled build)", stale.name)
        say(f"pure Python ({PURE_BECAUSE})")


def compiled_files_in(root: Path) -> list[Path]:
    """The extension modules of the core (and their shared library) under ``root``."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    names = [*(p.removesuffix(".py") for p in CORE), LIBRARY.replace(".", "/")]
    return [root / (name + suffix) for name in names if (root / (name + suffix)).exists()]


def why_pure() -> str | None:
    """Why this build makes the pure-Python core, or None when it compiles it."""
    if forced_pure():
        return "DEVTLS_PURE is set"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed: mypy is a build requirement"
    if sys.implementation.name != "cpython":
        return f"mypyc builds for CPython, not {sys.implementation.name}"
    problem = compiler_problem()
    return None if problem is None else f"no working C compiler: {problem}"


PURE_BECAUSE = why_pure()
# Placeholders (one per module, and the library they share) until build_ext runs mypyc.
EXTENSIONS = (
    []
    if PURE_BECAUSE
    else [Extension(name, []) for name in [*(p[:-3].replace("/", ".") for p in CORE), LIBRARY]]
)

setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": BuildCore, "build_py": BuildPy})
