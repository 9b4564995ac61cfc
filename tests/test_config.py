from __future__ import annotations

from pathlib import Path

import pytest

from devtls.config import (
    Address,
    Limits,
    ServeOptions,
    Upstream,
    build_config,
    parse_address,
    parse_route,
    parse_upstream,
)
from devtls.errors import ConfigError
from devtls.proxy.routes import (
    Router,
    host_matches,
    host_without_port,
    path_matches,
    upstream_target,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3000", Upstream("http", "localhost", 3000)),
        ("app.test:8080", Upstream("http", "app.test", 8080)),
        ("[::1]:3000", Upstream("http", "::1", 3000)),
        ("http://127.0.0.1:3000", Upstream("http", "127.0.0.1", 3000)),
        ("http://app.test", Upstream("http", "app.test", 80)),
        (
            "https://api.example.test/base/",
            Upstream("https", "api.example.test", 443, base_path="/base"),
        ),
        ("unix:/run/app.sock", Upstream("unix", socket_path="/run/app.sock")),
    ],
)
def test_upstreams(text: str, expected: Upstream) -> None:
    assert parse_upstream(text) == expected


@pytest.mark.parametrize(
    "text", ["", "0", "70000", "ftp://x", "http://", "unix:", "host", "http://a/?q=1", "::1:3000"]
)
def test_bad_upstreams(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_upstream(text)


def test_addresses() -> None:
    assert parse_address("127.0.0.1:8443") == Address("127.0.0.1", 8443)
    assert parse_address("[::1]:8443") == Address("::1", 8443)
    assert parse_address("0.0.0.0:443") == Address("0.0.0.0", 443)
    assert parse_address(":80") == Address("", 80)
    assert str(Address("::1", 1)) == "[::1]:1"
    for bad in ("8443", "[::1]", "::1:80", "a b:1", "host:99999", "[nothost]:1"):
        with pytest.raises(ConfigError):
            parse_address(bad)


def test_routes() -> None:
    route = parse_route("API.test/v1/=3001")
    assert (route.host, route.path, route.upstream.port) == ("api.test", "/v1", 3001)
    assert parse_route("*=3000").host == ""
    assert parse_route("*.apps.test=unix:/s").host == "*.apps.test"
    for bad in (
        "nohost",
        "=3000",
        "a.test=",
        "bad host=1",
        "a.test/x y=1",
        "*.com=1",
        "me@x.test=1",
    ):
        with pytest.raises(ConfigError):
            parse_route(bad)


def test_router_prefers_exact_hosts_and_longest_paths() -> None:
    routes = tuple(
        parse_route(r)
        for r in ("*.apps.test=1", "api.test=2", "api.test/v1=3", "api.test/v1/deep=4", "*=5")
    )
    router = Router(routes, None)

    def port(host: str, path: str) -> int | None:
        _, upstream = router.match(host, path)
        return upstream.port if upstream else None

    assert port("api.test", "/") == 2
    assert port("API.test:8443", "/v1") == 3
    assert port("api.test", "/v1?x") == 3
    assert port("api.test", "/v1x") == 2
    assert port("api.test", "/v1/deep/er") == 4
    assert port("a.apps.test", "/") == 1
    assert port("a.b.apps.test", "/") == 5
    assert port("other.test", "/") == 5
    assert router.serves_host("anything.test")
    assert not Router(routes[:2], None).serves_host("other.test")


def test_route_helpers() -> None:
    assert host_without_port("[::1]:8443") == "::1"
    assert host_without_port("a.test:1") == "a.test"
    assert host_without_port("::1") == "::1"
    assert host_matches("*.a.test", "x.a.test")
    assert not host_matches("*.a.test", "a.test")
    assert not host_matches("*.a.test", ".a.test")
    assert path_matches("/api", "/api/x")
    assert not path_matches("/api", "/apix")
    route = parse_route("a.test/old=http://127.0.0.1:1/new")
    assert upstream_target(route, route.upstream, "/old/x?y") == "/new/x?y"


def test_toml_and_flags(tmp_path: Path) -> None:
    (tmp_path / "devtls.toml").write_text(
        'listen = "127.0.0.1:9443"\nupstream = 3000\nroutes = ["api.test=3001"]\n'
        "quiet = true\n[limits]\nidle_timeout = 5\nmax_connections = 10\n"
    )
    config = build_config(ServeOptions(), cwd=tmp_path)
    assert config.listen == Address("127.0.0.1", 9443)
    assert config.upstream == Upstream("http", "localhost", 3000)
    assert config.quiet
    assert config.limits.idle_timeout == 5
    assert config.limits.max_connections == 10
    assert config.certificate_names() == ("localhost", "127.0.0.1", "::1", "api.test")
    flags = build_config(
        ServeOptions(listen="127.0.0.1:1", upstream="4000", limits=("idle_timeout=9",)),
        cwd=tmp_path,
    )
    assert flags.listen.port == 1
    assert flags.upstream is not None
    assert flags.upstream.port == 4000
    assert flags.limits.idle_timeout == 9


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("nope = 1\n", "unknown setting 'nope'"),
        ("listen = 5\n", "wrong type"),
        ("listen = \n", "not valid TOML"),
        ("[limits]\nidle_timeout = -1\n", "positive"),
        ("[limits]\nmax_connections = 1.5\n", "positive"),
        ("[limits]\nwhat = 1\n", "known NAME"),
        ("workers = 0\n", "out of range"),
        ("workers = true\n", "wrong type"),
        ("workers = 2.5\n", "wrong type"),
    ],
)
def test_bad_toml_is_one_clear_error(tmp_path: Path, toml: str, words: str) -> None:
    file = tmp_path / "x.toml"
    file.write_text(toml)
    with pytest.raises(ConfigError, match=words):
        build_config(ServeOptions(config_file=file), cwd=tmp_path)


def test_option_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="go together"):
        build_config(ServeOptions(cert_file=Path("c.pem")), cwd=tmp_path)
    with pytest.raises(ConfigError, match="--tcp needs an UPSTREAM"):
        build_config(ServeOptions(tcp=True), cwd=tmp_path)
    with pytest.raises(ConfigError, match="--name"):
        build_config(ServeOptions(names=("bad name",)), cwd=tmp_path)
    assert build_config(ServeOptions(), cwd=tmp_path).demo
    assert Limits().max_head_size == 32 * 1024
    with pytest.raises(ConfigError, match="out of range"):
        build_config(ServeOptions(workers=65), cwd=tmp_path)
    with pytest.raises(ConfigError, match="--acme runs in one process"):
        build_config(
            ServeOptions(workers=2, acme=True, acme_agree_tos=True, routes=("a.example=3000",)),
            cwd=tmp_path,
        )
    assert build_config(ServeOptions(workers=4), cwd=tmp_path).workers == 4
