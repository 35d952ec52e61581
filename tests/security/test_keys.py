"""API keys and projects at the service level: format, hashing, scopes, expiry, revocation, cache bound."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from stratus.errors import Conflict, InvalidInput, NotFound, StratusError, Unauthenticated
from stratus.security.keys import KeyService, check_scopes, load_or_create_secret_file, satisfies
from stratus.store import Database
from stratus.store.tables import ApiKey, utcnow


@pytest.fixture
def keys(database_url: str) -> Iterator[KeyService]:
    db = Database(database_url)
    db.migrate()
    yield KeyService(db, b"p" * 32, cache_seconds=0.2)
    db.dispose()


def test_key_format_and_round_trip(keys: KeyService) -> None:
    keys.ensure_project("default")
    info, plaintext = keys.create_key("default", ["predict"], name="web")
    assert plaintext.startswith(f"stk_{info.id}_") and len(info.id) == 12
    caller, rps = keys.authenticate(plaintext)
    assert caller.project == "default" and caller.key_id == info.id and caller.scopes == {"predict"}
    assert rps is None
    with pytest.raises(Unauthenticated, match="invalid API key"):
        keys.authenticate(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B"))
    with pytest.raises(Unauthenticated, match="malformed"):
        keys.authenticate("sk-openai-style")


def test_scopes_are_ordered_and_checked() -> None:
    assert satisfies(frozenset({"admin"}), "manage") and satisfies(frozenset({"manage"}), "predict")
    assert satisfies(frozenset({"predict"}), "read") and not satisfies(frozenset({"predict"}), "manage")
    assert not satisfies(frozenset({"read"}), "predict") and not satisfies(frozenset(), "read")
    with pytest.raises(InvalidInput, match="unknown scope"):
        check_scopes(["root"])
    with pytest.raises(InvalidInput, match="at least one"):
        check_scopes([])


def test_revocation_is_immediate_here_and_bounded_elsewhere(keys: KeyService, tmp_path: Path) -> None:
    keys.ensure_project("default")
    info, plaintext = keys.create_key("default", ["read"])
    keys.authenticate(plaintext)
    keys.revoke(info.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        keys.authenticate(plaintext)
    # Another process (a second KeyService on the same DB) notices within its cache interval.
    info2, plaintext2 = keys.create_key("default", ["read"])
    other = KeyService(keys.db, b"p" * 32, cache_seconds=0.2)
    other.authenticate(plaintext2)
    keys.revoke(info2.id)
    time.sleep(0.25)
    with pytest.raises(Unauthenticated, match="revoked"):
        other.authenticate(plaintext2)


def test_expired_keys_fail(keys: KeyService) -> None:
    keys.ensure_project("default")
    info, plaintext = keys.create_key("default", ["read"], expires_at=utcnow() + timedelta(hours=1))
    with keys.db.write() as s:
        row = s.get(ApiKey, info.id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
    time.sleep(0.25)
    with pytest.raises(Unauthenticated, match="expired"):
        keys.authenticate(plaintext)
    with pytest.raises(InvalidInput, match="future"):
        keys.create_key("default", ["read"], expires_at=utcnow() - timedelta(days=1))


def test_bootstrap_creates_one_admin_key_once(keys: KeyService) -> None:
    first = keys.bootstrap_admin()
    assert first is not None and keys.authenticate(first)[0].scopes == {"admin"}
    assert keys.bootstrap_admin() is None


def test_projects(keys: KeyService) -> None:
    keys.create_project("team-a", rate_limit_rps=5, monthly_item_quota=100)
    with pytest.raises(Conflict):
        keys.create_project("team-a")
    with pytest.raises(InvalidInput, match="invalid project name"):
        keys.create_project("../etc")
    with pytest.raises(NotFound):
        keys.create_key("nope", ["read"])
    assert keys.update_project("team-a", {"monthly_item_quota": 7}).monthly_item_quota == 7
    assert [p.name for p in keys.list_projects()] == ["team-a"]
    _, a_key = keys.create_key("team-a", ["manage"])
    assert keys.authenticate(a_key)[0].project == "team-a"
    with pytest.raises(NotFound):
        keys.revoke(keys.list_keys("team-a")[0].id, project="default")


def test_pepper_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "pepper.key"
    pepper = load_or_create_secret_file(path)
    assert len(pepper) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret_file(path) == pepper
    os.chmod(path, 0o644)
    with pytest.raises(StratusError, match="chmod 600"):
        load_or_create_secret_file(path)
