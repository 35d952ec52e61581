"""Alert rules against a real database, a real receiver on 127.0.0.1 and a fake metric on a fake clock:
signed webhooks, retries with backoff, the delivery log, the audit log, the ALERTS gauge, sealed secrets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select

from conftest import scaled
from stratus.errors import Conflict, InvalidInput, NotFound
from stratus.monitoring.alerts_service import AlertService
from stratus.monitoring.webhooks import SIGNATURE_HEADER, signature, verify, verify_headers
from stratus.monitoring.webhooks_delivery import Delivery, WebhookSender
from stratus.security.audit import AuditLog
from stratus.security.encryption import Keyring
from stratus.security.outbound import OutboundPolicy
from stratus.security.webhook_secrets import open_secret, rewrap_secrets
from stratus.store import Database
from stratus.store.tables import AlertDelivery, AlertEvent, AlertRule
from stratus.tenancy import Caller, acting_as
from webhook_receiver import Receiver, receiver

LOOPBACK = ["127.0.0.1/32"]


class Metric:
    """A metric source whose value the test sets: (project, kind, target, metric) -> value."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str, str], float | None] = {}

    def __call__(self, project: str, kind: str, target: str, metric: str, window_s: float, now: float) -> float | None:
        return self.values.get((project, kind, target, metric))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'alerts.db'}")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def any_db(database_url: str) -> Iterator[Database]:
    """A fresh metadata DB: SQLite, then the run's PostgreSQL (conftest.database_url), for the tests whose
    queries (rules by project, events with their attempts, audit) must hold on both engines."""
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def make_service(db: Database, source: Metric, *, attempts: int = 5, allowed: list[str] = LOOPBACK) -> AlertService:
    policy = OutboundPolicy(allowed)
    sender = WebhookSender(db, policy, attempts=attempts, backoff_s=0.05, timeout_s=scaled(10))
    return AlertService(db, Keyring.generate(), AuditLog(db), policy, sender, interval_s=1.0, source=source)


def delivered(hook: Receiver, count: int) -> list[Any]:
    return hook.wait_for(lambda seen: len(seen) >= count, scaled(30))


def test_signatures_verify_and_refuse_tampering() -> None:
    body, secret, now = b'{"status": "firing"}', b"whsec_abc", 1_700_000_000
    header = signature(secret, now, body)
    assert verify(secret, header, body, now)
    assert verify("whsec_abc", header, body, now + 299)
    assert not verify(secret, header, body + b" ", now)
    assert not verify(b"whsec_abd", header, body, now)
    assert not verify(secret, header, body, now + 301)  # a replay after the tolerance
    assert not verify(secret, header.replace("t=", "t=1"), body, now)
    assert not verify(secret, "v1=deadbeef", body, now)
    assert verify_headers(secret, {SIGNATURE_HEADER.lower(): header}, body, now)


def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_try(any_db: Database) -> None:
    db = any_db
    source = Metric()
    alerts = make_service(db, source)
    alerts.sender.start()
    try:
        with receiver(fail_first=2) as hook:
            rule = alerts.create(
                {"name": "slow", "target": "iris", "metric": "p99_ms", "threshold": 200.0, "webhook_url": hook.url}
            )
            source.values[("default", "model", "iris", "p99_ms")] = 350.0
            assert alerts.evaluate(now=1000.0) == [("default", "slow", "firing")]
            got = delivered(hook, 3)
            assert [r.status for r in got] == [500, 500, 200]
            assert [r.headers["Stratus-Delivery-Attempt"] for r in got] == ["1", "2", "3"]
            assert len({r.headers["Stratus-Event-Id"] for r in got}) == 1
            for r in got:  # every attempt is signed afresh with the rule's secret
                assert verify_headers(rule["secret"], r.headers, r.body, time.time())
            body = orjson.loads(got[-1].body)
            assert body["status"] == "firing" and body["rule"] == "slow" and body["model"] == "iris"
            assert body["value"] == 350.0 and body["threshold"] == 200.0
            (event,) = wait_history(alerts, lambda e: e["delivery"] == "delivered")
            assert [(a["attempt"], a["status_code"]) for a in event["attempts"]] == [(1, 500), (2, 500), (3, 200)]
    finally:
        alerts.close()


