"""serve --lan for real, between two network namespaces joined by a veth pair.

Each test makes its namespaces, addresses in 10.77.0.0/24 and 2001:db8:77::/64 (never a real
LAN), and removes them whatever happens. devtls runs in one, with a host name of its own
(unshare --uts); every client runs in the other, as a phone on the same network would.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import plistlib
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devtls.ca import LocalCA
from devtls.lan import ONBOARDING_PORT
from tests.conftest import IN_CI, require_tool, run, wait_for
from tests.test_lan import read_qr

pytestmark = pytest.mark.root

SERVER_V4, CLIENT_V4 = "10.77.0.1", "10.77.0.2"
SERVER_V6, CLIENT_V6 = "2001:db8:77::1", "2001:db8:77::2"
# On an interface of the server's that is down: never listened on, never in the leaf.
DOWN_V4 = "10.78.0.1"
HOSTNAME = "devtls-lan-test"
TLS_PORT = 8443
CLIENT = Path(__file__).with_name("lanclient.py")
REPO = Path(__file__).resolve().parents[2]


def require_namespaces() -> None:
    """Root, iproute2 and unshare, and the lan extra: in CI their absence fails the test."""
    require_tool("ip")
    require_tool("unshare")
    reasons = []
    if os.geteuid() != 0:
        reasons.append("needs root (it makes network namespaces)")
    if importlib.util.find_spec("zeroconf") is None:
        reasons.append("needs the lan extra (pip install -e '.[test]')")
    if reasons:
        if IN_CI:
            pytest.fail("; ".join(reasons))
        pytest.skip("; ".join(reasons))


@dataclass
class Namespaces:
    server: str
    client: str

    def client_run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.client, *args, check=check)

    def client_call(self, *args: str) -> object:
        """One lanclient.py command from the client's namespace; its JSON answer."""
        done = self.client_run(sys.executable, CLIENT, *args)
        return json.loads(done.stdout)

    def curl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.client_run("curl", "-sS", "--max-time", "10", *args, check=False)


@contextlib.contextmanager
def namespaces() -> Iterator[Namespaces]:
    require_namespaces()
    token = secrets.token_hex(3)
    pair = Namespaces(f"devtls-{token}-s", f"devtls-{token}-c")
    server_if, client_if = f"dvl{token}s", f"dvl{token}c"
    try:
        run("ip", "netns", "add", pair.server)
        run("ip", "netns", "add", pair.client)
        run("ip", "link", "add", server_if, "type", "veth", "peer", "name", client_if)
        run("ip", "link", "set", server_if, "netns", pair.server)
        run("ip", "link", "set", client_if, "netns", pair.client)
        for ns, dev, v4, v6 in (
            (pair.server, server_if, SERVER_V4, SERVER_V6),
            (pair.client, client_if, CLIENT_V4, CLIENT_V6),
        ):
            run("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            # nodad: usable at once, no duplicate detection to wait for.
            run("ip", "-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", pair.server, "link", "add", f"{server_if}d", "type", "veth", "peer",
            "name", f"{server_if}e")  # fmt: skip
        run("ip", "-n", pair.server, "addr", "add", f"{DOWN_V4}/24", "dev", f"{server_if}d")
        yield pair
    finally:
        # Removing a namespace removes its end of the veth pair, and so the pair.
        for ns in (pair.server, pair.client):
            run("ip", "netns", "del", ns, check=False)


@dataclass
class Served:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def banner_done(self, lan: bool) -> bool:
        if not lan:
            return any("serving the demo page" in line for line in self.lines)
        # The QR block ends with a line of its quiet zone, after the onboarding line.
        marks = [i for i, line in enumerate(self.lines) if "install the devtls root first" in line]
        return bool(marks) and sum(not line.strip() for line in self.lines[marks[0] :]) >= 2

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)


