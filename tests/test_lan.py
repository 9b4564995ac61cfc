"""serve --lan's rules without a network: which addresses, which name, what it prints."""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devtls.cli import app
from devtls.config import ServeOptions, build_config
from devtls.errors import ConfigError, DevtlsError
from devtls.lan import (
    InterfaceAddress,
    LanPlan,
    banner_lines,
    is_lan_address,
    lan_addresses,
    mdns_label,
    qr_lines,
    uncovered_by,
)
from devtls.proxy import lan as lan_io
from devtls.proxy.server import prepare_certificates

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3", True),
        ("192.168.1.20", True),
        ("198.51.100.7", True),
        ("127.0.0.1", False),
        ("127.1.2.3", False),
        ("169.254.10.1", False),
        ("0.0.0.0", False),
        ("224.0.0.251", False),
        ("255.255.255.255", False),
        ("2001:db8::1", True),
        ("fd12:3456::1", True),  # unique local: what a home router hands out
        ("::1", False),
        ("fe80::1", False),
        ("ff02::fb", False),
        ("::", False),
        ("::ffff:10.0.0.1", False),
        ("fec0::1", False),
    ],
)
def test_lan_addresses_are_reachable_unicast_ones(text: str, expected: bool) -> None:
    assert is_lan_address(ip(text)) is expected


def test_interfaces_that_are_down_are_left_out_and_the_default_route_comes_first() -> None:
    entries = [
        InterfaceAddress("lo", ip("127.0.0.1")),
        InterfaceAddress("eth0", ip("2001:db8::5")),
        InterfaceAddress("eth0", ip("fe80::5")),
        InterfaceAddress("eth0", ip("10.0.0.5")),
        InterfaceAddress("wlan0", ip("192.0.2.9")),
        InterfaceAddress("eth1", ip("198.51.100.1"), up=False),
        InterfaceAddress("alias", ip("10.0.0.5")),
    ]
    assert lan_addresses(entries) == (ip("10.0.0.5"), ip("192.0.2.9"), ip("2001:db8::5"))
    preferred = lan_addresses(entries, preferred=ip("192.0.2.9"))
    assert preferred == (ip("192.0.2.9"), ip("10.0.0.5"), ip("2001:db8::5"))


@pytest.mark.parametrize(
    ("hostname", "label"),
    [
        ("build-box", "build-box"),
        ("Build-Box.corp.test", "build-box"),
        ("Mac-Mini.local", "mac-mini"),
        ("my_laptop", "my-laptop"),
        ("-x-", "x"),
        ("a" * 80, "a" * 63),
    ],
)
def test_the_mdns_label_is_the_first_label_of_the_host_name(hostname: str, label: str) -> None:
    assert mdns_label(hostname) == label


@pytest.mark.parametrize("hostname", ["", "...", "__"])
def test_a_host_name_without_letters_is_one_error(hostname: str) -> None:
    with pytest.raises(DevtlsError, match="hostnamectl"):
        mdns_label(hostname)


def test_no_lan_address_is_one_error_saying_what_to_do() -> None:
    with pytest.raises(DevtlsError, match="no LAN address") as caught:
        LanPlan("box", ())
    assert "leave out --lan" in str(caught.value)
    assert "\n" not in str(caught.value)


PLAN = LanPlan("box", (ip("10.0.0.5"), ip("2001:db8::5")))


def test_the_plan_names_the_leaf_and_the_urls() -> None:
    assert PLAN.local_name == "box.local"
    assert PLAN.names == ("box.local", "10.0.0.5", "2001:db8::5")
    assert PLAN.https_urls(8443) == [
        "https://10.0.0.5:8443/",
        "https://[2001:db8::5]:8443/",
        "https://box.local:8443/",
    ]
    assert PLAN.https_urls(443)[0] == "https://10.0.0.5/"
    assert PLAN.onboarding_url(8442) == "http://10.0.0.5:8442/"


def test_addresses_listen_covers_already_get_no_listener_of_their_own() -> None:
    addresses = PLAN.addresses
    assert uncovered_by("127.0.0.1", addresses) == list(addresses)
    assert uncovered_by("0.0.0.0", addresses) == [ip("2001:db8::5")]
    assert uncovered_by("::", addresses) == [ip("10.0.0.5")]
    assert uncovered_by("", addresses) == []
    assert uncovered_by("10.0.0.5", addresses) == [ip("2001:db8::5")]


def test_the_banner_says_the_server_is_reachable_from_the_network() -> None:
    lines = banner_lines(PLAN, 8443, 8442, "https", announced=True)
    assert "reachable from the network" in lines[0]
    assert "devtls: lan: https://10.0.0.5:8443/" in lines
    assert "devtls: lan: https://box.local:8443/" in lines
    assert any("box.local is announced over mDNS" in line for line in lines)
    assert lines[-1].endswith("install the devtls root first: http://10.0.0.5:8442/")
    quiet = banner_lines(PLAN, 8443, 8442, "tcp+tls", announced=False)
    assert "devtls: lan: tcp+tls://10.0.0.5:8443/" in quiet
    assert not any("box.local" in line for line in quiet)  # nobody answers for it


