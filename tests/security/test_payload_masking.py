"""Masking before storage: configured fields, V2 inputs, emails, phone numbers, Luhn-valid card numbers; the
inference log's seal (a data key per batch, each page bound to its project and model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from stratus.dataplane import InferenceEvent
from stratus.errors import IntegrityError
from stratus.monitoring.log import InferenceLog
from stratus.monitoring.policy import OFF, LogPolicy, LogSettings
from stratus.security.encryption import Keyring
from stratus.security.masking import MASK, PayloadSeal, mask_payload, mask_text
from stratus.store import Database
from stratus.store.tables import InferenceLogPage, PayloadLogEntry
from stratus.tenancy import Caller


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


def _event(project: str = "default", **inputs: np.ndarray) -> InferenceEvent:
    outputs = {"label": np.array([1], dtype=np.int64)}
    return InferenceEvent(1.0e9, Caller(project, "k"), "m", 1, "", "v2", 0.001, 200, "", 1, inputs, outputs)


def _log(db: Database, keyring: Keyring, default: LogPolicy = OFF, fields: tuple[str, ...] = ()) -> InferenceLog:
    return InferenceLog(db, PayloadSeal(db, keyring), LogSettings(db, default), mask_fields=fields)


def test_the_inference_log_is_off_by_default_and_masks_when_on(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate()
    keyring = Keyring.generate()
    off = _log(db, keyring)
    off.observe(_event(x=np.array(["a@b.io"], dtype=object)))
    assert off.flush() == 0 and list(off.records("default", model="m")) == []
    on = _log(db, keyring, LogPolicy("all", 1.0, True), fields=("secret",))
    text = np.array([b"a@b.io", b"kept-in-the-log"], dtype=object)
    on.observe(_event(text=text, secret=np.array([1.0, 2.0], dtype=np.float32)))
    [record] = list(on.records("default", model="m"))
    assert record.inputs == {
        "text": {"dtype": "str", "shape": [2], "data": ["[email]", "kept-in-the-log"]},
        "secret": {"masked": True},
    }
    assert list(record.arrays("inputs")) == ["text"] and record.arrays("outputs")["label"].tolist() == [1]
    assert list(on.records("other", model="m")) == []
    db.dispose()
    # What the DB file holds is sealed: the logged text is not in it.
    assert b"kept-in-the-log" not in _db_bytes(tmp_path)


def test_log_pages_are_bound_to_their_key_and_project(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate()
    keyring = Keyring.generate()
    log = _log(db, keyring, LogPolicy("all", 1.0, True))
    log.observe(_event(x=np.array([1.0])))
    log.flush()
    # Another master key cannot open it.
    with pytest.raises(IntegrityError):
        list(_log(db, Keyring.generate()).records("default", model="m"))
    # A page moved to another project does not authenticate there.
    with db.write() as s:
        s.execute(update(InferenceLogPage).values(project="other"))
    with pytest.raises(IntegrityError):
        list(_log(db, keyring).records("other", model="m"))
    db.dispose()


def test_payload_log_rows_of_an_older_server_move_in_and_a_rotation_rewraps_batch_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    db.migrate()
    with db.write() as s:
        s.add(
            PayloadLogEntry(
                project="default", key_id="k", model="m", protocol="v2", payload={"x": {"shape": [1], "data": [7.5]}}
            )
        )
    old = Keyring.generate()
    log = _log(db, old)
    assert log.absorb_payload_log() == 1
    assert log.absorb_payload_log() == 0
    [record] = list(log.records("default", model="m"))
    assert record.arrays("inputs")["x"].tolist() == [7.5] and record.key_id == "k"
    new = Keyring(Keyring.generate().current, [old.current])
    assert PayloadSeal(db, new).rewrap() == 1
    # Only the new key is needed from now on.
    [again] = list(_log(db, Keyring(new.current)).records("default", model="m"))
    assert again.inputs == record.inputs
    db.dispose()
