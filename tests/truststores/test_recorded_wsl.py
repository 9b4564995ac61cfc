"""The system store under WSL: the Linux store plus the Windows CurrentUser Root store, whose
commands (PowerShell, certutil.exe, wslpath) run against a recorded Windows kept in memory."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtls.ca import LocalCA
from devtls.truststores import all_stores, running_under_wsl
from devtls.truststores.base import Availability
from devtls.truststores.system_wsl import WSLSystemStore

DISTRO = "\\\\wsl.localhost\\Debian"


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    ca, _ = LocalCA.load_or_create(tmp_path / "ca")
    return ca


class FakeLinux:
    name = "system"

    def __init__(self) -> None:
        self.installed = False

    def available(self) -> Availability:
        return Availability(True, "Debian/Ubuntu: /usr/local/share/ca-certificates")

    def is_installed(self, ca: LocalCA) -> bool:
        return self.installed

    def plan_install(self, ca: LocalCA) -> list[str]:
        return [] if self.installed else ["update-ca-certificates"]

    def install(self, ca: LocalCA) -> None:
        self.installed = True

    def plan_uninstall(self, ca: LocalCA) -> list[str]:
        return ["update-ca-certificates"] if self.installed else []

    def uninstall(self, ca: LocalCA) -> None:
        self.installed = False


class FakeWindows:
    """powershell.exe's listing, certutil.exe -user -addstore/-delstore, and wslpath -w."""

    def __init__(self, roots: list[x509.Certificate] | None = None) -> None:
        self.roots = list(roots or [])
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str], stdin: bytes | None) -> tuple[int, str]:
        self.calls.append(list(args))
        if args[0] == "wslpath":
            assert args[1] == "-w"
            return 0, DISTRO + args[2].replace("/", "\\") + "\n"
        if args[0].endswith("powershell.exe"):
            encoded = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                       for c in self.roots]  # fmt: skip
            # PowerShell may print one item as a bare string, and progress records around it.
            listing = json.dumps(encoded[0] if len(encoded) == 1 else encoded)
            return 0, f'#< CLIXML\r\n{listing}\r\n<Objs Version="1.1.0.1"></Objs>\r\n'
        assert args[0].endswith("certutil.exe")
        assert args[1] == "-user"
        if args[2] == "-addstore":
            windows = PureWindowsPath(args[4])
            assert str(windows).startswith(DISTRO)
            linux = "/" + "/".join(windows.parts[1:])
            self.roots.append(x509.load_pem_x509_certificate(Path(linux).read_bytes()))
            return (
                0,
                'Root "Trusted Root Certification Authorities"\r\nCertUtil: -addstore command completed successfully.\r\n',
            )
        if args[2] == "-delstore":
            before = len(self.roots)
            self.roots = [c for c in self.roots if c.fingerprint(hashes.SHA1()).hex() != args[4]]
            return (0 if len(self.roots) < before else 1), ""
        raise AssertionError(args)


def tools(name: str) -> str:
    return f"/mnt/c/Windows/System32/{name}"


def foreign_root(organization: str, common_name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])  # fmt: skip
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip


