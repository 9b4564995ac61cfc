"""Firefox's policy on macOS (``defaults``) and Windows (``reg``), against recorded tools that
keep the domain and the registry in memory, so a round trip can be checked to leave them as
they were."""

from __future__ import annotations

import copy
import plistlib
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath
from typing import Any

import pytest

from devtls.ca import LocalCA
from devtls.truststores.base import describe
from devtls.truststores.firefox_policy_macos import DOMAIN, MacOSFirefoxPolicy
from devtls.truststores.firefox_policy_windows import (
    CERTIFICATES,
    INSTALL,
    WindowsFirefoxPolicy,
)
from devtls.truststores.policies import cert_file_name


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    ca, _ = LocalCA.load_or_create(tmp_path / "ca")
    return ca


class FakeDefaults:
    """`defaults export|import|delete` of one domain."""

    def __init__(self, domain: dict[str, Any] | None = None) -> None:
        self.domain = copy.deepcopy(domain)
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str], stdin: bytes | None) -> tuple[int, str]:
        self.calls.append(list(args))
        assert args[0] == "defaults"
        assert args[2] == DOMAIN
        if args[1] == "export":
            if self.domain is None:
                return 1, f"Domain {DOMAIN} does not exist\n"
            return 0, plistlib.dumps(self.domain).decode()
        if args[1] == "import":
            assert stdin is not None
            self.domain = plistlib.loads(stdin)
            return 0, ""
        if args[1] == "delete":
            self.domain = None
            return 0, ""
        raise AssertionError(args)


def test_macos_policy_on_a_new_domain_round_trip(ca: LocalCA, tmp_path: Path) -> None:
    fake = FakeDefaults()
    (tmp_path / "fs").mkdir()
    policy = MacOSFirefoxPolicy(fake, root=tmp_path / "fs", is_admin=lambda: True)
    entry = f"/Library/Application Support/Mozilla/Certificates/{cert_file_name(ca)}"
    plan = policy.plan_install(ca)
    assert f"defaults import {DOMAIN} - (the domain, as JSON here):" in plan
    assert fake.domain is None
    policy.install(ca)
    assert fake.domain == {
        "EnterprisePoliciesEnabled": True,
        "Certificates": {"Install": [entry], "ImportEnterpriseRoots": True},
    }
    assert policy.cert_copy(ca).read_bytes() == ca.cert_pem()
    assert policy.is_installed(ca)
    calls = len(fake.calls)
    policy.install(ca)  # again: nothing to write
    assert all(call[1] == "export" for call in fake.calls[calls:])
    assert policy.plan_uninstall(ca) == [
        f"defaults delete {DOMAIN}",
        f"remove {policy.cert_copy(ca)}",
    ]
    policy.uninstall(ca)
    assert fake.calls[-1] == ["defaults", "delete", DOMAIN]
    assert fake.domain is None
    assert list((tmp_path / "fs").iterdir()) == []  # the folders devtls made are gone


def test_macos_policy_keeps_what_the_admin_set(ca: LocalCA, tmp_path: Path) -> None:
    theirs = {
        "EnterprisePoliciesEnabled": True,
        "DisableTelemetry": True,
        "Certificates": {"ImportEnterpriseRoots": True, "Install": ["corp.der"]},
    }
    fake = FakeDefaults(theirs)
    policy = MacOSFirefoxPolicy(fake, root=tmp_path / "fs", is_admin=lambda: True)
    other, _ = LocalCA.load_or_create(tmp_path / "other")
    policy.install(ca)
    policy.install(other)
    assert fake.domain is not None
    assert fake.domain["Certificates"]["Install"][0] == "corp.der"
    assert len(fake.domain["Certificates"]["Install"]) == 3
    plan = policy.plan_uninstall(ca)
    assert plan[0] == f"defaults import {DOMAIN} - (the domain, as JSON here):"
    removed = [line for line in plan if line.startswith("  -") and cert_file_name(ca) in line]
    assert len(removed) == 1
    assert not any(line.startswith("  -") and "ImportEnterpriseRoots" in line for line in plan)
    policy.uninstall(ca)
    policy.uninstall(other)
    assert fake.domain == theirs
    assert policy.plan_uninstall(ca) == []