def wait_history(alerts: AlertService, done: Any) -> list[dict[str, Any]]:
    end = time.monotonic() + scaled(30)
    while time.monotonic() < end:
        events = alerts.history()
        if events and all(done(e) for e in events):
            return events
        time.sleep(0.05)
    raise AssertionError(alerts.history())


def test_delivery_gives_up_after_its_attempts_and_says_why(db: Database) -> None:
    source = Metric()
    alerts = make_service(db, source, attempts=2)
    alerts.sender.start()
    try:
        with receiver(fail_first=100) as hook:
            alerts.create(
                {"name": "errors", "target": "iris", "metric": "error_rate", "threshold": 0.1, "webhook_url": hook.url}
            )
            source.values[("default", "model", "iris", "error_rate")] = 0.5
            alerts.evaluate(now=10.0)
            (event,) = wait_history(alerts, lambda e: e["delivery"] == "failed")
            assert [a["status_code"] for a in event["attempts"]] == [500, 500]
            assert "answered 500" in event["attempts"][-1]["error"]
            assert len(hook.received()) == 2
    finally:
        alerts.close()


def test_a_url_refused_at_delivery_is_not_retried(db: Database) -> None:
    """The URL was allowed when the rule was made; the policy (or DNS) changed since: refused, never called."""
    with receiver() as hook:
        sender = WebhookSender(db, OutboundPolicy(), attempts=5, backoff_s=0.05, timeout_s=scaled(10))
        with db.write() as s:
            from stratus.tenancy.projects import Projects

            project_id = Projects(db).current_id()
            event = AlertEvent(
                project_id=project_id,
                rule_id="r",
                rule_name="r",
                kind="firing",
                target_kind="model",
                target="iris",
                condition="p99_ms > 1 ms",
                value=2.0,
                delivery="pending",
            )
            s.add(event)
            s.flush()
            event_id = event.id
        sender.start()
        sender.submit(Delivery(event_id, hook.url, b"secret", b"{}"))
        end = time.monotonic() + scaled(30)
        while time.monotonic() < end:
            with db.read() as s:
                state = s.get(AlertEvent, event_id)
                if state is not None and state.delivery == "failed":
                    break
            time.sleep(0.05)
        sender.close()
        with db.read() as s:
            assert s.get(AlertEvent, event_id).delivery == "failed"  # type: ignore[union-attr]
        assert hook.received() == []


def test_fire_and_resolve_write_the_audit_log_and_the_alerts_gauge(any_db: Database) -> None:
    db = any_db
    source = Metric()
    alerts = make_service(db, source)
    registry = CollectorRegistry()
    registry.register(alerts.collector())
    alerts.create(
        {
            "name": "slow",
            "target": "flowers",
            "target_kind": "endpoint",
            "metric": "p99_ms",
            "threshold": 100.0,
            "for_seconds": 60.0,
        }
    )
    key = ("default", "endpoint", "flowers", "p99_ms")
    source.values[key] = 150.0
    assert alerts.evaluate(now=0.0) == []
    assert 'stratus_alerts{alertname="slow",alertstate="pending"' in generate_latest(registry).decode()
    assert alerts.get("slow")["state"] == "pending"
    assert alerts.evaluate(now=60.0) == [("default", "slow", "firing")]
    assert 'alertstate="firing"' in generate_latest(registry).decode()
    source.values[key] = None  # the load stopped: no requests in the window
    assert alerts.evaluate(now=70.0) == [("default", "slow", "resolved")]
    assert "alertname=" not in generate_latest(registry).decode()
    entries = AuditLog(db).query(limit=10)
    assert [e.action for e in entries[:2]] == ["alert resolved", "alert firing"]
    assert entries[1].target == "alert/slow" and entries[1].project == "default" and entries[1].key_id is None
    assert "p99_ms > 100 ms for 1m" in entries[1].detail
    history = alerts.history("slow")
    assert [e["status"] for e in history] == ["resolved", "firing"] and history[0]["delivery"] == "none"


