"""Accounts and revoked keys across restarts: saved.py's bytes, and the file they live in."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from devtls.acmeserver import saved
from devtls.acmeserver.allowlist import AllowList
from devtls.acmeserver.service import AcmeService
from devtls.acmeserver.state import Store
from devtls.acmeserver.statefile import StateFile, state_path
from devtls.ca import LocalCA
from devtls.config import parse_address
from tests.acmeserver.fakeclient import Client, body

REVOKED = "ab" * 32
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.ephemeral()


def service_of(ca: LocalCA) -> AcmeService:
    return AcmeService(lambda: ca, AllowList.parse(()), days=7)


def test_accounts_and_revoked_keys_survive_a_restart(ca: LocalCA) -> None:
    before = service_of(ca)
    ec_client, rsa_client = Client(before), Client(before, "rsa")
    ec_client.register()
    rsa_client.register()
    contact = {"contact": ["mailto:dev@example.test"]}
    assert rsa_client.post(rsa_client.kid or "", contact).status == 200
    before.store.revoke_key(REVOKED)

    after = service_of(ca)
    saved.load(after.store, saved.dump(before.store), NOW)
    # The clients go on with the URLs and keys they kept: the same accounts answer.
    for client in (ec_client, rsa_client):
        client.service = after
        account = client.post(client.kid or "", None)
        assert account.status == 200, account.body
    assert body(rsa_client.post(rsa_client.kid or "", None))["contact"] == contact["contact"]
    assert list(after.store.revoked_keys) == [REVOKED]
    # newAccount with a known key finds its account instead of making a second one.
    again = ec_client.post("/acme/new-account", {"termsOfServiceAgreed": True}, use_jwk=True)
    assert again.status == 200


def test_a_deactivated_account_stays_deactivated(ca: LocalCA) -> None:
    before = service_of(ca)
    client = Client(before)
    client.register()
    assert client.post(client.kid or "", {"status": "deactivated"}).status == 200
    after = service_of(ca)
    saved.load(after.store, saved.dump(before.store), NOW)
    client.service = after
    answer = client.post(client.kid or "", None)
    assert (answer.status, body(answer)["detail"]) == (401, "the account is deactivated")


def test_every_saved_change_moves_the_revision(ca: LocalCA) -> None:
    service = service_of(ca)
    client = Client(service)
    seen = [service.store.revision]
    client.register()
    seen.append(service.store.revision)
    client.post(client.kid or "", {"contact": ["mailto:a@example.test"]})
    seen.append(service.store.revision)
    service.store.revoke_key(REVOKED)
    seen.append(service.store.revision)
    assert seen == sorted(set(seen)), seen
    # A read changes nothing that is saved.
    client.post(client.kid or "", None)
    assert service.store.revision == seen[-1]


def one_account(ca: LocalCA) -> dict[str, Any]:
    service = service_of(ca)
    Client(service).register()
    return json.loads(saved.dump(service.store))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda s: b"{not json", "it is not JSON"),
        (lambda s: json.dumps({**s, "format": 2}).encode(), "it is not format 1"),
        (lambda s: json.dumps([s]).encode(), "it is not format 1"),
        (
            lambda s: json.dumps({**s, "accounts": [{**s["accounts"][0], "id": "../x"}]}).encode(),
            "account 1 has a malformed id",
        ),
        (
            lambda s: json.dumps({**s, "accounts": [{**s["accounts"][0], "status": "x"}]}).encode(),
            "account 1 has the status 'x'",
        ),
        (
            lambda s: json.dumps(
                {
                    **s,
                    "accounts": [
                        {**s["accounts"][0], "jwk": {**s["accounts"][0]["jwk"], "d": "AA"}}
                    ],
                }
            ).encode(),
            "account 1: the jwk holds a private key",
        ),
        (
            lambda s: json.dumps(
                {**s, "accounts": [{**s["accounts"][0], "jwk": {"kty": "oct", "k": "AA"}}]}
            ).encode(),
            "account 1: not an RSA key or an EC key",
        ),
        (
            lambda s: json.dumps(
                {**s, "accounts": [{**s["accounts"][0], "contact": ["http://x"]}]}
            ).encode(),
            "account 1: only mailto: contacts",
        ),
        (
            lambda s: json.dumps({**s, "accounts": s["accounts"] * 2}).encode(),
            "two accounts have the same id or the same key",
        ),
        (
            lambda s: json.dumps({**s, "revoked_keys": ["xyz"]}).encode(),
            "'revoked_keys' holds something that is not a SHA-256",
        ),
        (
            lambda s: json.dumps({**s, "accounts": [{**s["accounts"][0], "more": 1}]}).encode(),
            "account 1 is not an object of id, jwk, contact and status",
        ),
        (lambda s: b" " * (saved.MAX_SAVED_BYTES + 1), "it is over 8 MiB"),
    ],
)
def test_a_damaged_file_is_refused_whole(ca: LocalCA, damage: Any, reason: str) -> None:
    store = Store()
    with pytest.raises(saved.SavedStateError) as refused:
        saved.load(store, damage(one_account(ca)), NOW)
    assert str(refused.value).startswith(reason), refused.value
    assert len(store.accounts) == 0


def test_the_file_is_per_address_and_port_0_saves_nothing(tmp_path: Path) -> None:
    assert state_path(tmp_path, parse_address("127.0.0.1:0")) is None
    v4 = state_path(tmp_path, parse_address("127.0.0.1:14000"))
    v6 = state_path(tmp_path, parse_address("[::1]:14000"))
    assert v4 == tmp_path / "acme-server" / "127.0.0.1-14000.json"
    assert v6 is not None
    assert v6.parent == v4.parent
    assert v6.name == "__1-14000.json"


def test_the_file_is_written_private_and_read_back(ca: LocalCA, tmp_path: Path) -> None:
    path = tmp_path / "caroot" / "acme-server" / "127.0.0.1-14000.json"
    lines: list[str] = []
    service = service_of(ca)
    file = StateFile(path, lines.append)
    file.load(service.store)  # none yet: nothing said
    assert lines == []
    Client(service).register()
    file.save_if_changed(service.store)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    written = path.stat().st_mtime_ns
    file.save_if_changed(service.store)  # unchanged: not written again
    assert path.stat().st_mtime_ns == written

    restarted = service_of(ca)
    StateFile(path, lines.append).load(restarted.store)
    assert len(restarted.store.accounts) == 1
    assert lines == [f"1 accounts read from {path}"]


@pytest.mark.parametrize("kind", ["garbage", "fifo", "symlink", "folder"])
def test_an_unusable_file_is_set_aside_and_the_server_starts(
    ca: LocalCA, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "acme-server" / "127.0.0.1-14000.json"
    path.parent.mkdir()
    if kind == "garbage":
        path.write_bytes(b"\x00\xff garbage")
    elif kind == "fifo":
        os.mkfifo(path)  # read without waiting for a writer
    elif kind == "symlink":
        (tmp_path / "elsewhere.json").write_text("{}")
        path.symlink_to(tmp_path / "elsewhere.json")
    else:
        path.mkdir()
    lines: list[str] = []
    service = service_of(ca)
    StateFile(path, lines.append).load(service.store)
    assert len(service.store.accounts) == 0
    [line] = lines
    reason = {
        "garbage": "it is not JSON",
        "fifo": "it is a FIFO, not a regular file",
        "symlink": "it is a symbolic link",
        "folder": "it is a directory, not a regular file",
    }[kind]
    assert line.startswith(f"cannot use {path}: {reason}; "), line
    if kind != "folder":
        assert line.endswith(f"moved to {path}.bad, and no accounts are known"), line
        assert os.path.lexists(f"{path}.bad")
        assert not os.path.lexists(path)


def test_a_folder_that_cannot_be_written_is_said_once(ca: LocalCA, tmp_path: Path) -> None:
    blocker = tmp_path / "acme-server"
    blocker.write_text("a file where the folder should be")
    lines: list[str] = []
    service = service_of(ca)
    file = StateFile(blocker / "127.0.0.1-14000.json", lines.append)
    client = Client(service)
    client.register()
    file.save_if_changed(service.store)
    client.post(client.kid or "", {"contact": ["mailto:a@example.test"]})
    file.save_if_changed(service.store)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"cannot save the accounts to {blocker}")
    assert lines[0].endswith("they live in memory until it can")