def test_wsl_is_recognised_from_proc_version(tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text("Linux version 5.15.153.1-microsoft-standard-WSL2 (root@1c602f52c2e4)\n")
    assert running_under_wsl(version)
    version.write_text("Linux version 4.4.0-19041-Microsoft (Microsoft@Microsoft.com)\n")  # WSL 1
    assert running_under_wsl(version)
    version.write_text("Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org)\n")
    assert not running_under_wsl(version)
    assert not running_under_wsl(tmp_path / "missing")


def test_under_wsl_the_system_store_is_the_wsl_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import devtls.truststores

    monkeypatch.setattr(devtls.truststores.sys, "platform", "linux")
    monkeypatch.setattr(devtls.truststores, "running_under_wsl", lambda: True)
    system = all_stores()[0]
    assert isinstance(system, WSLSystemStore)
    assert [s.name for s in all_stores()] == ["system", "nss", "java"]


def test_install_adds_the_root_to_the_windows_store_once(ca: LocalCA) -> None:
    windows = FakeWindows()
    store = WSLSystemStore(FakeLinux(), windows, find_tool=tools)
    assert not store.is_installed(ca)
    plan = store.plan_install(ca)
    assert plan[-1].startswith(f"{tools('certutil.exe')} -user -addstore Root ")
    store.install(ca)
    assert store.linux.is_installed(ca)
    root_file = DISTRO + str(ca.path / "rootCA.pem").replace("/", "\\")
    assert [tools("certutil.exe"), "-user", "-addstore", "Root", root_file] in windows.calls
    assert windows.roots == [ca.cert]
    assert store.is_installed(ca)
    calls = len(windows.calls)
    store.install(ca)
    assert not any("-addstore" in call for call in windows.calls[calls:])
    assert store.status_detail(ca) == (True, "Windows CurrentUser Root store: trusted")


def test_uninstall_removes_exactly_this_root(ca: LocalCA) -> None:
    corp = foreign_root("Example Corp", "Example Corp Root")
    windows = FakeWindows([corp, ca.cert])
    linux = FakeLinux()
    linux.installed = True
    store = WSLSystemStore(linux, windows, find_tool=tools)
    sha1 = ca.cert.fingerprint(hashes.SHA1()).hex()
    assert store.plan_uninstall(ca)[-1] == f"{tools('certutil.exe')} -user -delstore Root {sha1}"
    store.uninstall(ca)
    assert windows.calls[-1] == [tools("certutil.exe"), "-user", "-delstore", "Root", sha1]
    assert windows.roots == [corp]
    assert not linux.installed
    assert store.plan_uninstall(ca) == []


def test_status_names_a_different_development_ca_in_windows(ca: LocalCA) -> None:
    mkcert = foreign_root("mkcert development CA", "mkcert me@laptop")
    other_devtls = LocalCA.generate().cert
    corp = foreign_root("Example Corp", "Example Corp Root")
    windows = FakeWindows([corp, mkcert, other_devtls])
    store = WSLSystemStore(FakeLinux(), windows, find_tool=tools)
    trusted, detail = store.status_detail(ca)
    assert not trusted
    assert detail.startswith(
        "Windows CurrentUser Root store: not trusted; a different development CA"
    )
    for cert in (mkcert, other_devtls):
        assert cert.subject.rfc4514_string() in detail
        assert cert.fingerprint(hashes.SHA256()).hex().upper() in detail
    assert "Example Corp" not in detail
    notes = store.notes(ca, "install")
    assert len(notes) == 2
    assert all("a different development CA" in note for note in notes)


def test_without_interop_linux_is_installed_and_windows_is_one_note(ca: LocalCA) -> None:
    windows = FakeWindows()
    store = WSLSystemStore(FakeLinux(), windows, find_tool=lambda _name: None)
    assert store.available().available
    assert "WSL interop is off" in store.available().reason
    store.install(ca)
    assert store.linux.is_installed(ca)
    assert windows.calls == []
    notes = store.notes(ca, "install")
    assert len(notes) == 1
    assert "interop" in notes[0]
    assert store.status_detail(ca) == (False, "Windows store unreachable (WSL interop is off)")


def test_status_under_wsl_reports_the_windows_half(
    ca: LocalCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    import devtls.truststores
    from devtls import trust

    monkeypatch.setattr(devtls.truststores.sys, "platform", "linux")
    monkeypatch.setattr(devtls.truststores, "running_under_wsl", lambda: True)
    monkeypatch.setattr("devtls.truststores.system_wsl._find_windows_tool", lambda _name: None)
    report = trust.status(ca.path)
    system = report["stores"]["system"]
    assert system["state"] in {"not trusted", "unavailable"}
    assert "Windows store unreachable" in system["detail"]


def test_an_unreadable_windows_listing_is_one_line(ca: LocalCA) -> None:
    from devtls.errors import TrustStoreError

    def runner(args: Sequence[str], stdin: bytes | None) -> tuple[int, str]:
        return 0, "Get-ChildItem : Cannot find drive.\r\nAt line:1 char:1\r\n"

    store = WSLSystemStore(FakeLinux(), runner, find_tool=tools)
    with pytest.raises(TrustStoreError, match="not JSON") as caught:
        store.windows_roots()
    assert "\n" not in str(caught.value)
    trusted, detail = store.status_detail(ca)
    assert not trusted
    assert "not JSON" in detail
    assert WSLSystemStore(FakeLinux(), FakeWindows(), find_tool=tools).windows_roots() == []