class FakeReg:
    """`reg query|add|delete` over keys in memory (names as given, HKLM\\...)."""

    def __init__(self, keys: dict[str, dict[str, tuple[str, str]]] | None = None) -> None:
        self.keys = copy.deepcopy(keys or {})
        self.calls: list[list[str]] = []

    @staticmethod
    def long(key: str) -> str:
        return key.replace("HKLM\\", "HKEY_LOCAL_MACHINE\\", 1)

    def __call__(self, args: Sequence[str], stdin: bytes | None) -> tuple[int, str]:
        self.calls.append(list(args))
        if list(args) == ["net", "session"]:
            return 0, "There are no entries in the list.\r\n"
        assert args[0] == "reg"
        verb, key = args[1], args[2]
        if verb == "query":
            if key not in self.keys:
                return 1, "ERROR: The system was unable to find the specified registry key.\r\n"
            subkeys = sorted(k for k in self.keys if k.startswith(key + "\\"))
            if "/s" not in args:
                subkeys = [k for k in subkeys if "\\" not in k[len(key) + 1 :]]
            lines = ["", self.long(key)]
            lines += [f"    {n}    {t}    {d}" for n, (t, d) in self.keys[key].items()]
            for sub in subkeys:
                lines += ["", self.long(sub)]
                if "/s" in args:
                    lines += [f"    {n}    {t}    {d}" for n, (t, d) in self.keys[sub].items()]
            return 0, "\r\n".join(lines) + "\r\n"
        if verb == "add":
            parts = key.split("\\")
            for n in range(3, len(parts) + 1):  # HKLM\\SOFTWARE is always there
                self.keys.setdefault("\\".join(parts[:n]), {})
            name = args[args.index("/v") + 1]
            kind = args[args.index("/t") + 1]
            data = args[args.index("/d") + 1]
            self.keys[key][name] = (kind, "0x1" if kind == "REG_DWORD" else data)
            return 0, "The operation completed successfully.\r\n"
        if verb == "delete":
            if "/v" in args:
                del self.keys[key][args[args.index("/v") + 1]]
            else:
                for k in [k for k in self.keys if k == key or k.startswith(key + "\\")]:
                    del self.keys[k]
            return 0, "The operation completed successfully.\r\n"
        raise AssertionError(args)


def test_windows_policy_on_an_empty_registry_round_trip(ca: LocalCA, tmp_path: Path) -> None:
    fake = FakeReg({"HKLM\\SOFTWARE\\Policies": {}})
    (tmp_path / "ProgramData").mkdir()
    policy = WindowsFirefoxPolicy(fake, folder=tmp_path / "ProgramData" / "devtls" / "firefox")
    assert policy.has_rights()
    entry = str(PureWindowsPath(policy.cert_copy(ca)))
    add_entry = ["reg", "add", INSTALL, "/v", "1", "/t", "REG_SZ", "/d", entry, "/f"]
    add_roots = ["reg", "add", CERTIFICATES, "/v", "ImportEnterpriseRoots", "/t", "REG_DWORD",
                 "/d", "1", "/f"]  # fmt: skip
    assert policy.plan_install(ca)[1:] == [describe(add_entry), describe(add_roots)]
    assert not policy.cert_copy(ca).exists()  # planning writes nothing
    policy.install(ca)
    assert [c for c in fake.calls if c[1] == "add"] == [add_entry, add_roots]
    assert policy.is_installed(ca)
    assert policy.cert_copy(ca).read_bytes() == ca.cert_pem()
    policy.uninstall(ca)
    assert fake.keys == {"HKLM\\SOFTWARE\\Policies": {}}
    assert list((tmp_path / "ProgramData").iterdir()) == []


def test_windows_policy_keeps_what_the_admin_set(ca: LocalCA, tmp_path: Path) -> None:
    theirs = {
        "HKLM\\SOFTWARE\\Policies": {},
        "HKLM\\SOFTWARE\\Policies\\Mozilla": {},
        "HKLM\\SOFTWARE\\Policies\\Mozilla\\Firefox": {"DisableTelemetry": ("REG_DWORD", "0x1")},
        CERTIFICATES: {"ImportEnterpriseRoots": ("REG_DWORD", "0x1")},
        INSTALL: {"1": ("REG_SZ", "C:\\corp\\root.der")},
    }
    fake = FakeReg(theirs)
    policy = WindowsFirefoxPolicy(fake, folder=tmp_path / "pd", is_admin=lambda: True)
    policy.install(ca)
    assert fake.keys[INSTALL]["2"][1] == str(PureWindowsPath(policy.cert_copy(ca)))
    assert not any(c[1] == "add" and "ImportEnterpriseRoots" in c for c in fake.calls)
    steps = policy.plan_uninstall(ca)
    assert steps[0] == describe(["reg", "delete", INSTALL, "/v", "2", "/f"])
    policy.uninstall(ca)
    assert fake.keys == theirs