def test_rules_belong_to_their_project(any_db: Database) -> None:
    db = any_db
    from stratus.security.keys import KeyService

    KeyService(db, b"p" * 32).create_project("other")
    alerts = make_service(db, Metric())
    alerts.create({"name": "slow", "target": "iris", "metric": "p99_ms", "threshold": 1.0})
    with pytest.raises(Conflict):
        alerts.create({"name": "slow", "target": "iris", "metric": "p99_ms", "threshold": 1.0})
    with acting_as(Caller(project="other")):
        assert alerts.list_all() == []
        for call in (lambda: alerts.get("slow"), lambda: alerts.delete("slow"), lambda: alerts.history("slow")):
            with pytest.raises(NotFound):
                call()
        alerts.create({"name": "slow", "target": "iris", "metric": "p99_ms", "threshold": 2.0})
        assert alerts.get("slow")["threshold"] == 2.0
    assert alerts.get("slow")["threshold"] == 1.0


def test_bad_rules_are_refused_with_the_reason(db: Database) -> None:
    alerts = make_service(db, Metric(), allowed=[])
    for body, reason in (
        ({"name": "x", "target": "iris", "metric": "cpu", "threshold": 1.0}, "unknown alert metric"),
        (
            {"name": "x", "target": "iris", "metric": "p99_ms", "threshold": 1.0, "webhook_url": "http://127.0.0.1:1/"},
            "loopback",
        ),
        (
            {"name": "x", "target": "iris", "metric": "p99_ms", "threshold": 1.0, "webhook_url": "file:///etc/passwd"},
            "http or https",
        ),
        ({"name": "X!", "target": "iris", "metric": "p99_ms", "threshold": 1.0}, "invalid alert rule name"),
        ({"name": "x", "target": "iris", "metric": "p99_ms", "threshold": 1.0, "target_kind": "pod"}, "target_kind"),
    ):
        with pytest.raises(InvalidInput, match=reason):
            alerts.create(body)
    assert alerts.list_all() == []


def test_the_secret_is_shown_once_and_stored_sealed(db: Database) -> None:
    alerts = make_service(db, Metric())
    created = alerts.create({"name": "slow", "target": "iris", "metric": "p99_ms", "threshold": 1.0})
    secret = created["secret"]
    assert secret.startswith("whsec_") and "secret" not in alerts.get("slow")
    assert all("secret" not in rule for rule in alerts.list_all())
    if db.is_sqlite:
        assert secret.encode() not in Path(db.url.removeprefix("sqlite:///")).read_bytes()
    with db.read() as s:
        row = s.scalar(select(AlertRule))
        assert row is not None
        assert open_secret(alerts.keyring, row.id, row.secret) == secret.encode()
    # A master key rotation re-seals it; the old key is needed no more.
    rotated = Keyring(Keyring.generate().current, [alerts.keyring.current])
    assert rewrap_secrets(db, rotated) == 1
    with db.read() as s:
        row = s.scalar(select(AlertRule))
        assert row is not None
        assert open_secret(Keyring(rotated.current), row.id, row.secret) == secret.encode()


