"""What ``devtls run`` decides without doing anything: the app's name, the dev server's flags.

Sans-IO: the package.json text, the folder's name and the git branch come in as values; no
file is read and no process is started here.

The name becomes ``NAME.localhost``: ``--name``, else package.json's ``name`` (an npm scope
``@scope/x`` dropped), else the folder's, each made a DNS label; in a git worktree other
than the main one the branch is one more label in front (``branch.NAME``).

Dev servers that ignore ``PORT`` get their own flags (``INJECTIONS``), found through the
launchers that run them: ``npx vite``, ``python -m uvicorn``, ``npm run dev`` (read from
package.json's scripts, the flags after ``--``), ``pnpm dev``, ``yarn dev``, ``bun run dev``.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from devtls.errors import UsageError

LOCALHOST = "localhost"
# RFC 1035: a label is 1 to 63 letters, digits and hyphens, not starting or ending with one.
MAX_LABEL = 63
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# A host name is at most 253 characters; ".localhost" takes 10 of them.
MAX_NAME = 253 - len(LOCALHOST) - 1
FALLBACK_NAME = "app"


def sanitize_label(text: str) -> str | None:
    """Any text -> one DNS label (``My App_2`` -> ``my-app-2``), or None when nothing is left."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    label = label[:MAX_LABEL].rstrip("-")
    return label or None


def check_name(text: str) -> str:
    """A ``--name``: one label or dotted labels, lower-cased; ``.localhost`` may be given."""
    name = text.strip().lower().rstrip(".")
    if name == LOCALHOST or name.endswith("." + LOCALHOST):
        name = name[: -len(LOCALHOST)].rstrip(".")
    labels = name.split(".")
    if not name or len(name) > MAX_NAME or not all(_LABEL.match(label) for label in labels):
        raise UsageError(
            f"--name {text!r} is not a host name",
            "use letters, digits and hyphens, in labels joined by dots (e.g. --name shop or "
            "--name api.shop)",
        )
    return name


def package_name(package_json: str) -> str | None:
    """The label from package.json's ``name`` (``@acme/web`` -> ``web``), or None."""
    try:
        data = json.loads(package_json)
    except ValueError:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str):
        return None
    if name.startswith("@") and "/" in name:
        name = name.partition("/")[2]
    return sanitize_label(name)


def app_name(
    explicit: str | None,
    package_json: str | None,
    folder: str,
    branch: str | None = None,
) -> str:
    """The NAME of ``NAME.localhost`` (see the module doc); ``branch`` only in a linked
    worktree."""
    if explicit is not None:
        name = check_name(explicit)
    else:
        name = (
            (package_name(package_json) if package_json is not None else None)
            or sanitize_label(folder)
            or FALLBACK_NAME
        )
    if branch:
        label = sanitize_label(branch.replace("/", "-"))
        if label and len(label) + 1 + len(name) <= MAX_NAME:
            name = f"{label}.{name}"
    return name


def host_of(name: str) -> str:
    return f"{name}.{LOCALHOST}"


# -- the dev servers' own flags -------------------------------------------------------------

LOOPBACK = "127.0.0.1"
# webpack-dev-server puts its own port in the bundle's socket URL; this makes the page dial
# the address it was loaded from (the router's), path /ws.
WEBPACK_SOCKET_URL = "auto://0.0.0.0:0/ws"


# In ``DevServer.commands``: whatever the first argument is (uvicorn's is the app).
ANY = "*"


@dataclass(frozen=True)
class DevServer:
    """One dev server that ignores PORT: how its command is recognised, what it is given."""

    name: str
    binaries: frozenset[str]
    # The first argument that is no option: one of these, or (when None is in it) none at all.
    commands: frozenset[str | None]
    # ``{port}`` and ``{host}`` are filled in.
    flags: tuple[str, ...]
    # With ANY in ``commands``: the first arguments that still mean something else.
    not_commands: frozenset[str] = frozenset()

    def runs(self, binary: str, sub: str | None) -> bool:
        if binary not in self.binaries:
            return False
        if ANY in self.commands:
            return sub not in self.not_commands
        return sub in self.commands

    def arguments(self, port: int, given: Sequence[str]) -> list[str]:
        """The flags to add, leaving out a ``--host`` the user gave."""
        flags = [f.format(port=port, host=LOOPBACK) for f in self.flags]
        if _has_option(given, "--host"):
            at = flags.index("--host")
            del flags[at : at + 2]
        return flags


INJECTIONS: tuple[DevServer, ...] = (
    DevServer(
        "Vite",
        frozenset({"vite"}),
        # ``vite``, ``vite dev``, ``vite preview``, ``vite ./root``; an option's value may
        # come first too (``vite --mode x``).
        frozenset({ANY}),
        ("--port", "{port}", "--strictPort", "--host", "{host}"),
        frozenset({"build", "optimize"}),
    ),
    DevServer(
        "Astro",
        frozenset({"astro"}),
        frozenset({"dev", "preview"}),
        ("--port", "{port}", "--host", "{host}"),
    ),
    DevServer(
        "Angular CLI",
        frozenset({"ng"}),
        frozenset({"serve", "s", "dev"}),
        ("--port", "{port}", "--host", "{host}"),
    ),
    DevServer(
        "webpack-dev-server",
        frozenset({"webpack", "webpack-cli"}),
        frozenset({"serve", "server", "s"}),
        ("--port", "{port}", "--host", "{host}", "--client-web-socket-url", WEBPACK_SOCKET_URL),
    ),
    DevServer(
        "uvicorn",
        frozenset({"uvicorn"}),
        frozenset({ANY}),
        ("--port", "{port}", "--host", "{host}"),
    ),
    DevServer(
        "Flask",
        frozenset({"flask"}),
        frozenset({"run"}),
        ("--port", "{port}", "--host", "{host}"),
    ),
    DevServer(
        "webpack-dev-server",
        frozenset({"webpack-dev-server"}),
        frozenset({ANY}),
        ("--port", "{port}", "--host", "{host}", "--client-web-socket-url", WEBPACK_SOCKET_URL),
    ),
)

