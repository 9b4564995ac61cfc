"""The two layers of routes, without a server."""

from __future__ import annotations

import pytest

from devtls.config import parse_route, parse_upstream
from devtls.proxy.routetable import (
    SOURCE_COMMAND_LINE,
    SOURCE_CONFIG,
    SOURCE_CONTROL,
    RouteRefused,
    RouteTable,
)


def test_control_routes_shadow_and_survive_a_new_base() -> None:
    table = RouteTable((parse_route("a.test=1"), parse_route("b.test=2")), SOURCE_CONFIG)
    table.add(parse_route("a.test=9"))
    assert [(e.route.host, str(e.route.upstream), e.source) for e in table.entries()] == [
        ("a.test", "http://localhost:9", SOURCE_CONTROL),
        ("b.test", "http://localhost:2", SOURCE_CONFIG),
    ]
    table.set_base((parse_route("c.test=3"),), SOURCE_CONFIG, parse_upstream("4"))
    assert [e.route.host for e in table.entries()] == ["a.test", "c.test"]
    assert str(table.fallback) == "http://localhost:4"


def test_a_held_route_is_refused_to_others_unless_forced_and_goes_with_its_lease() -> None:
    table = RouteTable()
    table.add(parse_route("app.localhost=3000"), lease=1, pid=4242)
    with pytest.raises(RouteRefused, match="held by process 4242"):
        table.add(parse_route("app.localhost=3001"), lease=2, pid=5)
    with pytest.raises(RouteRefused, match="held by process 4242"):
        table.add(parse_route("app.localhost=3001"))
    table.add(parse_route("app.localhost=3000"), lease=1, pid=4242)  # its holder may
    table.add(parse_route("app.localhost=3002"), lease=2, pid=5, force=True)
    assert table.release(1) == []  # the route is no longer lease 1's
    assert table.entries()[0].held_by == 5
    assert [r.host for r in table.release(2)] == ["app.localhost"]
    assert table.entries() == []


def test_an_unheld_route_has_no_holder() -> None:
    table = RouteTable()
    table.add(parse_route("a.test=1"), lease=None, pid=77)
    assert table.entries()[0].held_by is None


def test_remove_takes_control_routes_only() -> None:
    table = RouteTable((parse_route("a.test/x=1"),), SOURCE_CONFIG)
    table.add(parse_route("b.test=2"))
    assert table.remove("b.test", "/").host == "b.test"
    with pytest.raises(RouteRefused, match=r"a.test/x comes from devtls.toml"):
        table.remove("a.test", "/x")
    with pytest.raises(RouteRefused, match=r"there is no route b\.test"):
        table.remove("b.test", "/")
    table.set_base((parse_route("*=1"),), SOURCE_COMMAND_LINE, None)
    with pytest.raises(RouteRefused, match=r"\* comes from the command line"):
        table.remove("", "/")