def test_a_delivery_pending_when_the_server_stopped_is_sent_at_the_next_start(db: Database) -> None:
    source = Metric()
    keyring = Keyring.generate()
    policy = OutboundPolicy(LOOPBACK)

    def service() -> AlertService:
        sender = WebhookSender(db, policy, attempts=3, backoff_s=0.05, timeout_s=scaled(10))
        return AlertService(db, keyring, AuditLog(db), policy, sender, interval_s=1.0, source=source)

    with receiver() as hook:
        first = service()  # never started: the event is stored, its delivery still queued in memory
        secret = first.create(
            {"name": "slow", "target": "iris", "metric": "p99_ms", "threshold": 1.0, "webhook_url": hook.url}
        )["secret"]
        source.values[("default", "model", "iris", "p99_ms")] = 5.0
        assert first.evaluate(now=100.0) == [("default", "slow", "firing")]
        first.close()
        assert hook.received() == [] and first.history()[0]["delivery"] == "pending"
        second = service()
        second.start()
        try:
            (got,) = delivered(hook, 1)
            assert verify_headers(secret, got.headers, got.body, time.time())
            assert orjson.loads(got.body)["status"] == "firing"
            wait_history(second, lambda e: e["delivery"] == "delivered")
        finally:
            second.close()
        # A rule deleted while its delivery was pending: the event is marked failed at the next start, and says why.
        source.values[("default", "model", "iris", "p99_ms")] = None
        assert second.evaluate(now=200.0) == [("default", "slow", "resolved")]  # queued, never sent: closed
        second.delete("slow")
        third = service()
        third.start()
        third.close()
        resolved = [e for e in third.history() if e["status"] == "resolved"]
        assert resolved[0]["delivery"] == "failed" and "removed" in resolved[0]["attempts"][-1]["error"]


def test_a_master_key_rotation_keeps_rule_secrets_usable(tmp_path: Path) -> None:
    """`stratus keys rotate-master` re-wraps the rules' secrets with the artifacts' keys: after it, only the new
    key is on disk, and the secret still opens (so deliveries keep their signature)."""
    from stratus.security.rotation import rotate_master_key
    from stratus.settings import Settings

    settings = Settings(home=tmp_path / "home", samples=False)
    settings.home.mkdir(parents=True)
    keyring = Keyring.from_settings(settings)
    database = Database(settings.resolved_database_url)
    database.migrate()
    policy = OutboundPolicy(LOOPBACK)
    sender = WebhookSender(database, policy, attempts=1, backoff_s=0, timeout_s=1)
    alerts = AlertService(database, keyring, AuditLog(database), policy, sender, interval_s=1.0, source=Metric())
    secret = alerts.create({"name": "slow", "target": "iris", "metric": "p99_ms", "threshold": 1.0})["secret"]
    database.dispose()
    assert rotate_master_key(settings) >= 1
    rotated = Keyring.from_settings(settings)
    assert rotated.current != keyring.current
    assert not settings.resolved_master_key_file.with_name("master.key.previous").exists()
    database = Database(settings.resolved_database_url)
    try:
        with database.read() as s:
            row = s.scalar(select(AlertRule))
            assert row is not None
            assert open_secret(rotated, row.id, row.secret) == secret.encode()
    finally:
        database.dispose()


def test_events_and_their_deliveries_older_than_the_history_limit_are_deleted(any_db: Database) -> None:
    db = any_db
    source = Metric()
    policy = OutboundPolicy(LOOPBACK)
    sender = WebhookSender(db, policy, attempts=1, backoff_s=0.05, timeout_s=scaled(10))
    alerts = AlertService(
        db, Keyring.generate(), AuditLog(db), policy, sender, interval_s=1.0, source=source, history_days=1
    )
    alerts.create(
        {"name": "slow", "target": "flowers", "target_kind": "endpoint", "metric": "p99_ms", "threshold": 100.0}
    )
    key = ("default", "endpoint", "flowers", "p99_ms")
    day = 86_400.0
    source.values[key] = 150.0
    assert alerts.evaluate(now=0.0) == [("default", "slow", "firing")]
    with db.write() as s:  # an attempt recorded for the old event: it must go with it
        event_id = s.scalars(select(AlertEvent.id)).one()
        s.add(AlertDelivery(event_id=event_id, attempt=1, status_code=500))
    source.values[key] = None
    assert alerts.evaluate(now=0.5 * day) == [("default", "slow", "resolved")]
    assert [e["status"] for e in alerts.history("slow")] == ["resolved", "firing"]  # both within a day
    source.values[key] = 150.0
    assert alerts.evaluate(now=1.6 * day) == [("default", "slow", "firing")]
    # The first firing (1.6 days old) is gone with its delivery; the resolution (1.1 days) too; the new one stays.
    assert [e["status"] for e in alerts.history("slow")] == ["firing"]
    with db.read() as s:
        assert s.scalars(select(AlertDelivery)).all() == []