# Launchers that run a package's binary: ``npx vite``, ``pnpm exec vite``, ``bunx vite``.
_EXEC_LAUNCHERS = {"npx": (), "bunx": (), "pnpx": (), "pnpm": ("exec", "dlx"), "yarn": ("exec",)}
# Package managers that run a package.json script, and whether extra arguments need a ``--``
# in front (npm's do; pnpm, yarn and bun pass what follows the script's name).
_SCRIPT_RUNNERS = {"npm": True, "pnpm": False, "yarn": False, "bun": False}
_RUN_WORDS = {"run", "run-script"}
# Script names a runner runs without ``run`` (``npm start``, ``yarn dev``).
_NPM_SHORTCUTS = {"start"}
_SHELL_OPERATORS = {"&&", "||", "|", ";", "&"}


@dataclass(frozen=True)
class Injection:
    server: DevServer
    argv: list[str]
    added: list[str]


def _has_option(args: Sequence[str], option: str) -> bool:
    return any(a == option or a.startswith(option + "=") for a in args)


def _binary(word: str) -> str:
    name = PurePath(word).name
    return name[: -len(".cmd")] if name.endswith(".cmd") else name


def _first_command(args: Sequence[str]) -> str | None:
    for arg in args:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def _strip_exec_launcher(argv: Sequence[str]) -> list[str]:
    """``npx -y vite --open`` -> ``vite --open``; anything else as it is."""
    if not argv:
        return []
    launcher = _binary(argv[0])
    if re.match(r"^python[0-9.]*$", launcher) and len(argv) > 2 and argv[1] == "-m":
        return list(argv[2:])  # python -m uvicorn
    if launcher not in _EXEC_LAUNCHERS:
        return list(argv)
    rest = list(argv[1:])
    words = _EXEC_LAUNCHERS[launcher]
    if words:
        if not rest or rest[0] not in words:
            return list(argv)
        rest = rest[1:]
    while rest and rest[0].startswith("-") and rest[0] != "--":
        rest = rest[1:]  # the launcher's own options (npx --yes)
    if rest and rest[0] == "--":
        rest = rest[1:]
    return rest


def dev_server_of(argv: Sequence[str]) -> DevServer | None:
    """The dev server a command starts directly (after ``npx`` and the like), if one needs
    flags."""
    command = _strip_exec_launcher(argv)
    if not command:
        return None
    binary = _binary(command[0])
    sub = _first_command(command[1:])
    for server in INJECTIONS:
        if server.runs(binary, sub):
            return server
    return None


def _script_of(argv: Sequence[str], scripts: Mapping[str, str]) -> tuple[str, bool] | None:
    """(the script's text, whether extra arguments need ``--``) when argv runs a
    package.json script; None otherwise."""
    if len(argv) < 2:
        return None
    runner = _binary(argv[0])
    if runner not in _SCRIPT_RUNNERS:
        return None
    rest = list(argv[1:])
    if rest[0] in _RUN_WORDS:
        rest = rest[1:]
    elif runner == "npm" and rest[0] not in _NPM_SHORTCUTS:
        return None
    if not rest or rest[0].startswith("-"):
        return None
    script = scripts.get(rest[0])
    if not isinstance(script, str):
        return None
    return script, _SCRIPT_RUNNERS[runner] and "--" not in rest


def scripts_of(package_json: str | None) -> dict[str, str]:
    if package_json is None:
        return {}
    try:
        data = json.loads(package_json)
    except ValueError:
        return {}
    scripts = data.get("scripts") if isinstance(data, dict) else None
    if not isinstance(scripts, dict):
        return {}
    return {k: v for k, v in scripts.items() if isinstance(k, str) and isinstance(v, str)}


def inject(argv: Sequence[str], port: int, package_json: str | None = None) -> Injection | None:
    """The command with the dev server's port and host flags added, or None when it is not
    a dev server that needs them (or the user gave ``--port`` already)."""
    argv = list(argv)
    server = dev_server_of(argv)
    if server is not None:
        if _has_option(argv, "--port"):
            return None
        added = server.arguments(port, argv)
        # Options after a ``--`` would go to something else (vite's own args end there).
        at = argv.index("--") if "--" in argv else len(argv)
        return Injection(server, argv[:at] + added + argv[at:], added)
    found = _script_of(argv, scripts_of(package_json))
    if found is None:
        return None
    script, needs_separator = found
    try:
        words = shlex.split(script)
    except ValueError:
        return None
    if not words or _SHELL_OPERATORS & set(words):
        return None  # several commands: which one is the server is not ours to guess
    # ``cross-env NODE_ENV=x vite`` and ``FOO=1 vite``: the assignments go first.
    while words and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] == "cross-env"):
        words = words[1:]
    server = dev_server_of(words)
    if server is None or _has_option(words, "--port") or _has_option(argv, "--port"):
        return None
    added = server.arguments(port, [*words, *argv])
    return Injection(server, [*argv, *(["--"] if needs_separator else []), *added], added)