@contextlib.contextmanager
def serving(pair: Namespaces, caroot: Path, *args: str, lan: bool = True) -> Iterator[Served]:
    command = f'hostname {HOSTNAME} && exec "$0" -m devtls serve "$@"'
    env = {**os.environ, "CAROOT": str(caroot), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            pair.server,
            "unshare",
            "--uts",
            "sh",
            "-c",
            command,
            sys.executable,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=caroot,
    )
    served = Served(process)
    reader = threading.Thread(target=served.read, daemon=True)
    reader.start()
    try:
        started = wait_for(lambda: served.banner_done(lan) or process.poll() is not None, 30)
        assert started, "\n".join(served.lines)
        assert process.poll() is None, "\n".join(served.lines)
        yield served
    finally:
        served.stop()
        reader.join(10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="module")
def caroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lan-ca")
    LocalCA.load_or_create(root)
    return root


@pytest.fixture(scope="module")
def lan(caroot: Path) -> Iterator[tuple[Namespaces, Served]]:
    """One devtls serve --lan for the module's tests (starting one costs an mDNS probe)."""
    with namespaces() as pair, serving(pair, caroot, "--lan", "--limit", "head_timeout=2") as s:
        yield pair, s


def root_pem(caroot: Path) -> Path:
    return caroot / "rootCA.pem"


def root_der(caroot: Path) -> bytes:
    return LocalCA.load(caroot).cert.public_bytes(serialization.Encoding.DER)


def test_curl_from_another_machine_verifies_against_the_ca(
    lan: tuple[Namespaces, Served], caroot: Path
) -> None:
    pair, _ = lan
    for url in (f"https://{SERVER_V4}:{TLS_PORT}/", f"https://[{SERVER_V6}]:{TLS_PORT}/"):
        done = pair.curl("-g", "--cacert", str(root_pem(caroot)), url)
        assert done.returncode == 0, done.stderr
        assert "HTTPS works" in done.stdout
    # The .local name, as a phone that resolved it over mDNS would connect.
    done = pair.curl(
        "--cacert", str(root_pem(caroot)),
        "--resolve", f"{HOSTNAME}.local:{TLS_PORT}:{SERVER_V4}",
        f"https://{HOSTNAME}.local:{TLS_PORT}/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_python_ssl_verifies_the_leaf_which_covers_the_lan_names(
    lan: tuple[Namespaces, Served], caroot: Path
) -> None:
    pair, _ = lan
    pem = str(root_pem(caroot))
    for server_name in (SERVER_V4, f"{HOSTNAME}.local"):
        answer = pair.client_call("tls", SERVER_V4, str(TLS_PORT), pem, server_name)
        assert isinstance(answer, dict)
        assert answer["status"] == "HTTP/1.1 200 OK"
    leaf = x509.load_der_x509_certificate(bytes.fromhex(str(answer["cert"])))
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{HOSTNAME}.local" in san.get_values_for_type(x509.DNSName)
    addresses = san.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address(SERVER_V4) in addresses
    assert ipaddress.ip_address(SERVER_V6) in addresses
    assert ipaddress.ip_address(DOWN_V4) not in addresses
    assert not any(a.is_link_local for a in addresses)


