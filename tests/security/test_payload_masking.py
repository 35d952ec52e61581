"""Masking before storage: configured fields, V2 inputs, emails, phone numbers, Luhn-valid card numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from stratus.errors import IntegrityError
from stratus.security.encryption import Keyring
from stratus.security.masking import MASK, PayloadLog, mask_payload, mask_text
from stratus.store import Database
from stratus.store.tables import PayloadLogEntry


def _db_bytes(folder: Path) -> bytes:
    """The database file with its WAL and shared-memory files, whatever has been checkpointed."""
    return b"".join(path.read_bytes() for path in sorted(folder.glob("p.db*")))


def test_built_in_patterns() -> None:
    assert mask_text("write to ana.lopez@example.com now") == "write to [email] now"
    assert mask_text("call +44 20 7946 0958 or (555) 123-4567") == "call [phone] or [phone]"
    assert mask_text("card 4111 1111 1111 1111 ok") == "card [card] ok"
    assert mask_text("card 4111-1111-1111-1112") == "card 4111-1111-1111-1112"  # fails Luhn: not a card
    assert mask_text("order 12345, 3 items at 19.99, year 2026") == "order 12345, 3 items at 19.99, year 2026"


def test_configured_fields_and_v2_inputs() -> None:
    payload = {
        "inputs": [
            {"name": "ssn", "shape": [1], "datatype": "BYTES", "data": ["123-45-6789"]},
            {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["mail me: a@b.io"]},
        ],
        "customer": {"Name": "Ana", "age": 41},
    }
    masked = mask_payload(payload, ["SSN", "name"])
    assert masked["inputs"][0]["data"] == MASK
    assert masked["inputs"][1]["data"] == ["mail me: [email]"]
    assert masked["customer"] == {"Name": MASK, "age": 41}
    assert payload["inputs"][0]["data"] == ["123-45-6789"]  # the original is untouched


def test_payload_log_is_off_by_default_and_masks_when_on(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate()
    keyring = Keyring.generate()
    off = PayloadLog(db, keyring, enabled=False, fields=[])
    off.record("default", "k", "m", "v2", {"x": {"data": ["a@b.io"]}})
    assert off.recent("default") == []
    on = PayloadLog(db, keyring, enabled=True, fields=["secret"])
    on.record("default", "k", "m", "v2", {"text": {"data": ["a@b.io", "kept-in-the-log"]}, "secret": {"data": [1, 2]}})
    [entry] = on.recent("default")
    assert entry["payload"] == {"text": {"data": ["[email]", "kept-in-the-log"]}, "secret": MASK}
    assert on.recent("other") == []
    db.dispose()
    # What the DB file holds is sealed: the logged text is not in it.
    assert b"kept-in-the-log" not in _db_bytes(tmp_path)


def test_payload_log_rows_are_bound_to_their_key_and_project(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate()
    keyring = Keyring.generate()
    log = PayloadLog(db, keyring, enabled=True, fields=[])
    log.record("default", "k", "m", "v2", {"x": {"data": [1]}})
    log.flush()
    # Another master key cannot open it.
    with pytest.raises(IntegrityError):
        PayloadLog(db, Keyring.generate(), enabled=True, fields=[]).recent("default")
    # A row moved to another project does not authenticate there.
    with db.write() as s:
        s.execute(update(PayloadLogEntry).values(project="other"))
    with pytest.raises(IntegrityError):
        log.recent("other")
    db.dispose()


def test_plain_rows_of_an_older_server_are_sealed_and_a_rotation_rewraps_batch_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate()
    with db.write() as s:
        s.add(PayloadLogEntry(project="default", key_id="k", model="m", protocol="v2", payload={"x": "old-plain"}))
    old = Keyring.generate()
    log = PayloadLog(db, old, enabled=True, fields=[])
    assert log.seal_plain_rows() == 1
    assert log.seal_plain_rows() == 0
    assert [e["payload"] for e in log.recent("default")] == [{"x": "old-plain"}]
    new = Keyring(Keyring.generate().current, [old.current])
    assert PayloadLog(db, new, enabled=True, fields=[]).rewrap() == 1
    # Only the new key is needed from now on.
    assert [e["payload"] for e in PayloadLog(db, Keyring(new.current), enabled=True, fields=[]).recent("default")] == [
        {"x": "old-plain"}
    ]
    db.dispose()
    assert b"old-plain" not in _db_bytes(tmp_path)


def test_payload_log_through_the_api(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from conftest import as_admin, make_settings
    from onnx_factory import affine_model
    from stratus.api import create_app

    settings = make_settings(tmp_path / "home", payload_log=True, payload_log_mask_fields=["x"])
    with TestClient(create_app(settings)) as client:
        as_admin(client)
        client.post("/api/v1/models/affine/versions", files={"file": ("a.onnx", affine_model())})
        row = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
        assert client.post("/v2/models/affine/infer", json=row).status_code == 200
        [entry] = client.get("/api/v1/payload-log").json()["entries"]
        assert entry["model"] == "affine" and entry["protocol"] == "v2" and entry["payload"] == {"x": MASK}
