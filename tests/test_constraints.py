"""Name-constrained roots: what --constrain means, devtls's refusals, and three real verifiers."""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devtls.ca import CERT_FILE, KEY_FILE, LocalCA
from devtls.constraints import parse_constraints
from devtls.errors import CAError, IssueError, UsageError
from devtls.issue import sign_csr
from devtls.names import parse_name
from tests.conftest import require_tool, run
from tests.routerprocess import http_upstream

DEV_NAMES = "localhost,.localhost,.test,.internal,127.0.0.0/8,::1/128"
INSIDE, OUTSIDE = "app.test", "app.example"


def devtls(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtls", *args],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def constrained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("constrained-ca")
    _ca, created = LocalCA.load_or_create(root, constraints=parse_constraints(DEV_NAMES))
    assert created
    return root


@pytest.fixture
def constrained(constrained_dir: Path) -> LocalCA:
    return LocalCA.load(constrained_dir)


# -- what the list means -------------------------------------------------------------------


def test_a_bare_name_covers_itself_and_below_a_leading_dot_only_below() -> None:
    limits = parse_constraints("localhost,.test,10.1.0.0/16,::1")
    allowed = ["localhost", "a.localhost", "*.a.localhost", "a.test", "*.b.test", "10.1.2.3", "::1"]
    refused = ["test", "localhostx", "xlocalhost", "a.example", "10.2.0.1", "::2", "me@a.test"]
    assert all(limits.permits(parse_name(n)) for n in allowed)
    assert not any(limits.permits(parse_name(n)) for n in refused)
    assert limits.entries() == ["localhost", ".test", "10.1.0.0/16", "::1/128"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "at least one"),
        ("127.0.0.0/8", "no DNS name"),
        ("*.test", "wildcard"),
        ("localhost,127.0.0.1/8", "127.0.0.0/8"),
        ("a..b", "not a valid hostname"),
        ("me@x.test", "not a DNS name"),
    ],
)
def test_bad_lists_are_one_line_usage_errors(text: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_constraints(text)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_the_root_carries_them_critical_and_without_ranges_excludes_every_address() -> None:
    ca = LocalCA.generate("ecdsa", constraints=parse_constraints("localhost,.test"))
    ext = ca.cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical
    assert ext.value.permitted_subtrees == [x509.DNSName("localhost"), x509.DNSName(".test")]
    excluded = {str(g.value) for g in ext.value.excluded_subtrees or ()}
    assert excluded == {"0.0.0.0/0", "::/0"}
    with pytest.raises(IssueError, match=r"127\.0\.0\.1 is outside the CA.s name constraints"):
        ca.issue("localhost", "127.0.0.1")
    plain = LocalCA.generate("ecdsa")  # the default stays mkcert's: no extension at all
    assert plain.constraints is None
    with pytest.raises(x509.ExtensionNotFound):
        plain.cert.extensions.get_extension_for_class(x509.NameConstraints)


# -- devtls refuses to issue outside them ---------------------------------------------------


def test_issue_and_csr_signing_refuse_names_outside(constrained: LocalCA) -> None:
    leaf = constrained.issue("localhost", "a.localhost", INSIDE, "127.0.0.1", "::1")
    assert leaf.names[0].value == "localhost"
    with pytest.raises(IssueError) as info:
        constrained.issue(INSIDE, OUTSIDE)
    message = str(info.value)
    assert f"{OUTSIDE} is outside the CA's name constraints ({DEV_NAMES})" in message
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(IssueError, match=r"evil\.example is outside"):
        sign_csr(constrained, csr)
    with pytest.raises(IssueError, match=r"the email me@a\.test is outside"):
        constrained.issue("me@a.test")


def test_serve_leaves_out_default_addresses_and_refuses_to_mint_outside() -> None:
    from devtls.proxy.certs import CertificateSource
    from devtls.proxy.clienthello import ClientHello
    from devtls.serve_settings import DEFAULT_NAMES

    ca = LocalCA.generate("ecdsa", constraints=parse_constraints("localhost,.localhost,.test"))
    lines: list[str] = []
    source = CertificateSource(names=(*DEFAULT_NAMES, "api.test"), ca=ca, write_log=lines.append)
    # 127.0.0.1 and ::1 are the built-in defaults, outside a DNS-only root: left out.
    assert source.covered == ("localhost", "api.test")
    source.may_mint = lambda _name: True
    assert source.choose(ClientHello(OUTSIDE, ())) is None  # the default certificate
    assert source.choose(ClientHello("other.example", ())) is None
    assert lines == [
        f"not minting a certificate for {OUTSIDE}: outside the CA's name constraints "
        "(localhost,.localhost,.test); it gets the default certificate"
    ]
    with pytest.raises(IssueError, match=r"api\.example is outside"):
        CertificateSource(names=("localhost", "api.example"), ca=ca)


def test_cli_install_constrain_creates_only_a_new_ca(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    env = _env(tmp_path, caroot)
    first = devtls("install", "--constrain", DEV_NAMES, env=env)
    assert first.returncode == 0, first.stderr
    assert f"limited to {DEV_NAMES}" in first.stdout
    before = {name: (caroot / name).read_bytes() for name in (CERT_FILE, KEY_FILE)}
    again = devtls("install", "--constrain", "localhost", env=env)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert "already holds a CA; --constrain only applies to a new one" in again.stderr
    assert {name: (caroot / name).read_bytes() for name in before} == before
    refused = devtls("cert", "--cert-file", str(tmp_path / "c.pem"), "--key-file",
                     str(tmp_path / "k.pem"), OUTSIDE, env=env)  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"devtls: error: {OUTSIDE} is outside the CA's name constraints ({DEV_NAMES}); "
        "issue only names inside them, or use a CA without constraints"
    )
    assert not (tmp_path / "c.pem").exists()
    status = devtls("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["name_constraints"] == DEV_NAMES.split(",")
    text = devtls("status", env=env)
    assert f"names:       {DEV_NAMES.replace(',', ', ')}" in text.stdout


def test_an_existing_ca_is_refused_before_a_dry_run_too(tmp_path: Path) -> None:
    caroot = tmp_path / "caroot"
    LocalCA.load_or_create(caroot)
    with pytest.raises(CAError, match="already holds a CA"):
        LocalCA.load_or_create(caroot, constraints=parse_constraints("localhost"))
    result = devtls("install", "--dry-run", "--constrain", "localhost", env=_env(tmp_path, caroot))
    assert result.returncode == 1
    assert "already holds a CA" in result.stderr


def _env(tmp_path: Path, caroot: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    # Only an NSS database in this test's HOME: no store of the machine is touched.
    return {**os.environ, "CAROOT": str(caroot), "HOME": str(home), "TRUST_STORES": "nss"}


# -- three real verifiers reject a leaf outside, signed with the root's own key -------------


def forged_leaf(ca: LocalCA, name: str) -> tuple[bytes, bytes]:
    """A leaf for ``name`` signed with the CA key directly, past devtls's own refusal."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@contextmanager
def https_server(cert_pem: bytes, key_pem: bytes, folder: Path) -> Iterator[int]:
    folder.mkdir()
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>inside the constraints</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http_upstream(Hello, tls=context) as port:
        yield port


@pytest.fixture
def two_leaves(constrained: LocalCA, tmp_path: Path) -> tuple[Path, Path]:
    inside = constrained.issue(INSIDE, key_type="ecdsa")
    (tmp_path / "inside.pem").write_bytes(inside.cert_pem())
    (tmp_path / "inside-key.pem").write_bytes(inside.key_pem())
    cert, key = forged_leaf(constrained, OUTSIDE)
    (tmp_path / "outside.pem").write_bytes(cert)
    (tmp_path / "outside-key.pem").write_bytes(key)
    return tmp_path / "inside.pem", tmp_path / "outside.pem"


def test_openssl_verify_accepts_inside_and_rejects_outside(
    constrained_dir: Path, two_leaves: tuple[Path, Path]
) -> None:
    openssl = require_tool("openssl")
    root = constrained_dir / CERT_FILE
    inside, outside = two_leaves
    good = run(openssl, "verify", "-CAfile", root, "-verify_hostname", INSIDE, inside, check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = run(openssl, "verify", "-CAfile", root, outside, check=False)
    assert bad.returncode != 0
    assert "permitted subtree violation" in bad.stdout + bad.stderr


def test_curl_accepts_inside_and_rejects_outside(
    constrained_dir: Path, two_leaves: tuple[Path, Path], tmp_path: Path
) -> None:
    curl = require_tool("curl")
    root = constrained_dir / CERT_FILE
    for leaf, name, ok in ((two_leaves[0], INSIDE, True), (two_leaves[1], OUTSIDE, False)):
        key = leaf.with_name(leaf.stem + "-key.pem").read_bytes()
        with https_server(leaf.read_bytes(), key, tmp_path / f"srv-{name}") as port:
            result = run(
                curl, "-sS", "--max-time", "20", "--cacert", root,
                "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/", check=False,
            )  # fmt: skip
        if ok:
            assert result.returncode == 0, result.stderr
            assert "inside the constraints" in result.stdout
        else:
            assert result.returncode == 60, result.stderr  # peer certificate cannot be verified
            assert "permitted subtree violation" in result.stderr
            assert "inside the constraints" not in result.stdout


def test_chromium_accepts_inside_and_rejects_outside(
    constrained_dir: Path, two_leaves: tuple[Path, Path], tmp_path: Path
) -> None:
    from tests.proxy.cdp import chromium_page

    inside, outside = two_leaves
    # The control: a leaf forged the same way for a name inside is accepted, so the refusal
    # below is the constraint's and not the forged leaf's profile.
    control_cert, control_key = forged_leaf(LocalCA.load(constrained_dir), "forged.test")
    with (
        https_server(inside.read_bytes(), (tmp_path / "inside-key.pem").read_bytes(),
                     tmp_path / "srv-in") as port_in,
        https_server(control_cert, control_key, tmp_path / "srv-control") as port_control,
        https_server(outside.read_bytes(), (tmp_path / "outside-key.pem").read_bytes(),
                     tmp_path / "srv-out") as port_out,
        chromium_page(tmp_path / "home", constrained_dir / CERT_FILE,
                      resolve=(INSIDE, "forged.test", OUTSIDE)) as page,
    ):  # fmt: skip
        for url in (f"https://{INSIDE}:{port_in}/", f"https://forged.test:{port_control}/"):
            good = page.call("Page.navigate", url=url)
            assert "errorText" not in good, good
            assert page.until(lambda: "inside the constraints" in str(page.evaluate(BODY)))
        bad = page.call("Page.navigate", url=f"https://{OUTSIDE}:{port_out}/")
        # Chromium's verifier reports a name-constraint violation as ERR_CERT_INVALID.
        assert bad.get("errorText") == "net::ERR_CERT_INVALID", bad
        assert "inside the constraints" not in str(page.evaluate(BODY))


BODY = "document.body ? document.body.innerText : ''"