def test_the_onboarding_page_serves_the_root_and_never_a_key(
    lan: tuple[Namespaces, Served], caroot: Path, tmp_path: Path
) -> None:
    pair, _ = lan
    base = f"http://{SERVER_V4}:{ONBOARDING_PORT}"
    crt = tmp_path / "root.crt"
    done = pair.curl("-D", "-", "-o", str(crt), f"{base}/devtls-root.crt")
    assert done.returncode == 0, done.stderr
    assert "content-type: application/x-x509-ca-cert" in done.stdout.lower()
    assert crt.read_bytes() == root_der(caroot)
    profile_file = tmp_path / "root.mobileconfig"
    done = pair.curl("-D", "-", "-o", str(profile_file), f"{base}/devtls-root.mobileconfig")
    assert "content-type: application/x-apple-aspen-config" in done.stdout.lower()
    profile = plistlib.loads(profile_file.read_bytes())
    assert profile["PayloadContent"][0]["PayloadType"] == "com.apple.security.root"
    assert profile["PayloadContent"][0]["PayloadContent"] == root_der(caroot)
    page = pair.curl(f"{base}/")
    assert "Certificate Trust Settings" in page.stdout
    assert f"https://{HOSTNAME}.local:{TLS_PORT}/" in page.stdout
    key_text = (caroot / "rootCA-key.pem").read_text().splitlines()[1]
    for path in ("/", "/devtls-root.crt", "/devtls-root.mobileconfig", "/devtls-root.pem"):
        body = pair.curl(f"{base}{path}").stdout
        assert "PRIVATE KEY" not in body
        assert key_text not in body
    # On the IPv6 address too.
    assert (
        pair.curl("-g", "-o", "/dev/null", f"http://[{SERVER_V6}]:{ONBOARDING_PORT}/").returncode
        == 0
    )


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/rootCA-key.pem", "404"),
        ("/rootCA.pem", "404"),
        ("/%2e%2e/rootCA-key.pem", "400"),
        ("/devtls-root.crt/", "404"),
        ("/x", "404"),
        ("/../rootCA-key.pem", "400"),  # above the root: the parser refuses it
    ],
)
def test_every_other_path_is_a_404_and_one_above_the_root_a_400(
    lan: tuple[Namespaces, Served], path: str, status: str
) -> None:
    pair, _ = lan
    url = f"http://{SERVER_V4}:{ONBOARDING_PORT}{path}"
    done = pair.curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", url)
    assert done.stdout == status


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", b"431"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"400"),  # TLS, wrong port
        (b"GET / HTTP/1.1\r\nHost: x\r\n", b"408"),  # a head never finished (head_timeout=2)
    ],
)
def test_hostile_input_gets_the_responders_answers(
    lan: tuple[Namespaces, Served], request_bytes: bytes, status: bytes
) -> None:
    pair, _ = lan
    answer = pair.client_call("raw", SERVER_V4, str(ONBOARDING_PORT), request_bytes.hex())
    assert bytes.fromhex(str(answer)).startswith(b"HTTP/1.1 " + status), answer


def test_hostname_local_is_announced_over_mdns(lan: tuple[Namespaces, Served]) -> None:
    pair, _ = lan
    addresses = pair.client_call("resolve", f"{HOSTNAME}.local.", CLIENT_V4)
    assert isinstance(addresses, list)
    assert SERVER_V4 in addresses
    assert SERVER_V6 in addresses


def test_the_banner_says_so_and_shows_the_url_as_a_qr_code(lan: tuple[Namespaces, Served]) -> None:
    import segno

    _, served = lan
    lines = served.lines
    assert any("reachable from the network" in line for line in lines)
    assert f"devtls: lan: https://{SERVER_V4}:{TLS_PORT}/" in lines
    assert f"devtls: lan: https://{HOSTNAME}.local:{TLS_PORT}/" in lines
    assert any(line.endswith(f"http://{SERVER_V4}:{ONBOARDING_PORT}/") for line in lines)
    start = next(i for i, line in enumerate(lines) if "install the devtls root first" in line)
    qr = {" ", "\u2580", "\u2584", "\u2588"}
    block = []
    for line in lines[start + 1 :]:  # the access log lines of other tests follow
        if not set(line) <= qr:
            break
        block.append(line)
    assert block
    assert all(set(line) <= {" ", "\u2580", "\u2584", "\u2588"} for line in block)
    url = f"https://{SERVER_V4}:{TLS_PORT}/"
    expected = [list(row) for row in segno.make(url, error="m").matrix_iter(border=2)]
    assert read_qr(block)[: len(expected)] == expected


def listening_in(ns: str) -> list[str]:
    table = run("ip", "netns", "exec", ns, "ss", "-Hltn").stdout
    return [line.split()[3] for line in table.splitlines()]


