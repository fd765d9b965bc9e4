"""The notifier's durable state: one SQLite database (WAL) of its own, beside the alert engine's.

Tables (docs/alerts.md, "Notifications" has the columns):

- ``notify_cursor``: the id of the last transition fanned out.
- ``notify_alerts``: what the notifier knows of each alert (state, when first sent, escalation step reached) for
  escalation, repeats and the retained MQTT site state.
- ``notify_deliveries``: one row per (transition, reason, step, channel, recipient) -- UNIQUE -- with its
  idempotency key and status: pending → queued (packed into a message) → sent | dead; or held_silence (a silence
  held it: recorded, never sent), held_cap (the hourly cap held it) → summarised (sent in a summary).
- ``notify_messages``: what goes over the wire, with its members fixed when it is made: idempotency key,
  attempts, next attempt time, last error; status pending → sent | dead (a dead letter, with its last error).
- ``notify_attempts``: every attempt with its outcome and error, so retries are visible.
- ``notify_escalations``: one timer per (alert, escalation step): pending → fired | cancelled.

Why a file of its own: the engine's database stays the engine's (its write lock is never held by a slow
delivery), and each step here is one transaction of this file. Transitions are read from the engine's file and
never changed; they are immutable and their ids only grow (SQLite commits one writer at a time, so a smaller id
can never become visible after a larger one), which is what makes a cursor sufficient.

Invariant the tests hold this to: every transition at or below the cursor has its delivery rows; every delivery
is in exactly one of the statuses above; a message's member set never changes after it is made.
"""

from __future__ import annotations

import enum
import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notify.payload import MessageKind, Reason, alert_entry, iso, message_document, transition_from_entry
from notify.recipients import Address
from notify.routing import Router
from pilotwatch.alerting import Transition, TransitionKind
from pilotwatch.manifest import AlertChannel

HOUR_MS = 3_600_000

DDL = """
CREATE TABLE IF NOT EXISTS notify_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_transition_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS notify_alerts (
    alert_id TEXT PRIMARY KEY,
    city TEXT NOT NULL,
    kind TEXT NOT NULL,
    site TEXT NOT NULL,
    state TEXT NOT NULL,
    silenced INTEGER NOT NULL,
    fired_transition_id INTEGER,
    fired_seen_ms INTEGER,
    last_transition_id INTEGER NOT NULL,
    escalated_step INTEGER NOT NULL DEFAULT 0,
    repeats INTEGER NOT NULL DEFAULT 0,
    entry TEXT NOT NULL,
    fired_entry TEXT
);
CREATE TABLE IF NOT EXISTS notify_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    sent_ms INTEGER,
    document TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS notify_messages_due ON notify_messages (status, next_attempt_ms);
CREATE INDEX IF NOT EXISTS notify_messages_recipient ON notify_messages (channel, recipient, created_ms);
CREATE TABLE IF NOT EXISTS notify_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transition_id INTEGER NOT NULL,
    alert_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    step INTEGER NOT NULL,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    group_key TEXT NOT NULL,
    status TEXT NOT NULL,
    message_id INTEGER REFERENCES notify_messages (id),
    created_ms INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    entry TEXT NOT NULL,
    UNIQUE (transition_id, reason, step, channel, recipient)
);
CREATE INDEX IF NOT EXISTS notify_deliveries_pending ON notify_deliveries (status, channel, recipient, group_key);
CREATE INDEX IF NOT EXISTS notify_deliveries_alert ON notify_deliveries (alert_id, id);
CREATE TABLE IF NOT EXISTS notify_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES notify_messages (id),
    attempt INTEGER NOT NULL,
    t_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    retry_after_s REAL
);
CREATE INDEX IF NOT EXISTS notify_attempts_message ON notify_attempts (message_id, attempt);
CREATE TABLE IF NOT EXISTS notify_escalations (
    alert_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    transition_id INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (alert_id, step)
);
"""


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    SENT = "sent"
    DEAD = "dead"
    HELD_SILENCE = "held_silence"
    HELD_CAP = "held_cap"
    SUMMARISED = "summarised"


class MessageStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class Outcome(enum.StrEnum):
    """How an attempt ended. RETRY: worth trying again (network, 5xx, 429). REJECTED: it never will (4xx)."""

    SENT = "sent"
    RETRY = "retry"
    REJECTED = "rejected"


class AlertState(enum.StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    ENDED = "ended"


class TimerStatus(enum.StrEnum):
    PENDING = "pending"
    FIRED = "fired"
    CANCELLED = "cancelled"


_STATE_AFTER: dict[TransitionKind, AlertState | None] = {
    TransitionKind.FIRED: AlertState.FIRING,
    TransitionKind.ACKNOWLEDGED: AlertState.ACKNOWLEDGED,
    TransitionKind.RESOLVED: AlertState.ENDED,
    TransitionKind.CLOSED: AlertState.ENDED,
    TransitionKind.ASSIGNED: None,
    TransitionKind.COMMENTED: None,
}


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    id: int
    channel: AlertChannel
    recipient: str
    idempotency_key: str
    attempts: int
    document: dict[str, Any]
    extra: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    error: str = ""
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One delivery of an alert as ``GET /alerts/{id}`` lists it."""

    transition_id: int
    reason: str
    step: int
    channel: str
    recipient: str
    status: str
    attempts: int
    last_error: str
    sent_ms: int | None
    idempotency_key: str


LinkBuilder = Callable[[Transition, Address], Mapping[str, str]]
Backoff = Callable[[int, float | None], float]
Extra = Callable[[str, str, list[dict[str, Any]]], dict[str, Any]]
"""What a channel needs beside the document (the MQTT channel: the open alerts of each site)."""


def _key(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives `kill -9` of the process (it is in the OS's cache); only a power cut
    # can lose the last commits, and every step here is re-derivable from the outbox and idempotent, so such a
    # loss means re-sending with the same idempotency keys, never a lost or different notification.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class NotifyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        self.conn.executescript(DDL)
        self.conn.execute("INSERT OR IGNORE INTO notify_cursor (id, last_transition_id) VALUES (1, 0)")

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- fan-out --------------------------------------------------------------------------------------------
    def cursor(self) -> int:
        return int(self.conn.execute("SELECT last_transition_id FROM notify_cursor WHERE id = 1").fetchone()[0])

    def fan_out(
        self, transitions: Iterable[Transition], router: Router, links: LinkBuilder, now_ms: int, group_window_ms: int
    ) -> int:
        """Record the deliveries of ``transitions`` (oldest first) and advance the cursor, in one transaction."""
        count = 0
        with self.transaction() as c:
            last = None
            for t in transitions:
                assert t.id is not None
                self._apply(c, t, router=router, links=links, now_ms=now_ms, window_ms=group_window_ms)
                last = t.id
                count += 1
            if last is not None:
                c.execute("UPDATE notify_cursor SET last_transition_id = ? WHERE id = 1", (last,))
        return count

    def _apply(
        self, c: sqlite3.Connection, t: Transition, *, router: Router, links: LinkBuilder, now_ms: int, window_ms: int
    ) -> None:
        assert t.id is not None
        row = c.execute("SELECT escalated_step FROM notify_alerts WHERE alert_id = ?", (t.alert_id,)).fetchone()
        escalated = int(row[0]) if row is not None else 0
        state = _STATE_AFTER[t.transition]
        entry = json.dumps(alert_entry(t, Reason.TRANSITION, 0, {}), sort_keys=True)
        if row is None:
            c.execute(
                "INSERT INTO notify_alerts (alert_id, city, kind, site, state, silenced, last_transition_id, entry)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    t.alert_id,
                    t.city,
                    t.kind.value,
                    t.site,
                    (state or AlertState.FIRING).value,
                    int(t.silenced),
                    t.id,
                    entry,
                ),
            )
        c.execute(
            "UPDATE notify_alerts SET silenced = ?, last_transition_id = ?, entry = ?,"
            " state = COALESCE(?, state) WHERE alert_id = ?",
            (int(t.silenced), t.id, entry, state.value if state else None, t.alert_id),
        )
        # Later transitions of an escalated alert also reach those it was escalated to: they were told it fired.
        addresses = router.addresses(t.city, t.kind)
        for step in range(1, escalated + 1):
            addresses |= router.escalation_addresses(t.city, t.kind, step)
        status = DeliveryStatus.HELD_SILENCE if t.silenced else DeliveryStatus.PENDING
        self._insert_deliveries(
            c,
            t,
            reason=Reason.TRANSITION,
            step=0,
            addresses=addresses,
            links=links,
            status=status,
            now_ms=now_ms,
            due_ms=now_ms + window_ms,
        )
        if t.transition is TransitionKind.FIRED:
            c.execute(
                "UPDATE notify_alerts SET fired_transition_id = ?, fired_seen_ms = ?, repeats = 0, fired_entry = ?"
                " WHERE alert_id = ?",
                (t.id, now_ms, entry, t.alert_id),
            )
            if not t.silenced:
                for i, step_policy in enumerate(router.escalation_steps(t.city, t.kind), start=1):
                    c.execute(
                        "INSERT OR IGNORE INTO notify_escalations (alert_id, step, transition_id, due_ms, status)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (t.alert_id, i, t.id, now_ms + int(step_policy.after_s * 1000), TimerStatus.PENDING.value),
                    )
        elif state in (AlertState.ACKNOWLEDGED, AlertState.ENDED):
            c.execute(
                "UPDATE notify_escalations SET status = ? WHERE alert_id = ? AND status = ?",
                (TimerStatus.CANCELLED.value, t.alert_id, TimerStatus.PENDING.value),
            )

    @staticmethod
    def _insert_deliveries(
        c: sqlite3.Connection,
        t: Transition,
        *,
        reason: Reason,
        step: int,
        addresses: Iterable[Address],
        links: LinkBuilder,
        status: DeliveryStatus,
        now_ms: int,
        due_ms: int,
    ) -> int:
        assert t.id is not None
        group = f"{t.city}|{t.kind.value}|{t.transition.value}|{reason.value}|{step}"
        n = 0
        for address in sorted(addresses):
            entry = alert_entry(t, reason, step, links(t, address))
            key = "d-" + _key(t.id, reason.value, step, address.channel.value, address.recipient)
            cur = c.execute(
                "INSERT OR IGNORE INTO notify_deliveries (transition_id, alert_id, reason, step, channel, recipient,"
                " idempotency_key, group_key, status, created_ms, due_ms, entry)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    t.id,
                    t.alert_id,
                    reason.value,
                    step,
                    address.channel.value,
                    address.recipient,
                    key,
                    group,
                    status.value,
                    now_ms,
                    due_ms,
                    json.dumps(entry, sort_keys=True),
                ),
            )
            n += cur.rowcount
        return n

    # -- timers: escalation and repeat ------------------------------------------------------------------------
    def fire_timers(
        self, router: Router, links: LinkBuilder, now_ms: int, repeat_interval_ms: int, group_window_ms: int
    ) -> int:
        """Escalate what nobody acknowledged in time and remind of what still fires; return deliveries made."""
        made = 0
        with self.transaction() as c:
            due = c.execute(
                "SELECT e.alert_id, e.step, e.transition_id, a.state, a.entry FROM notify_escalations e"
                " JOIN notify_alerts a ON a.alert_id = e.alert_id WHERE e.status = ? AND e.due_ms <= ?"
                " ORDER BY e.due_ms",
                (TimerStatus.PENDING.value, now_ms),
            ).fetchall()
            for alert_id, step, _transition_id, state, _entry in due:
                if state != AlertState.FIRING:
                    c.execute(
                        "UPDATE notify_escalations SET status = ? WHERE alert_id = ? AND step = ?",
                        (TimerStatus.CANCELLED.value, alert_id, step),
                    )
                    continue
                fired = self._fired_transition(c, alert_id)
                addresses = router.escalation_addresses(fired.city, fired.kind, int(step))
                made += self._insert_deliveries(
                    c,
                    fired,
                    reason=Reason.ESCALATION,
                    step=int(step),
                    addresses=addresses,
                    links=links,
                    status=DeliveryStatus.PENDING,
                    now_ms=now_ms,
                    due_ms=now_ms + group_window_ms,
                )
                c.execute(
                    "UPDATE notify_escalations SET status = ? WHERE alert_id = ? AND step = ?",
                    (TimerStatus.FIRED.value, alert_id, step),
                )
                c.execute(
                    "UPDATE notify_alerts SET escalated_step = MAX(escalated_step, ?) WHERE alert_id = ?",
                    (step, alert_id),
                )
            repeats = c.execute(
                "SELECT alert_id, fired_transition_id, repeats, escalated_step FROM notify_alerts"
                " WHERE state = ? AND silenced = 0 AND fired_transition_id IS NOT NULL"
                " AND fired_seen_ms + (repeats + 1) * ? <= ?",
                (AlertState.FIRING.value, repeat_interval_ms, now_ms),
            ).fetchall()
            for alert_id, _transition_id, n, escalated in repeats:
                fired = self._fired_transition(c, alert_id)
                addresses = router.addresses(fired.city, fired.kind)
                for step in range(1, int(escalated) + 1):
                    addresses |= router.escalation_addresses(fired.city, fired.kind, step)
                made += self._insert_deliveries(
                    c,
                    fired,
                    reason=Reason.REPEAT,
                    step=int(n) + 1,
                    addresses=addresses,
                    links=links,
                    status=DeliveryStatus.PENDING,
                    now_ms=now_ms,
                    due_ms=now_ms + group_window_ms,
                )
                c.execute("UPDATE notify_alerts SET repeats = ? WHERE alert_id = ?", (int(n) + 1, alert_id))
        return made

    @staticmethod
    def _fired_transition(c: sqlite3.Connection, alert_id: str) -> Transition:
        row = c.execute("SELECT fired_entry FROM notify_alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        return transition_from_entry(json.loads(row[0]))

    # -- packing deliveries into messages -------------------------------------------------------------------
    def claim(self, now_ms: int, cap_per_hour: int, max_alerts: int, extra: Extra) -> int:
        """Pack due pending deliveries into messages (one per channel, recipient and group); return messages made.

        A group is due when its oldest pending delivery is due, and then takes every pending delivery of the
        group: the first alert waits one group window, later ones ride along.
        """
        made = 0
        with self.transaction() as c:
            groups = c.execute(
                "SELECT channel, recipient, group_key FROM notify_deliveries WHERE status = ?"
                " GROUP BY channel, recipient, group_key HAVING MIN(due_ms) <= ? ORDER BY MIN(id)",
                (DeliveryStatus.PENDING.value, now_ms),
            ).fetchall()
            sent: dict[tuple[str, str], int] = {}
            for channel, recipient, group in groups:
                # All pending rows of the group at once, packed in order: one query per group, not per message.
                rows = c.execute(
                    "SELECT id, idempotency_key, entry FROM notify_deliveries WHERE status = ? AND channel = ?"
                    " AND recipient = ? AND group_key = ? ORDER BY id",
                    (DeliveryStatus.PENDING.value, channel, recipient, group),
                ).fetchall()
                if (channel, recipient) not in sent:
                    sent[channel, recipient] = self._sent_last_hour(c, channel, recipient, now_ms)
                for start in range(0, len(rows), max_alerts):
                    chunk = rows[start : start + max_alerts]
                    ids = [int(r[0]) for r in chunk]
                    if sent[channel, recipient] >= cap_per_hour:
                        self._set_status(c, [int(r[0]) for r in rows[start:]], DeliveryStatus.HELD_CAP, None)
                        break
                    entries = [json.loads(r[2]) for r in chunk]
                    key = "pw-" + _key(*sorted(str(r[1]) for r in chunk))
                    self._make_message(
                        c,
                        channel=channel,
                        recipient=recipient,
                        kind=MessageKind.ALERTS,
                        key=key,
                        entries=entries,
                        held_back=None,
                        now_ms=now_ms,
                        extra=extra(channel, recipient, entries),
                        delivery_ids=ids,
                        status=DeliveryStatus.QUEUED,
                    )
                    sent[channel, recipient] += 1
                    made += 1
            made += self._summaries(c, now_ms, cap_per_hour, max_alerts, extra)
        return made

    def _summaries(self, c: sqlite3.Connection, now_ms: int, cap: int, max_alerts: int, extra: Extra) -> int:
        made = 0
        held = c.execute(
            "SELECT DISTINCT channel, recipient FROM notify_deliveries WHERE status = ?",
            (DeliveryStatus.HELD_CAP.value,),
        ).fetchall()
        for channel, recipient in held:
            if self._sent_last_hour(c, channel, recipient, now_ms) >= cap:
                continue
            rows = c.execute(
                "SELECT id, idempotency_key, entry, created_ms FROM notify_deliveries WHERE status = ?"
                " AND channel = ? AND recipient = ? ORDER BY id",
                (DeliveryStatus.HELD_CAP.value, channel, recipient),
            ).fetchall()
            entries = [json.loads(r[2]) for r in rows]
            by = Counter(f"{e['kind']} {e['transition']}" for e in entries)
            held_back = {"count": len(rows), "since": iso(min(int(r[3]) for r in rows)), "by": dict(by)}
            key = "pw-" + _key("summary", *sorted(str(r[1]) for r in rows))
            shown = entries[:max_alerts]
            self._make_message(
                c,
                channel=channel,
                recipient=recipient,
                kind=MessageKind.SUMMARY,
                key=key,
                entries=shown,
                held_back=held_back,
                now_ms=now_ms,
                extra=extra(channel, recipient, shown),
                delivery_ids=[int(r[0]) for r in rows],
                status=DeliveryStatus.SUMMARISED,
            )
            made += 1
        return made

    @staticmethod
    def _sent_last_hour(c: sqlite3.Connection, channel: str, recipient: str, now_ms: int) -> int:
        return int(
            c.execute(
                "SELECT COUNT(*) FROM notify_messages WHERE channel = ? AND recipient = ? AND kind != ?"
                " AND created_ms > ?",
                (channel, recipient, MessageKind.TEST.value, now_ms - HOUR_MS),
            ).fetchone()[0]
        )

    @staticmethod
    def _set_status(c: sqlite3.Connection, ids: list[int], status: DeliveryStatus, message_id: int | None) -> None:
        c.executemany(
            "UPDATE notify_deliveries SET status = ?, message_id = COALESCE(?, message_id) WHERE id = ?",
            [(status.value, message_id, i) for i in ids],
        )

    def _make_message(
        self,
        c: sqlite3.Connection,
        *,
        channel: str,
        recipient: str,
        kind: MessageKind,
        key: str,
        entries: list[dict[str, Any]],
        held_back: Mapping[str, Any] | None,
        now_ms: int,
        extra: Mapping[str, Any],
        delivery_ids: list[int],
        status: DeliveryStatus,
    ) -> int:
        doc = message_document(
            key=key,
            kind=kind,
            channel=channel,
            recipient=recipient,
            created_ms=now_ms,
            alerts=entries,
            held_back=held_back,
        )
        cur = c.execute(
            "INSERT INTO notify_messages (channel, recipient, kind, idempotency_key, status, next_attempt_ms,"
            " created_ms, document, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                channel,
                recipient,
                kind.value,
                key,
                MessageStatus.PENDING.value,
                now_ms,
                now_ms,
                json.dumps(doc, sort_keys=True),
                json.dumps(extra, sort_keys=True),
            ),
        )
        message_id = int(cur.lastrowid or 0)
        self._set_status(c, delivery_ids, status, message_id)
        return message_id

    def add_test_message(
        self, channel: AlertChannel, recipient: str, doc_alerts: list[dict[str, Any]], now_ms: int, nonce: str
    ) -> int:
        with self.transaction() as c:
            key = "pw-test-" + _key(channel.value, recipient, nonce)
            return self._make_message(
                c,
                channel=channel.value,
                recipient=recipient,
                kind=MessageKind.TEST,
                key=key,
                entries=doc_alerts,
                held_back=None,
                now_ms=now_ms,
                extra={},
                delivery_ids=[],
                status=DeliveryStatus.QUEUED,
            )

    # -- sending --------------------------------------------------------------------------------------------
    def due_messages(self, now_ms: int, limit: int, ids: Iterable[int] | None = None) -> list[OutgoingMessage]:
        sql = (
            "SELECT id, channel, recipient, idempotency_key, attempts, document, extra FROM notify_messages"
            " WHERE status = ? AND next_attempt_ms <= ?"
        )
        params: list[Any] = [MessageStatus.PENDING.value, now_ms]
        if ids is not None:
            wanted = list(ids)
            sql += f" AND id IN ({','.join('?' * len(wanted))})"
            params += wanted
        rows = self.conn.execute(sql + " ORDER BY next_attempt_ms, id LIMIT ?", (*params, limit)).fetchall()
        return [
            OutgoingMessage(
                int(r[0]), AlertChannel(r[1]), str(r[2]), str(r[3]), int(r[4]), json.loads(r[5]), json.loads(r[6])
            )
            for r in rows
        ]

    def record(
        self, results: Iterable[tuple[OutgoingMessage, SendResult]], now_ms: int, max_attempts: int, backoff: Backoff
    ) -> None:
        """Record attempts in one transaction: sent, scheduled again, or dead-lettered with the last error."""
        with self.transaction() as c:
            for message, result in results:
                attempt = message.attempts + 1
                outcome = result.outcome
                dead = outcome is Outcome.REJECTED or (outcome is Outcome.RETRY and attempt >= max_attempts)
                c.execute(
                    "INSERT INTO notify_attempts (message_id, attempt, t_ms, outcome, error, retry_after_s)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (message.id, attempt, now_ms, outcome.value, result.error[:2000], result.retry_after_s),
                )
                if outcome is Outcome.SENT:
                    c.execute(
                        "UPDATE notify_messages SET status = ?, attempts = ?, sent_ms = ? WHERE id = ?",
                        (MessageStatus.SENT.value, attempt, now_ms, message.id),
                    )
                    c.execute(
                        "UPDATE notify_deliveries SET status = ? WHERE message_id = ? AND status = ?",
                        (DeliveryStatus.SENT.value, message.id, DeliveryStatus.QUEUED.value),
                    )
                elif dead:
                    c.execute(
                        "UPDATE notify_messages SET status = ?, attempts = ?, last_error = ? WHERE id = ?",
                        (MessageStatus.DEAD.value, attempt, result.error[:2000], message.id),
                    )
                    c.execute(
                        "UPDATE notify_deliveries SET status = ? WHERE message_id = ?",
                        (DeliveryStatus.DEAD.value, message.id),
                    )
                else:
                    delay_ms = int(backoff(attempt, result.retry_after_s) * 1000)
                    c.execute(
                        "UPDATE notify_messages SET attempts = ?, next_attempt_ms = ?, last_error = ? WHERE id = ?",
                        (attempt, now_ms + delay_ms, result.error[:2000], message.id),
                    )

    def requeue_dead(self, message_id: int, now_ms: int) -> bool:
        """Send a dead letter again (after fixing its cause); its deliveries go back to queued."""
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE notify_messages SET status = ?, next_attempt_ms = ?, attempts = 0 WHERE id = ? AND status = ?",
                (MessageStatus.PENDING.value, now_ms, message_id, MessageStatus.DEAD.value),
            )
            if cur.rowcount:
                c.execute(
                    "UPDATE notify_deliveries SET status = ? WHERE message_id = ?",
                    (DeliveryStatus.QUEUED.value, message_id),
                )
            return cur.rowcount == 1

    # -- reading --------------------------------------------------------------------------------------------
    def open_alerts_at(self, sites: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for site in sorted(set(sites)):
            rows = self.conn.execute(
                "SELECT entry, state FROM notify_alerts WHERE site = ? AND state != ? ORDER BY alert_id",
                (site, AlertState.ENDED.value),
            ).fetchall()
            out[site] = [dict(json.loads(r[0]), state=str(r[1])) for r in rows]
        return out

    def next_due_ms(self) -> int | None:
        """When something is next due (message, group or timer), so the service can sleep until then."""
        row = self.conn.execute(
            "SELECT MIN(t) FROM (SELECT MIN(next_attempt_ms) AS t FROM notify_messages WHERE status = ?"
            " UNION ALL SELECT MIN(due_ms) FROM notify_deliveries WHERE status = ?"
            " UNION ALL SELECT MIN(due_ms) FROM notify_escalations WHERE status = ?)",
            (MessageStatus.PENDING.value, DeliveryStatus.PENDING.value, TimerStatus.PENDING.value),
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def counts(self) -> dict[str, Counter[str]]:
        return message_counts(self.conn)


def deliveries_for_alert(conn: sqlite3.Connection, alert_id: str) -> list[DeliveryView]:
    """Public: the deliveries of one alert, oldest first, for ``GET /alerts/{id}`` (``conn`` on the notify db)."""
    rows = conn.execute(
        "SELECT d.transition_id, d.reason, d.step, d.channel, d.recipient, d.status, COALESCE(m.attempts, 0),"
        " COALESCE(m.last_error, ''), m.sent_ms, COALESCE(m.idempotency_key, d.idempotency_key)"
        " FROM notify_deliveries d LEFT JOIN notify_messages m ON m.id = d.message_id"
        " WHERE d.alert_id = ? ORDER BY d.id",
        (alert_id,),
    ).fetchall()
    return [
        DeliveryView(
            int(r[0]),
            str(r[1]),
            int(r[2]),
            str(r[3]),
            str(r[4]),
            str(r[5]),
            int(r[6]),
            str(r[7]),
            None if r[8] is None else int(r[8]),
            str(r[9]),
        )
        for r in rows
    ]


def attempts_of(conn: sqlite3.Connection, message_id: int) -> list[tuple[int, str, str, float | None]]:
    """(attempt, outcome, error, retry_after_s) of one message, oldest first."""
    return [
        (int(r[0]), str(r[1]), str(r[2]), r[3])
        for r in conn.execute(
            "SELECT attempt, outcome, error, retry_after_s FROM notify_attempts WHERE message_id = ? ORDER BY attempt",
            (message_id,),
        )
    ]


def message_counts(conn: sqlite3.Connection) -> dict[str, Counter[str]]:
    """Totals for /metrics, per channel: messages sent and dead, attempts retried and failed."""
    out: dict[str, Counter[str]] = {k: Counter() for k in ("sent", "dead", "retried", "failed", "held")}
    for channel, status, n in conn.execute(
        "SELECT channel, status, COUNT(*) FROM notify_messages GROUP BY channel, status"
    ):
        if status == MessageStatus.SENT:
            out["sent"][channel] += n
        elif status == MessageStatus.DEAD:
            out["dead"][channel] += n
    for channel, outcome, n in conn.execute(
        "SELECT m.channel, a.outcome, COUNT(*) FROM notify_attempts a JOIN notify_messages m"
        " ON m.id = a.message_id WHERE a.outcome != ? GROUP BY m.channel, a.outcome",
        (Outcome.SENT.value,),
    ):
        out["failed"][channel] += n
        if outcome == Outcome.RETRY:
            out["retried"][channel] += n
    for channel, status, n in conn.execute(
        "SELECT channel, status, COUNT(*) FROM notify_deliveries WHERE status IN (?, ?) GROUP BY channel, status",
        (DeliveryStatus.HELD_SILENCE.value, DeliveryStatus.HELD_CAP.value),
    ):
        out["held"][f"{channel}|{status}"] += n
    return out
