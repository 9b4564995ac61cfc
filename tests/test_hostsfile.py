"""The devtls block of a hosts file: written in place, removed exactly, refused when unclear."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtls import hostsfile
from devtls.errors import UsageError
from devtls.hostsfile import BEGIN_MARKER, END_MARKER, HostsFileError, clean, sync

DEBIAN = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
NAMES = ("a.localhost", "b.test")
BLOCK = f"{BEGIN_MARKER}\n127.0.0.1 a.localhost\n127.0.0.1 b.test\n{END_MARKER}\n"


def test_sync_appends_one_block_naming_each_host_on_both_loopbacks() -> None:
    assert sync(DEBIAN, NAMES) == DEBIAN + BLOCK
    assert BEGIN_MARKER.startswith("# BEGIN devtls")
    assert "do not edit by hand" in BEGIN_MARKER
    assert hostsfile.names_in_block(DEBIAN + BLOCK) == NAMES


def test_sync_replaces_the_block_where_it_is() -> None:
    text = DEBIAN + BLOCK + "10.0.0.5 nas.lan\n"
    assert sync(text, ("c.localhost",)) == (
        f"{DEBIAN}{BEGIN_MARKER}\n127.0.0.1 c.localhost\n{END_MARKER}\n10.0.0.5 nas.lan\n"
    )
    assert sync(text, NAMES) == text


def test_sync_of_no_names_leaves_no_block() -> None:
    assert sync(DEBIAN + BLOCK, ()) == DEBIAN
    assert sync(DEBIAN, ()) == DEBIAN


def test_a_file_without_a_final_newline_gets_one_and_clean_takes_it_back() -> None:
    text = DEBIAN.rstrip("\n")
    synced = sync(text, NAMES)
    assert synced == text + "\n" + BLOCK.removesuffix("\n")
    assert clean(synced) == text
    assert sync(synced, NAMES) == synced
    assert clean(sync(synced, ("c.localhost",))) == text


def test_crlf_stays_crlf() -> None:
    text = DEBIAN.replace("\n", "\r\n")
    synced = sync(text, NAMES)
    assert synced == text + BLOCK.replace("\n", "\r\n")
    assert clean(synced) == text
    without_final = text.removesuffix("\r\n")
    synced = sync(without_final, NAMES)
    assert synced == without_final + "\r\n" + BLOCK.replace("\n", "\r\n").removesuffix("\r\n")
    assert clean(synced) == without_final


def test_an_empty_file() -> None:
    assert sync("", NAMES) == BLOCK
    assert clean(BLOCK) == ""


def test_clean_removes_the_block_and_nothing_else() -> None:
    before, after = "# mine\n10.1.1.1 a\n", "\n# more of mine\n"
    assert clean(before + BLOCK + after) == before + after
    assert clean(DEBIAN) == DEBIAN
    # Indented or trimmed markers are still the block's.
    edited = before + BLOCK.replace(END_MARKER, f"  {END_MARKER}  ") + after
    assert clean(edited) == before + after


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (DEBIAN + BLOCK + BLOCK, "holds 2 devtls blocks (lines 3, 7)"),
        (DEBIAN + BLOCK.replace(f"{END_MARKER}\n", ""), "(line 3) has no '# END devtls' line"),
        (DEBIAN + f"{END_MARKER}\n", "has a '# END devtls' line (line 3) without its begin"),
        (f"{END_MARKER}\n" + BLOCK, "has 2 '# END devtls' lines"),
        (BLOCK + f"{END_MARKER}\n", "has 2 '# END devtls' lines"),
    ],
)
def test_an_unclear_block_is_refused_not_guessed(text: str, words: str) -> None:
    for change in (lambda t: sync(t, NAMES, "/etc/hosts"), lambda t: clean(t, "/etc/hosts")):
        with pytest.raises(HostsFileError) as caught:
            change(text)
        line = str(caught.value)
        assert words in line, line
        assert line.startswith("/etc/hosts ") or line.startswith("the devtls block of /etc/hosts")
        assert "fix /etc/hosts by hand" in line
        assert "\n" not in line


def test_names_are_checked_normalised_and_wildcards_and_ips_left_out() -> None:
    picked = hostsfile.host_names(
        ["B.Test", "a.localhost", "*.app.localhost", "127.0.0.1", "::1", "b.test", "bücher.test"]
    )
    assert picked.names == ("a.localhost", "b.test", "xn--bcher-kva.test")
    assert picked.skipped == ("*.app.localhost", "127.0.0.1", "::1")
    note = hostsfile.skipped_note(picked.skipped)
    assert note == (
        "left out *.app.localhost (a hosts file cannot hold a wildcard) "
        "and 127.0.0.1, ::1 (an IP address needs no entry)"
    )
    for bad in ("me@a.test", "spiffe://a.test/x", "bad host", "a..b", "-a.test"):
        with pytest.raises(UsageError):
            hostsfile.host_names([bad])


# Text with any line breaks and characters, and pieces of markers, but no devtls marker line.
fragments = st.sampled_from(
    [
        *("\n", "\r", "\r\n", " ", "\t", "#", "a.localhost", "127.0.0.1", "::1", "é", "\x00"),
        *("# BEGIN", "# END", "devtls", "# BEGIN devtls-other", "# END devtls."),
    ]
)
hosts_text = (
    st.lists(fragments | st.text(max_size=8), max_size=40)
    .map("".join)
    .filter(lambda t: hostsfile._find_block(hostsfile.split_lines(t), "x") is None)
)
host_name_lists = st.lists(
    st.from_regex(
        r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}\.localhost", fullmatch=True
    ),
    max_size=5,
).map(lambda names: hostsfile.host_names(names).names)


@given(hosts_text, host_name_lists)
def test_sync_then_clean_is_the_identity(text: str, names: tuple[str, ...]) -> None:
    assert clean(sync(text, names)) == text


@given(hosts_text, host_name_lists, host_name_lists)
def test_sync_twice_is_sync_once(
    text: str, first: tuple[str, ...], second: tuple[str, ...]
) -> None:
    once = sync(text, second)
    assert sync(once, second) == once
    # Whatever was synced before, the last sync decides, and clean still restores the text.
    assert sync(sync(text, first), second) == once
    assert clean(sync(sync(text, first), second)) == text
    assert hostsfile.names_in_block(once) == second


@given(hosts_text, host_name_lists)
def test_the_text_around_the_block_is_kept(text: str, names: tuple[str, ...]) -> None:
    synced = sync(text, names)
    assert synced.startswith(text)
    assert synced.count(BEGIN_MARKER) == (1 if names else 0)
    assert synced.endswith("\n") == (text.endswith("\n") or not text) or not names
