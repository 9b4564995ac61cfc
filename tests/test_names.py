from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtls.errors import UsageError
from devtls.names import (
    Name,
    NameKind,
    default_file_names,
    parse_name,
    parse_names,
    wildcard_warnings,
)


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("localhost", NameKind.DNS, "localhost"),
        ("Example.TEST", NameKind.DNS, "example.test"),
        ("*.app.test", NameKind.DNS, "*.app.test"),
        ("my_host-1.internal", NameKind.DNS, "my_host-1.internal"),
        ("bücher.test", NameKind.DNS, "xn--bcher-kva.test"),
        ("127.0.0.1", NameKind.IP, "127.0.0.1"),
        ("::1", NameKind.IP, "::1"),
        ("2001:DB8::0:1", NameKind.IP, "2001:db8::1"),
        ("me@example.test", NameKind.EMAIL, "me@example.test"),
        ("spiffe://cluster.test/ns/app", NameKind.URI, "spiffe://cluster.test/ns/app"),
        ("https://a.test:8443/x", NameKind.URI, "https://a.test:8443/x"),
    ],
)
def test_valid_names(text: str, kind: NameKind, value: str) -> None:
    assert parse_name(text) == Name(kind, value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        (" localhost", "spaces"),
        ("local host", "spaces"),
        ("*.com", "top-level"),
        ("*.localhost", "top-level"),
        ("*", "not a valid hostname"),
        ("a.*.test", "not a valid hostname"),
        ("*.*.test", "not a valid hostname"),
        ("a..test", "not a valid hostname"),
        ("trailing.dot.", "not a valid hostname"),
        ("-leading.test", "not a valid hostname"),
        ("bad/char.test", "not a valid hostname"),
        ("256.1.1.1", "looks like an IP"),
        ("1.2.3", "looks like an IP"),
        ("fe80::1%eth0", "zone"),
        ("a" * 64 + ".test", "too long"),
        (("a" * 60 + ".") * 5 + "test", "too long"),
        ("@example.test", "email"),
        ("me@", "email"),
        ("me@*.test", "email"),
        ("spiffe://", "URI"),
        ("x:/nohost", "not a valid hostname"),
    ],
)
def test_invalid_names_say_why(text: str, reason: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        parse_name(text)
    assert reason in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_duplicates_collapse_in_order() -> None:
    names = parse_names(["localhost", "LOCALHOST", "::1", "0:0::1"])
    assert [str(n) for n in names] == ["localhost", "::1"]


def test_no_names_is_an_error() -> None:
    with pytest.raises(UsageError, match="no names"):
        parse_names([])


def test_wildcard_warning_as_mkcert() -> None:
    [warning] = wildcard_warnings(parse_names(["*.app.test", "app.test"]))
    assert "one level deep" in warning
    assert "a.b.app.test" in warning


def test_wildcard_warning_asks_for_the_base_name_only_when_it_is_missing() -> None:
    [given] = wildcard_warnings(parse_names(["*.app.test", "app.test"]))
    assert "add it as a name" not in given
    [missing] = wildcard_warnings(parse_names(["*.app.test", "other.test"]))
    assert "doesn't match 'app.test' itself either (add it as a name)" in missing


@pytest.mark.parametrize(
    ("names", "client", "expected"),
    [
        (["localhost"], False, ("localhost.pem", "localhost-key.pem", "localhost.p12")),
        (["localhost", "127.0.0.1", "::1"], False, ("localhost+2.pem", "localhost+2-key.pem", "localhost+2.p12")),
        (["*.app.test", "app.test"], False, ("_wildcard.app.test+1.pem", "_wildcard.app.test+1-key.pem", "_wildcard.app.test+1.p12")),
        (["::1"], True, ("__1-client.pem", "__1-client-key.pem", "__1-client.p12")),
        (["me@x.test"], False, ("me@x.test.pem", "me@x.test-key.pem", "me@x.test.p12")),
        # mkcert would write into a folder "spiffe_" here; devtls keeps it in the current folder.
        (["spiffe://a.test/x"], False, ("spiffe___a.test_x.pem", "spiffe___a.test_x-key.pem", "spiffe___a.test_x.p12")),
    ],
)  # fmt: skip
def test_default_file_names_follow_mkcert(
    names: list[str], client: bool, expected: tuple[str, str, str]
) -> None:
    files = default_file_names(parse_names(names), client=client)
    assert (files.cert, files.key, files.p12) == expected


name_chars = string.ascii_letters + string.digits + "-_.*:@/%?#[]\\ \x00é"


@given(st.text(alphabet=name_chars, max_size=80) | st.text(max_size=40))
def test_parse_name_either_parses_or_raises_usage_error(text: str) -> None:
    try:
        name = parse_name(text)
    except UsageError as exc:
        assert str(exc)
        return
    assert str(name)
    # Whatever was accepted parses again to itself: canonical forms are stable.
    assert parse_name(str(name)) == name


@given(
    st.lists(st.text(alphabet=name_chars, min_size=1, max_size=40), min_size=1, max_size=5),
    st.booleans(),
)
def test_file_names_stay_in_the_current_folder(texts: list[str], client: bool) -> None:
    files = default_file_names(texts, client=client)
    for file_name in (files.cert, files.key, files.p12):
        assert "/" not in file_name
        assert "\\" not in file_name
        assert not file_name.startswith(".")
        assert file_name.isprintable()
    assert files.key.endswith("-key.pem")
    assert files.cert.removesuffix(".pem") == files.key.removesuffix("-key.pem")
    suffix = f"+{len(texts) - 1}" if len(texts) > 1 else ""
    assert files.cert.endswith(suffix + ("-client" if client else "") + ".pem")


hostname_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(st.lists(hostname_label, min_size=2, max_size=4), st.booleans())
def test_generated_hostnames_are_accepted(labels: list[str], wildcard: bool) -> None:
    if labels[-1].isdigit():
        labels[-1] += "x"
    host = ".".join(labels)
    text = f"*.{host}" if wildcard else host
    name = parse_name(text)
    assert name.kind is NameKind.DNS
    assert name.value == text
    assert default_file_names([name]).cert == text.replace("*", "_wildcard") + ".pem"


# -- URIs: RFC 3986 with a host and a numeric port, or a usage error (mkcert refuses them too) --


@pytest.mark.parametrize(
    "text",
    [
        "spiffe://cluster.test/ns/default/sa/app",
        "https://a.test:8443/x",
        "http://x:0",
        "http://x:65535",
        "http://x:",  # RFC 3986 3.2.3: an empty port is allowed (and means the default)
        "http://x:00080",
        "https://user:pa%20ss@a.test/p/a;b=c/@:/?q=1&r=/?#frag/?",
        "http://[::1]:8443/",
        "http://[2001:db8::7]/c=GB?objectClass?one",
        "http://[v7.fe80::1+zone]/",
        "urn+x-y.z://h.test",
        "ldap://192.0.2.16:389/",
        "http://%61.test/%7Euser",
        "http://a.test!$&'()*+,;=/",
        "HTTPS://A.TEST",
    ],
)
def test_valid_uris_are_kept_as_they_are(text: str) -> None:
    assert parse_name(text) == Name(NameKind.URI, text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://x:bad", "the port 'bad' is not a number from 0 to 65535"),
        ("http://x:65536", "the port '65536'"),
        ("http://x:99999999999999999999", "is not a number"),
        ("http://x:-1", "the port '-1'"),
        ("http://x:+1", "the port '+1'"),
        ("http://x:0x50", "the port '0x50'"),
        ("http://x:1:2", "the port '1:2'"),
        ("http://x:８０", "not printable ASCII"),  # fullwidth digits: isdigit() says yes
        ("http://x:١", "not printable ASCII"),
        ("spiffe://", "names no host"),
        ("http://:80/", "names no host"),
        ("http://u@/", "names no host"),
        ("1http://x", "the scheme '1http'"),
        ("ht_tp://x", "the scheme 'ht_tp'"),
        ("://x", "the scheme ''"),
        ("http://[::1", "not a bracketed IPv6 address"),
        ("http://[::g]/", "not a bracketed IPv6 address"),
        ("http://[fe80::1%25eth0]/", "not a bracketed IPv6 address"),
        ("http://[::1]x/", "follows the host"),
        ("http://a@b@c/", "the user part 'a@b'"),
        ("http://x^y/", "the host 'x^y'"),
        ("http://x/%zz", "the path '/%zz'"),
        ("http://x/a|b", "the path '/a|b'"),
        ("http://x/a\\b", "the path"),
        ("http://x/?a<b", "query or fragment"),
        ("http://x/#a#b", "query or fragment"),
        ("http://é.test/", "percent-encode it"),
        ("http://x/\x7f", "not printable ASCII"),
    ],
)
def test_invalid_uris_are_usage_errors(text: str, reason: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        parse_name(text)
    message = str(excinfo.value)
    assert reason in message
    assert "is not a valid URI" in message
    assert "\n" not in message
    assert excinfo.value.exit_code == 2


uri_chars = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/?#[]%^|\\\"<> é\x00"


@given(st.text(alphabet=uri_chars, max_size=40), st.sampled_from(["http://", "spiffe://", "x://"]))
def test_uri_either_parses_or_raises_usage_error(rest: str, scheme: str) -> None:
    try:
        name = parse_name(scheme + rest)
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert name.kind is NameKind.URI
    assert parse_name(str(name)) == name


unreserved_or_sub = st.sampled_from(string.ascii_letters + string.digits + "-._~!$&'()*+,;=")
pct = st.builds(lambda a, b: f"%{a}{b}", *[st.sampled_from("0123456789abcdefABCDEF")] * 2)
reg_name = st.lists(unreserved_or_sub | pct, min_size=1, max_size=12).map("".join)
segment = st.lists(unreserved_or_sub | pct | st.sampled_from(":@"), max_size=6).map("".join)


@given(
    st.from_regex(r"[A-Za-z][A-Za-z0-9+.-]{0,6}", fullmatch=True),
    reg_name,
    st.none() | st.integers(0, 65535),
    st.lists(segment, max_size=4),
    st.none() | segment,
)
def test_generated_uris_are_accepted(
    scheme: str, host: str, port: int | None, segments: list[str], query: str | None
) -> None:
    text = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    text += "".join(f"/{s}" for s in segments) + (f"?{query}" if query is not None else "")
    assert parse_name(text) == Name(NameKind.URI, text)


@given(
    reg_name,
    st.integers(65536)
    | st.text(min_size=1, max_size=6)
    .filter(lambda t: not t.isdecimal())
    .map(lambda t: t.replace("/", "x").replace("?", "x").replace("#", "x")),
)
def test_generated_bad_ports_are_refused(host: str, port: int | str) -> None:
    text = f"http://{host}:{port}/"
    with pytest.raises(UsageError):
        parse_name(text)
