"""The devtls block of a hosts file, sans-IO: text in, text out.

``devtls hosts sync`` keeps one marked block naming the route hosts on loopback, for the
programs that do not resolve ``*.localhost`` by themselves (glibc without systemd-resolved,
and so Python, Node, wget). The rest of the file is never touched, byte for byte:

- an existing block is replaced where it is; otherwise the block is appended;
- the file keeps its line endings (CRLF stays CRLF) and whether it ends with a newline
  (the block's last line has none when the file had none, so ``clean`` knows that the
  newline before the block was added by ``sync`` and takes it away again);
- a file with two blocks, a block without its end, or an end without its block is refused
  rather than guessed at.

Lines are split on ``\\n`` only, as the resolvers read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from devtls.errors import DevtlsError, UsageError
from devtls.names import NameKind, parse_name

BEGIN_MARKER = (
    "# BEGIN devtls: written by 'devtls hosts sync'; do not edit by hand, "
    "'devtls hosts clean' removes it"
)
END_MARKER = "# END devtls"
# IPv4 only: the router listens on 127.0.0.1 unless told otherwise, and a ::1 entry would be
# tried first by programs that sort IPv6 first (glibc), which then need a fallback to connect.
LOOPBACK = ("127.0.0.1",)
# A marker is recognised with any surrounding blanks, so an editor that trims or indents
# lines does not turn the block into an orphan.
_BEGIN = re.compile(r"^\s*#\s*BEGIN devtls(?::|\s|$)")
_END = re.compile(r"^\s*#\s*END devtls\s*$")


class HostsFileError(DevtlsError):
    """The hosts file holds a devtls block that cannot be handled safely."""


@dataclass(frozen=True)
class HostNames:
    """The names that go in the block, and those that cannot (wildcards, IP addresses)."""

    names: tuple[str, ...]
    skipped: tuple[str, ...]


def host_names(texts: list[str] | tuple[str, ...]) -> HostNames:
    """Check each name; DNS names are kept (lower case, IDNA, sorted, once each).

    A wildcard cannot be written in a hosts file and an IP address needs no entry, so both
    are skipped; an email address or a URI is a usage error.
    """
    names: set[str] = set()
    skipped: list[str] = []
    for text in texts:
        name = parse_name(text)
        if name.kind is NameKind.IP or (name.kind is NameKind.DNS and name.value.startswith("*.")):
            if name.value not in skipped:
                skipped.append(name.value)
        elif name.kind is NameKind.DNS:
            names.add(name.value)
        else:
            raise UsageError(
                f"{text!r} is not a host name", "name hosts like app.localhost or api.test"
            )
    return HostNames(tuple(sorted(names)), tuple(skipped))


def skipped_note(skipped: tuple[str, ...]) -> str:
    """One line saying which names were left out, and why."""
    wildcards = [name for name in skipped if name.startswith("*.")]
    addresses = [name for name in skipped if not name.startswith("*.")]
    parts = []
    if wildcards:
        parts.append(f"{', '.join(wildcards)} (a hosts file cannot hold a wildcard)")
    if addresses:
        parts.append(f"{', '.join(addresses)} (an IP address needs no entry)")
    return "left out " + " and ".join(parts)


def split_lines(text: str) -> list[str]:
    """The lines of ``text``, each with its ``\\n``; the last one may lack it."""
    lines = text.split("\n")
    last = lines.pop()
    out = [line + "\n" for line in lines]
    if last:
        out.append(last)
    return out


def _newline(text: str) -> str:
    """The file's line ending, judged by its first line."""
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def _ending(line: str) -> str:
    return "\r\n" if line.endswith("\r\n") else "\n"


def _find_block(lines: list[str], path: str) -> tuple[int, int] | None:
    """The indexes of the begin and end marker lines, or None when there is no block."""
    begins = [i for i, line in enumerate(lines) if _BEGIN.match(line)]
    ends = [i for i, line in enumerate(lines) if _END.match(line)]
    if not begins and not ends:
        return None
    hint = f"fix {path} by hand: keep one block from '# BEGIN devtls' to '{END_MARKER}'"
    if len(begins) > 1:
        raise HostsFileError(
            f"{path} holds {len(begins)} devtls blocks (lines "
            f"{', '.join(str(i + 1) for i in begins)})",
            hint,
        )
    if not begins:
        raise HostsFileError(
            f"{path} has a '{END_MARKER}' line (line {ends[0] + 1}) without its begin line", hint
        )
    begin = begins[0]
    after = [i for i in ends if i > begin]
    if not after:
        raise HostsFileError(
            f"the devtls block of {path} (line {begin + 1}) has no '{END_MARKER}' line", hint
        )
    if len(ends) > 1:
        raise HostsFileError(f"{path} has {len(ends)} '{END_MARKER}' lines", hint)
    return begin, after[0]


def block_lines(names: tuple[str, ...], newline: str = "\n") -> list[str]:
    """The block, each line ending with ``newline``."""
    entries = [f"{address} {name}" for name in names for address in LOOPBACK]
    return [line + newline for line in (BEGIN_MARKER, *entries, END_MARKER)]


def names_in_block(text: str, path: str = "the hosts file") -> tuple[str, ...]:
    """The names the current block holds (empty without a block)."""
    lines = split_lines(text)
    found = _find_block(lines, path)
    if found is None:
        return ()
    names: list[str] = []
    for line in lines[found[0] + 1 : found[1]]:
        for name in line.split("#", 1)[0].split()[1:]:
            if name not in names:
                names.append(name)
    return tuple(names)


def sync(text: str, names: tuple[str, ...], path: str = "the hosts file") -> str:
    """``text`` with exactly one devtls block naming ``names`` (none: without a block)."""
    if not names:
        return clean(text, path)
    lines = split_lines(text)
    found = _find_block(lines, path)
    if found is not None:
        begin, end = found
        newline = _ending(lines[begin])
        block = block_lines(names, newline)
        if not lines[end].endswith("\n"):
            block[-1] = block[-1].removesuffix(newline)
        return "".join([*lines[:begin], *block, *lines[end + 1 :]])
    newline = _newline(text)
    block = block_lines(names, newline)
    if text and not text.endswith("\n"):
        # The file had no final newline: neither has the block, and the one between is ours.
        block[-1] = block[-1].removesuffix(newline)
        return text + newline + "".join(block)
    return text + "".join(block)


def clean(text: str, path: str = "the hosts file") -> str:
    """``text`` without its devtls block, exactly as it was before ``sync`` added it."""
    lines = split_lines(text)
    found = _find_block(lines, path)
    if found is None:
        return text
    begin, end = found
    before, after = lines[:begin], lines[end + 1 :]
    if not lines[end].endswith("\n") and before:
        # The last line before the block got its newline from sync (the block's own line
        # ending): take it away again.
        last, newline = before[-1], _ending(lines[begin])
        before[-1] = last.removesuffix(newline if last.endswith(newline) else "\n")
    return "".join([*before, *after])