def test_qr_lines_draw_two_rows_of_modules_a_line() -> None:
    assert qr_lines([[1, 0], [1, 1], [0, 1]]) == ["\u2588\u2584", " \u2580"]


def read_qr(lines: list[str]) -> list[list[int]]:
    """The modules back from the half blocks (the inverse of qr_lines)."""
    top = {" ": 0, "\u2580": 1, "\u2584": 0, "\u2588": 1}
    bottom = {" ": 0, "\u2580": 0, "\u2584": 1, "\u2588": 1}
    rows: list[list[int]] = []
    for line in lines:
        rows.append([top[c] for c in line])
        rows.append([bottom[c] for c in line])
    return rows


def test_the_qr_block_holds_the_url() -> None:
    import segno

    url = "https://10.0.0.5:8443/"
    block = lan_io.qr_block(url)
    expected = [list(row) for row in segno.make(url, error="m").matrix_iter(border=2)]
    assert read_qr(block)[: len(expected)] == expected


def test_discovery_takes_the_system_as_functions() -> None:
    plan = lan_io.discover(
        hostname=lambda: "Phone-Lab.example.test",
        interfaces=lambda: [
            InterfaceAddress("lo", ip("127.0.0.1")),
            InterfaceAddress("veth0", ip("10.9.0.1")),
        ],
        preferred=lambda: None,
    )
    assert plan == LanPlan("phone-lab", (ip("10.9.0.1"),))


@pytest.mark.parametrize(
    ("flags", "operstate", "up"),
    [
        ("0x1003", "up", True),
        ("0x1003", "unknown", True),  # loopback, tun devices
        ("0x1003", None, True),
        ("0x1002", "up", False),  # ip link set down
        ("0x1003", "down", False),  # no carrier: an idle bridge, an unplugged port
        ("0x1003", "lowerlayerdown", False),
    ],
)
def test_interface_flags_and_state_say_whether_it_is_up(
    tmp_path: Path, flags: str, operstate: str | None, up: bool
) -> None:
    (tmp_path / "eth0").mkdir()
    (tmp_path / "eth0" / "flags").write_text(flags + "\n")
    if operstate is not None:
        (tmp_path / "eth0" / "operstate").write_text(operstate + "\n")
    assert lan_io.interface_is_up("eth0", tmp_path) is up


def test_an_interface_the_system_says_nothing_about_is_listed(tmp_path: Path) -> None:
    assert lan_io.interface_is_up("absent", tmp_path)


def test_system_interfaces_list_loopback_here() -> None:
    found = lan_io.system_interfaces()
    assert InterfaceAddress("lo", ip("127.0.0.1"), True) in found or sys.platform != "linux"
    assert all(not is_lan_address(e.address) for e in found if e.address.is_loopback)


def test_the_leaf_covers_the_lan_addresses_and_the_local_name(
    session_ca_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography import x509

    monkeypatch.setenv("CAROOT", str(session_ca_dir))
    config = build_config(ServeOptions(lan=True), cwd=session_ca_dir)
    certificates = prepare_certificates(config, lambda line: None, discover_lan=lambda: PLAN)
    assert certificates.lan == PLAN
    leaf = certificates.source.leaf
    assert leaf is not None
    san = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) >= {"localhost", "box.local"}
    assert set(san.get_values_for_type(x509.IPAddress)) >= {
        ip("127.0.0.1"),
        ip("10.0.0.5"),
        ip("2001:db8::5"),
    }
    # A reload with other --name values keeps them (the settings do not name them).
    certificates.source.reissue(("other.test",))
    assert "10.0.0.5" in certificates.source.covered


def test_lan_is_a_setting_of_the_file_too(tmp_path: Path) -> None:
    (tmp_path / "devtls.toml").write_text("lan = true\n")
    assert build_config(ServeOptions(), cwd=tmp_path).lan
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not build_config(ServeOptions(), cwd=empty).lan  # loopback only by default
    (tmp_path / "devtls.toml").write_text('lan = "yes"\n')
    with pytest.raises(ConfigError, match="wrong type"):
        build_config(ServeOptions(), cwd=tmp_path)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"cert_file": "a.pem", "key_file": "a-key.pem"}, "--cert cannot be used"),
        ({"workers": 2}, "one process"),
    ],
)
def test_lan_refuses_what_it_cannot_serve(
    tmp_path: Path, given: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(ServeOptions(lan=True, **given), cwd=tmp_path)


def test_without_the_extra_lan_is_one_line_saying_what_to_install(
    session_ca_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CAROOT", str(session_ca_dir))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "zeroconf", None)  # import zeroconf raises ImportError
    result = CliRunner().invoke(app, ["serve", "--lan", "--listen", "127.0.0.1:0"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "--lan needs the 'zeroconf' package" in result.output
    assert "pip install 'devtls[lan]'" in result.output


def test_the_default_route_source_is_an_address_of_this_host_or_none() -> None:
    found = lan_io.default_route_source()
    if found is not None:
        with socket.socket() as probe:
            probe.bind((str(found), 0))  # only a local address can be bound
