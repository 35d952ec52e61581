"""Alert rules as a service: create, list, delete and history for the caller's project, and the evaluation
loop around the pure state machine (stratus.monitoring.alerts.step).

Every ``interval_s`` the loop reads each enabled rule's metric over the last window from ``source`` (the
metrics history, drift, the log's drop counter: wired by the platform), steps the rule, and stores a state
that changed. A transition (fired or resolved) becomes an event row, an audit log entry (action
``alert firing`` / ``alert resolved``, no key: the server acted) and, if the rule has a webhook, a signed
delivery. The ``stratus_alerts`` gauge (Prometheus's ALERTS: 1 per pending or firing rule, with
``alertname`` and ``alertstate``) is read from the states the last evaluation left.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from stratus.errors import Conflict, InvalidInput, NotFound, StratusError
from stratus.monitoring.alerts import AlertState, Condition, Transition, check_condition, step
from stratus.monitoring.webhooks_delivery import Delivery, WebhookSender
from stratus.registry.names import check_name
from stratus.security.audit import AuditLog
from stratus.security.encryption import Keyring
from stratus.security.outbound import OutboundPolicy
from stratus.security.webhook_secrets import new_secret, open_secret, seal_secret
from stratus.store import Database
from stratus.store.tables import AlertDelivery, AlertEvent, AlertRule, Project
from stratus.tenancy import Caller, current
from stratus.tenancy.projects import Projects

log = logging.getLogger(__name__)

MAX_HISTORY = 1000
#: The history closes intervals on a grid; a close a little early still counts as due.
_SLACK_S = 1.0
TARGET_KINDS = ("model", "endpoint")


class MetricSource(Protocol):
    """The value of ``metric`` for one model or endpoint of ``project`` over the ``window_s`` seconds before
    ``now`` (Unix seconds); None when there is nothing to judge (no traffic, no drift computed)."""

    def __call__(
        self, project: str, target_kind: str, target: str, metric: str, window_s: float, now: float
    ) -> float | None: ...


@dataclass(frozen=True)
class _Watched:
    """What the loop and the gauge know of a rule between evaluations."""

    project: str
    name: str
    target_kind: str
    target: str
    metric: str
    state: str
    value: float | None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat() + "Z"


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.replace(tzinfo=UTC).timestamp()


def _condition(row: AlertRule) -> Condition:
    return Condition(row.metric, row.op, row.threshold, row.for_seconds)  # type: ignore[arg-type]


class AlertService:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        audit: AuditLog,
        policy: OutboundPolicy,
        sender: WebhookSender,
        *,
        interval_s: float,
        history_days: float = 90.0,
        min_window_s: float = 10.0,
        source: MetricSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.audit = audit
        self.policy = policy
        self.sender = sender
        self.interval_s = interval_s
        self.history_limit = timedelta(days=history_days)
        #: The metrics history's resolution: a shorter window could fall between two of its intervals.
        self.min_window_s = min_window_s
        self.source = source
        self.projects = Projects(db)
        self._clock = clock
        self._watched: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        #: Whether this server evaluates the rules: with several servers on one database, only the one holding
        #: the control lease does (the platform sets it), so an alert fires once, not once per server.
        self.in_control: Callable[[], bool] = lambda: True
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    # -- rules of the caller's project ------------------------------------------------------------------

    def _row(self, s: Any, name: str) -> AlertRule:
        row = s.scalar(
            select(AlertRule).where(AlertRule.project_id == self.projects.current_id(), AlertRule.name == name)
        )
        if row is None:
            raise NotFound(f"no alert rule {name!r}")
        assert isinstance(row, AlertRule)
        return row

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """A new rule; the answer carries its webhook secret, which is never shown again."""
        name = check_name(body.get("name", ""), "alert rule name")
        target_kind = body.get("target_kind", "model")
        if target_kind not in TARGET_KINDS:
            raise InvalidInput(f"'target_kind' is one of {', '.join(TARGET_KINDS)}")
        target = check_name(body.get("target", ""), f"{target_kind} name")
        condition = check_condition(
            body.get("metric", ""), body.get("op", ">"), body.get("threshold", 0.0), body.get("for_seconds", 0.0)
        )
        url = body.get("webhook_url")
        if url is not None:
            self.policy.resolve(url)  # 400 with the reason if the target is refused
        caller = current()
        project_id = self.projects.current_id()
        rule_id = uuid.uuid4().hex
        secret = new_secret()
        row = AlertRule(
            id=rule_id,
            project_id=project_id,
            name=name,
            target_kind=target_kind,
            target=target,
            metric=condition.metric,
            op=condition.op,
            threshold=condition.threshold,
            for_seconds=condition.for_seconds,
            webhook_url=url,
            secret=seal_secret(self.keyring, rule_id, secret),
            enabled=bool(body.get("enabled", True)),
            created_by=caller.key_id or None,
        )
        try:
            with self.db.write() as s:
                if s.scalar(select(AlertRule.id).where(AlertRule.project_id == project_id, AlertRule.name == name)):
                    raise Conflict(f"alert rule {name!r} already exists")
                s.add(row)
        except SQLIntegrityError:
            raise Conflict(f"alert rule {name!r} already exists") from None
        return {**self._describe(row), "secret": secret}

    def list_all(self) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.scalars(
                select(AlertRule).where(AlertRule.project_id == self.projects.current_id()).order_by(AlertRule.name)
            )
            return [self._describe(row) for row in rows]

    def get(self, name: str) -> dict[str, Any]:
        with self.db.read() as s:
            return self._describe(self._row(s, name))

    def update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a rule's condition, webhook or switch. A disabled rule is inactive: it neither fires nor
        resolves until it is enabled again."""
        with self.db.read() as s:
            current_row = self._row(s, name)
        condition = check_condition(
            changes.get("metric", current_row.metric),
            changes.get("op", current_row.op),
            changes.get("threshold", current_row.threshold),
            changes.get("for_seconds", current_row.for_seconds),
        )
        url = changes.get("webhook_url", current_row.webhook_url)
        if "webhook_url" in changes and url is not None:
            self.policy.resolve(url)
        with self.db.write() as s:
            row = self._row(s, name)
            row.metric, row.op = condition.metric, condition.op
            row.threshold, row.for_seconds = condition.threshold, condition.for_seconds
            row.webhook_url = url
            if "enabled" in changes:
                row.enabled = bool(changes["enabled"])
                if not row.enabled:
                    row.state, row.active_since, row.fired_at = "inactive", None, None
            if changes.keys() & {"metric", "op", "threshold", "for_seconds"} and row.state == "pending":
                row.state, row.active_since = "inactive", None  # a new condition starts its duration afresh
            if not row.enabled:
                with self._lock:
                    self._watched.pop(row.id, None)
        return self.get(name)

    def delete(self, name: str) -> None:
        with self.db.write() as s:
            row = self._row(s, name)
            s.delete(row)
        with self._lock:
            self._watched.pop(row.id, None)

    def history(self, rule: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Fire and resolve events of the caller's project, newest first, each with its delivery attempts."""
        if not 1 <= limit <= MAX_HISTORY:
            raise InvalidInput(f"limit must be between 1 and {MAX_HISTORY}")
        project_id = self.projects.current_id()
        query = select(AlertEvent).where(AlertEvent.project_id == project_id)
        with self.db.read() as s:
            if rule is not None:
                check_name(rule, "alert rule name")
                known = s.scalar(
                    select(func.count()).where(AlertEvent.project_id == project_id, AlertEvent.rule_name == rule)
                )
                if (
                    not known
                    and s.scalar(select(AlertRule.id).where(AlertRule.project_id == project_id, AlertRule.name == rule))
                    is None
                ):
                    raise NotFound(f"no alert rule {rule!r}")
                query = query.where(AlertEvent.rule_name == rule)
            events = list(s.scalars(query.order_by(AlertEvent.id.desc()).limit(limit)))
            attempts: dict[int, list[dict[str, Any]]] = {e.id: [] for e in events}
            if events:
                for d in s.scalars(
                    select(AlertDelivery).where(AlertDelivery.event_id.in_(attempts)).order_by(AlertDelivery.id)
                ):
                    attempts[d.event_id].append(
                        {"attempt": d.attempt, "at": _iso(d.at), "status_code": d.status_code, "error": d.error}
                    )
            return [
                {
                    "id": e.id,
                    "rule": e.rule_name,
                    "at": _iso(e.at),
                    "status": e.kind,
                    e.target_kind: e.target,
                    "condition": e.condition,
                    "value": e.value,
                    "delivery": e.delivery,
                    "attempts": attempts[e.id],
                }
                for e in events
            ]

    def _describe(self, row: AlertRule) -> dict[str, Any]:
        with self._lock:
            watched = self._watched.get(row.id)
        return {
            "name": row.name,
            "target_kind": row.target_kind,
            row.target_kind: row.target,
            "target": row.target,
            "metric": row.metric,
            "op": row.op,
            "threshold": row.threshold,
            "for_seconds": row.for_seconds,
            "condition": _condition(row).describe(),
            "webhook_url": row.webhook_url,
            "enabled": row.enabled,
            "state": row.state,
            "active_since": _iso(row.active_since),
            "fired_at": _iso(row.fired_at),
            "value": watched.value if watched is not None else None,
            "created_at": _iso(row.created_at),
        }

    # -- evaluation -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._requeue_pending()
        self.sender.start()
        if self._thread is None and self.source is not None:
            self._thread = threading.Thread(target=self._loop, name="stratus-alerts", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.sender.close()

    def interval_closed(self, end: float) -> None:
        """The metrics history made the interval ending at ``end`` readable (its thread calls this): evaluate."""
        self._closed.set()

    def _loop(self) -> None:
        last = -math.inf
        while not self._stop.is_set():
            # Woken right after each interval the history closes; the timeout only matters when no history
            # runs (STRATUS_METRICS_HISTORY off), and then rules are evaluated on the timer alone.
            woken = self._closed.wait(timeout=self.interval_s + self.min_window_s)
            self._closed.clear()
            if self._stop.is_set():
                return
            now = self._clock()
            if woken and now - last < self.interval_s - _SLACK_S:
                continue  # not due yet: a later close will be
            if not self.in_control():
                continue
            try:
                self.evaluate(now, window_s=max(self.min_window_s, min(now - last, self.interval_s)))
            except Exception:  # one bad evaluation must not end alerting for the server's lifetime
                log.exception("alert evaluation failed")
            last = now

    def evaluate(self, now: float | None = None, window_s: float | None = None) -> list[tuple[str, str, Transition]]:
        """Step every enabled rule once, each judging its metric over the last ``window_s`` seconds (default:
        one evaluation interval); returns (project, rule, transition) for each rule that fired or resolved."""
        if self.source is None:
            return []
        now = self._clock() if now is None else now
        with self.db.read() as s:
            rules = list(
                s.execute(
                    select(AlertRule, Project.name)
                    .join(Project, Project.id == AlertRule.project_id)
                    .where(AlertRule.enabled)
                )
            )
        window = window_s if window_s is not None else max(self.min_window_s, self.interval_s)
        watched: dict[str, _Watched] = {}
        changed: list[tuple[str, str, Transition]] = []
        for row, project in rules:
            try:
                value = self.source(project, row.target_kind, row.target, row.metric, window, now)
            except Exception:
                log.exception(
                    "reading %s of %s %r for alert rule %r", row.metric, row.target_kind, row.target, row.name
                )
                value = None
            before = AlertState(row.state, _seconds(row.active_since), _seconds(row.fired_at))  # type: ignore[arg-type]
            after, transition = step(_condition(row), before, value, now)
            if after != before:
                self._store_state(row.id, after)
            watched[row.id] = _Watched(project, row.name, row.target_kind, row.target, row.metric, after.state, value)
            if transition is not None:
                self._announce(row, project, transition, value, now)
                changed.append((project, row.name, transition))
        with self._lock:
            self._watched = watched
        return changed

    def _store_state(self, rule_id: str, state: AlertState) -> None:
        with self.db.write() as s:
            row = s.get(AlertRule, rule_id)
            if row is None:  # deleted while it was evaluated
                return
            row.state = state.state
            row.active_since = None if state.active_since is None else _moment(state.active_since)
            row.fired_at = None if state.fired_at is None else _moment(state.fired_at)

    def _announce(self, row: AlertRule, project: str, transition: Transition, value: float | None, now: float) -> None:
        condition = _condition(row).describe()
        with self.db.write() as s:
            event = AlertEvent(
                project_id=row.project_id,
                rule_id=row.id,
                rule_name=row.name,
                at=_moment(now),
                kind=transition,
                target_kind=row.target_kind,
                target=row.target,
                condition=condition,
                value=value,
                delivery="pending" if row.webhook_url else "none",
            )
            s.add(event)
            s.flush()  # gives the event its id
            # Retention, enforced by the writer (as for drift reports): the table never grows past its age
            # limit; the deliveries go with their events (ON DELETE CASCADE).
            s.execute(delete(AlertEvent).where(AlertEvent.at < _moment(now) - self.history_limit))
        detail = f"{row.target_kind} {row.target}: {condition}; value {value if value is None else round(value, 6)}"
        self.audit.record(Caller(project=project), f"alert {transition}", f"alert/{row.name}", "", 200, detail)
        log.warning("alert %s/%s %s: %s", project, row.name, transition, detail)
        if row.webhook_url:
            fired_at = _iso(row.fired_at) if transition == "resolved" else _iso(_moment(now))
            self._deliver(event, row, project, fired_at, attempts_made=0)

    def _deliver(
        self, event: AlertEvent, rule: AlertRule, project: str, fired_at: str | None, attempts_made: int
    ) -> None:
        try:
            secret = open_secret(self.keyring, rule.id, rule.secret)
        except StratusError as exc:  # a master key this server does not have: say so in the delivery log
            self._give_up(event.id, attempts_made + 1, f"the rule's secret does not open: {exc.message}")
            return
        assert rule.webhook_url is not None
        body = _body(event, rule, project, fired_at)
        self.sender.submit(Delivery(event.id, rule.webhook_url, secret, body, attempt=attempts_made))

    def _give_up(self, event_id: int, attempt: int, error: str) -> None:
        with self.db.write() as s:
            s.add(AlertDelivery(event_id=event_id, attempt=attempt, status_code=None, error=error[:500]))
            event = s.get(AlertEvent, event_id)
            if event is not None:
                event.delivery = "failed"
        log.warning("alert event %d: webhook not delivered: %s", event_id, error)

    def _requeue_pending(self) -> None:
        """Deliveries the last run did not finish (a stop between attempts): queued again, attempts counted on."""
        with self.db.read() as s:
            pending = [
                (
                    event,
                    s.get(AlertRule, event.rule_id),
                    s.scalar(select(Project.name).where(Project.id == event.project_id)),
                )
                for event in s.scalars(select(AlertEvent).where(AlertEvent.delivery == "pending"))
            ]
            done = {
                event.id: s.scalar(select(func.count()).where(AlertDelivery.event_id == event.id)) or 0
                for event, _, _ in pending
            }
        for event, rule, project in pending:
            if rule is None or not rule.webhook_url:
                self._give_up(event.id, done[event.id] + 1, "the rule or its webhook was removed before delivery")
                continue
            self._deliver(event, rule, project or "", None, attempts_made=done[event.id])

    # -- the ALERTS gauge ---------------------------------------------------------------------------------

    def collector(self) -> Collector:
        return _AlertsCollector(self)

    def watched(self) -> list[_Watched]:
        with self._lock:
            return list(self._watched.values())


def _body(event: AlertEvent, rule: AlertRule, project: str, fired_at: str | None) -> bytes:
    """The webhook's JSON: what happened, to what, and the value that decided it."""
    body: dict[str, Any] = {
        "event_id": event.id,
        "status": event.kind,
        "rule": event.rule_name,
        "project": project,
        "target_kind": event.target_kind,
        event.target_kind: event.target,
        "metric": rule.metric,
        "condition": event.condition,
        "threshold": rule.threshold,
        "value": event.value,
        "at": _iso(event.at),
    }
    if fired_at is not None:
        body["fired_at"] = fired_at
    return orjson.dumps(body)


class _AlertsCollector(Collector):
    def __init__(self, service: AlertService) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "stratus_alerts",
            "1 for each alert rule that is pending or firing (Prometheus's ALERTS series).",
            labels=["alertname", "alertstate", "target_kind", "target", "metric", "project"],
        )
        for w in self._service.watched():
            if w.state in ("pending", "firing"):
                family.add_metric([w.name, w.state, w.target_kind, w.target, w.metric, w.project], 1.0)
        yield family