def test_lan_listens_on_loopback_and_the_lan_addresses_of_interfaces_that_are_up(
    lan: tuple[Namespaces, Served],
) -> None:
    pair, _ = lan
    listening = listening_in(pair.server)
    for port in (TLS_PORT, ONBOARDING_PORT):
        assert f"{SERVER_V4}:{port}" in listening
        assert f"[{SERVER_V6}]:{port}" in listening
    assert f"127.0.0.1:{TLS_PORT}" in listening
    assert not any(local.startswith((DOWN_V4, "0.0.0.0:", "*:", "[::]:")) for local in listening)
    assert pair.curl("--connect-timeout", "2", f"http://{DOWN_V4}:{ONBOARDING_PORT}/").returncode


def test_without_lan_nothing_listens_on_the_network(caroot: Path) -> None:
    with namespaces() as pair, serving(pair, caroot, lan=False) as served:
        table = run("ip", "netns", "exec", pair.server, "ss", "-Hltn").stdout
        listening = [line.split()[3] for line in table.splitlines()]
        assert "127.0.0.1:8443" in listening
        for local in listening:
            assert local.startswith(("127.0.0.1:", "[::1]:")), listening
        for port in (TLS_PORT, ONBOARDING_PORT):
            done = pair.curl("-k", f"https://{SERVER_V4}:{port}/")
            assert done.returncode == 7, done  # curl: could not connect
        assert not any("lan" in line for line in served.lines)


def test_the_page_and_the_name_go_when_it_stops(caroot: Path) -> None:
    with namespaces() as pair, serving(pair, caroot, "--lan") as served:
        assert (
            pair.curl("-o", "/dev/null", f"http://{SERVER_V4}:{ONBOARDING_PORT}/").returncode == 0
        )
        assert served.stop() == 0
        assert pair.curl(f"http://{SERVER_V4}:{ONBOARDING_PORT}/").returncode == 7
        # Nobody answers for the name any more (within 1.5 s; the announced name answered at once).
        assert pair.client_call("resolve", f"{HOSTNAME}.local.", CLIENT_V4, "1500") == []


def test_the_namespaces_are_removed_even_when_a_test_fails() -> None:
    with pytest.raises(RuntimeError), namespaces() as pair:
        assert pair.server in run("ip", "netns", "list").stdout
        raise RuntimeError("a failing test")
    listed = run("ip", "netns", "list").stdout
    assert pair.server not in listed
    assert pair.client not in listed


def test_a_taken_onboarding_port_moves_to_a_free_one_the_banner_prints(caroot: Path) -> None:
    holder_code = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()\n"
        "print('held', flush=True); time.sleep(60)\n"
    )
    with namespaces() as pair:
        holder = subprocess.Popen(
            ["ip", "netns", "exec", pair.server, sys.executable, "-c", holder_code,
             SERVER_V4, str(ONBOARDING_PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            with serving(pair, caroot, "--lan") as served:
                line = next(line for line in served.lines if "install the devtls root" in line)
                url = line.rsplit(" ", 1)[1]
                assert url.startswith(f"http://{SERVER_V4}:")
                assert url != f"http://{SERVER_V4}:{ONBOARDING_PORT}/"
                assert any(f"port {ONBOARDING_PORT} is in use" in line for line in served.lines)
                crt = pair.curl(f"{url}devtls-root.crt", "-o", "/dev/null", "-w", "%{http_code}")
                assert crt.stdout == "200"
        finally:
            holder.kill()
            holder.wait(timeout=10)
            if holder.stdout is not None:
                holder.stdout.close()


@pytest.mark.parametrize(("in_ci", "outcome"), [(False, "skip"), (True, "fail")])
def test_without_root_it_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, in_ci: bool, outcome: str
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sys.modules[__name__], "IN_CI", in_ci)
    expected = pytest.skip.Exception if outcome == "skip" else pytest.fail.Exception
    with pytest.raises(expected, match="needs root"):
        require_namespaces()
