"""The alert store: one SQLite database in WAL mode holding alerts, their lifecycle, rule state and silences.

Tables (docs/alerts.md documents them for other services; only this module writes them):

- ``alerts``: one row per (rule, series, episode) — ``UNIQUE (rule, series, episode_ms)``, and the id is a hash
  of the same three, so deciding the same episode twice (a replay, a restart that lost nothing) inserts nothing.
  ``status`` is the lifecycle a person works with (open → acknowledged → resolved | closed); ``firing`` is what
  the engine's state machine says now.
- ``alert_comments``: who said what on an alert, when.
- ``rule_state``: per (rule, series) the state machine's state (:class:`alerts.machine.State` as JSON).
- ``series_seen``: per device and sensor the newest sample time seen, and per device (``arrival:<series>``) when
  ingest last heard from it (silence is measured from these).
- ``silences``: maintenance windows per city/site/device (optionally one alert kind) with an end and a reason.
- ``alert_transitions``: the outbox of :mod:`pilotwatch.alerting`, appended in the same transaction as the
  change it reports.

Durability: every change of a pass (state, alerts, transitions) is one transaction (``BEGIN IMMEDIATE`` …
``COMMIT``) with ``synchronous=FULL``; a ``kill -9`` leaves either all of it or none, and the engine re-derives
the lost pass from InfluxDB. WAL lets the API read while the engine writes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.machine import State
from pilotwatch.alerting import Severity, Transition, TransitionKind, append_transition, create_transitions_table
from pilotwatch.manifest import AlertKind

SCHEMA_DDL = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    series TEXT NOT NULL,
    episode_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    city TEXT NOT NULL,
    site TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT '',
    sensor TEXT NOT NULL DEFAULT '',
    severity TEXT NOT NULL,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    firing INTEGER NOT NULL,
    fired_ms INTEGER NOT NULL,
    decided_ms INTEGER NOT NULL,
    resolved_ms INTEGER,
    ack_by TEXT,
    ack_ms INTEGER,
    assignee TEXT,
    silenced INTEGER NOT NULL DEFAULT 0,
    value REAL,
    body TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    influx_synced INTEGER NOT NULL DEFAULT 0,
    UNIQUE (rule, series, episode_ms)
);
CREATE INDEX IF NOT EXISTS alerts_city_time ON alerts (city, fired_ms);
CREATE INDEX IF NOT EXISTS alerts_unsynced ON alerts (influx_synced) WHERE influx_synced = 0;
CREATE TABLE IF NOT EXISTS alert_comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL REFERENCES alerts (alert_id),
    author TEXT NOT NULL,
    t_ms INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rule_state (
    rule TEXT NOT NULL,
    series TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (rule, series)
);
CREATE TABLE IF NOT EXISTS series_seen (
    series TEXT PRIMARY KEY,
    last_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    city TEXT NOT NULL,
    site TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
"""


class AlertStatus:
    """The lifecycle a person works with (stable strings: they reach the API and messages)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    CLOSED = "closed"
    ALL = (OPEN, ACKNOWLEDGED, RESOLVED, CLOSED)


def alert_id(rule: str, series: str, episode_ms: int) -> str:
    """Deterministic: the same episode of the same rule and series always has the same id."""
    return hashlib.sha256(f"{rule}\x1f{series}\x1f{episode_ms}".encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class NewAlert:
    rule: str
    series: str
    episode_ms: int
    kind: AlertKind
    city: str
    site: str
    device: str
    sensor: str
    severity: Severity
    title: str
    fired_ms: int
    decided_ms: int
    value: float | None
    body: Mapping[str, Any]

    @property
    def alert_id(self) -> str:
        return alert_id(self.rule, self.series, self.episode_ms)


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    city: str
    site: str
    device: str
    kind: str
    start_ms: int
    end_ms: int
    reason: str
    created_by: str
    created_ms: int

    def covers(self, city: str, site: str, device: str, kind: str, t_ms: int) -> bool:
        return (
            self.start_ms <= t_ms < self.end_ms
            and self.city == city
            and self.site in ("", site)
            and self.device in ("", device)
            and self.kind in ("", kind)
        )


ALERT_COLUMNS = (
    "alert_id, rule, series, episode_ms, kind, city, site, device, sensor, severity, title, status, firing, "
    "fired_ms, decided_ms, resolved_ms, ack_by, ack_ms, assignee, silenced, value, body, updated_ms"
)


def row_to_alert(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in row.keys()}  # noqa: SIM118  # sqlite3.Row has keys(), not iteration over keys
    out["body"] = json.loads(out["body"])
    out["firing"] = bool(out["firing"])
    out["silenced"] = bool(out["silenced"])
    return out


class AlertStore:
    """The SQLite store (module docstring). One connection per store object, safe across threads by a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(SCHEMA_DDL)
        create_transitions_table(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- engine state ------------------------------------------------------------------------------------------
    def load_states(self) -> dict[tuple[str, str], State]:
        with self._lock:
            rows = self._conn.execute("SELECT rule, series, state FROM rule_state").fetchall()
        return {(r["rule"], r["series"]): State.from_dict(json.loads(r["state"])) for r in rows}

    def load_seen(self) -> dict[str, int]:
        with self._lock:
            return {
                r["series"]: int(r["last_ms"]) for r in self._conn.execute("SELECT series, last_ms FROM series_seen")
            }

    @staticmethod
    def save_state(conn: sqlite3.Connection, rule: str, series: str, state: State) -> None:
        conn.execute(
            "INSERT INTO rule_state (rule, series, state) VALUES (?, ?, ?) "
            "ON CONFLICT (rule, series) DO UPDATE SET state = excluded.state",
            (rule, series, json.dumps(state.to_dict(), separators=(",", ":"))),
        )

    @staticmethod
    def save_seen(conn: sqlite3.Connection, series: str, last_ms: int) -> None:
        conn.execute(
            "INSERT INTO series_seen (series, last_ms) VALUES (?, ?) "
            "ON CONFLICT (series) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)",
            (series, last_ms),
        )

    def insert_fired(self, conn: sqlite3.Connection, alert: NewAlert, silenced: bool) -> bool:
        """Record a fired alert and its FIRED transition; False (nothing written) if the episode is known."""
        cursor = conn.execute(
            f"INSERT OR IGNORE INTO alerts ({ALERT_COLUMNS}) VALUES "  # noqa: S608  # a constant column list
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, NULL, NULL, NULL, NULL, ?, ?, ?, ?)",
            (
                alert.alert_id,
                alert.rule,
                alert.series,
                alert.episode_ms,
                alert.kind.value,
                alert.city,
                alert.site,
                alert.device,
                alert.sensor,
                alert.severity.value,
                alert.title,
                AlertStatus.OPEN,
                alert.fired_ms,
                alert.decided_ms,
                int(silenced),
                alert.value,
                json.dumps(dict(alert.body), sort_keys=True, separators=(",", ":")),
                alert.decided_ms,
            ),
        )
        if cursor.rowcount == 0:
            return False
        append_transition(
            conn,
            Transition(
                alert_id=alert.alert_id,
                transition=TransitionKind.FIRED,
                kind=alert.kind,
                city=alert.city,
                severity=alert.severity,
                t_ms=alert.decided_ms,
                site=alert.site,
                device=alert.device,
                silenced=silenced,
                body={**alert.body, "title": alert.title, "fired_ms": alert.fired_ms},
            ),
        )
        return True

    def mark_resolved(self, conn: sqlite3.Connection, aid: str, t_ms: int, decided_ms: int) -> bool:
        """The engine saw the clear condition hold: the alert stops firing (and is resolved unless closed)."""
        row = conn.execute("SELECT * FROM alerts WHERE alert_id = ?", (aid,)).fetchone()
        if row is None or not row["firing"]:
            return False
        status = row["status"] if row["status"] == AlertStatus.CLOSED else AlertStatus.RESOLVED
        conn.execute(
            "UPDATE alerts SET firing = 0, status = ?, resolved_ms = coalesce(resolved_ms, ?), updated_ms = ?, "
            "influx_synced = 0 WHERE alert_id = ?",
            (status, t_ms, decided_ms, aid),
        )
        self._append(conn, row, TransitionKind.RESOLVED, decided_ms, {"by": "engine", "resolved_ms": t_ms})
        return True

    @staticmethod
    def _append(
        conn: sqlite3.Connection, row: sqlite3.Row, what: TransitionKind, t_ms: int, extra: Mapping[str, Any]
    ) -> None:
        body = {**json.loads(row["body"]), "title": row["title"], **extra}
        append_transition(
            conn,
            Transition(
                alert_id=row["alert_id"],
                transition=what,
                kind=AlertKind(row["kind"]),
                city=row["city"],
                severity=Severity(row["severity"]),
                t_ms=t_ms,
                site=row["site"],
                device=row["device"],
                silenced=bool(row["silenced"]),
                body=body,
            ),
        )

    # -- people ------------------------------------------------------------------------------------------------
    def act(self, aid: str, what: TransitionKind, who: str, now_ms: int, text: str = "") -> dict[str, Any]:
        """A person's action on an alert (ack, assign, comment, resolve, close); KeyError if no such alert,
        ValueError if the action does not apply to its status."""
        with self.transaction() as conn:
            row = conn.execute("SELECT * FROM alerts WHERE alert_id = ?", (aid,)).fetchone()
            if row is None:
                raise KeyError(aid)
            status = row["status"]
            if status == AlertStatus.CLOSED and what is not TransitionKind.COMMENTED:
                raise ValueError(f"alert {aid} is closed")
            extra: dict[str, Any] = {"by": who}
            if what is TransitionKind.ACKNOWLEDGED:
                if status != AlertStatus.OPEN:
                    raise ValueError(f"alert {aid} is {status}; only an open alert can be acknowledged")
                conn.execute(
                    "UPDATE alerts SET status = ?, ack_by = ?, ack_ms = ?, updated_ms = ?, influx_synced = 0 "
                    "WHERE alert_id = ?",
                    (AlertStatus.ACKNOWLEDGED, who, now_ms, now_ms, aid),
                )
            elif what is TransitionKind.ASSIGNED:
                if not text:
                    raise ValueError("an assignment needs an assignee")
                conn.execute("UPDATE alerts SET assignee = ?, updated_ms = ? WHERE alert_id = ?", (text, now_ms, aid))
                extra["assignee"] = text
            elif what is TransitionKind.COMMENTED:
                if not text.strip():
                    raise ValueError("a comment needs text")
                conn.execute(
                    "INSERT INTO alert_comments (alert_id, author, t_ms, text) VALUES (?, ?, ?, ?)",
                    (aid, who, now_ms, text),
                )
                conn.execute("UPDATE alerts SET updated_ms = ? WHERE alert_id = ?", (now_ms, aid))
                extra["comment"] = text
            elif what in (TransitionKind.RESOLVED, TransitionKind.CLOSED):
                if what is TransitionKind.RESOLVED and status == AlertStatus.RESOLVED:
                    raise ValueError(f"alert {aid} is already resolved")
                new = AlertStatus.RESOLVED if what is TransitionKind.RESOLVED else AlertStatus.CLOSED
                conn.execute(
                    "UPDATE alerts SET status = ?, resolved_ms = coalesce(resolved_ms, ?), updated_ms = ?, "
                    "influx_synced = 0 WHERE alert_id = ?",
                    (new, now_ms, now_ms, aid),
                )
                if text:
                    conn.execute(
                        "INSERT INTO alert_comments (alert_id, author, t_ms, text) VALUES (?, ?, ?, ?)",
                        (aid, who, now_ms, text),
                    )
                    extra["comment"] = text
            else:
                raise ValueError(f"{what.value} is the engine's transition, not a person's")
            self._append(conn, row, what, now_ms, extra)
            updated = conn.execute("SELECT * FROM alerts WHERE alert_id = ?", (aid,)).fetchone()
        return row_to_alert(updated)

    # -- reading -----------------------------------------------------------------------------------------------
    def get(self, aid: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM alerts WHERE alert_id = ?", (aid,)).fetchone()
            if row is None:
                return None
            out = row_to_alert(row)
            out["comments"] = [
                dict(c)
                for c in self._conn.execute(
                    "SELECT author, t_ms, text FROM alert_comments WHERE alert_id = ? ORDER BY id", (aid,)
                )
            ]
        return out

    def query(
        self, where: str = "", params: tuple[Any, ...] = (), limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Alerts newest first; ``where`` is built by callers from fixed column names with ``?`` parameters."""
        clause = f" WHERE {where}" if where else ""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM alerts{clause} ORDER BY fired_ms DESC, alert_id LIMIT ? OFFSET ?",  # noqa: S608
                (*params, limit, offset),
            ).fetchall()
        return [row_to_alert(r) for r in rows]

    def all_alerts(self) -> list[dict[str, Any]]:
        return self.query(limit=-1)

    def unsynced(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM alerts WHERE influx_synced = 0").fetchall()
        return [row_to_alert(r) for r in rows]

    def mark_synced(self, rows: list[tuple[str, int]]) -> None:
        """Mark alerts written to InfluxDB, unless they changed since (``updated_ms`` as read)."""
        with self.transaction() as conn:
            conn.executemany("UPDATE alerts SET influx_synced = 1 WHERE alert_id = ? AND updated_ms = ?", rows)

    # -- silences ----------------------------------------------------------------------------------------------
    def add_silence(  # noqa: PLR0917  # the API passes them by keyword; the order reads as a sentence
        self,
        city: str,
        start_ms: int,
        end_ms: int,
        reason: str,
        created_by: str,
        now_ms: int,
        *,
        site: str = "",
        device: str = "",
        kind: str = "",
    ) -> Silence:
        if end_ms <= start_ms:
            raise ValueError(f"a silence must end after it starts (start {start_ms}, end {end_ms})")
        if not reason.strip():
            raise ValueError("a silence needs a reason")
        if kind and kind not in {k.value for k in AlertKind}:
            raise ValueError(f"unknown alert kind {kind!r}; one of {[k.value for k in AlertKind]} or empty")
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO silences (city, site, device, kind, start_ms, end_ms, reason, created_by, created_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (city, site, device, kind, start_ms, end_ms, reason, created_by, now_ms),
            )
            sid = int(cursor.lastrowid or 0)
        silence = self.silence(sid)
        assert silence is not None
        return silence

    def silence(self, sid: int) -> Silence | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM silences WHERE id = ?", (sid,)).fetchone()
        return None if row is None else Silence(**dict(row))

    def silences(self) -> list[Silence]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM silences ORDER BY id").fetchall()
        return [Silence(**dict(r)) for r in rows]

    def delete_silence(self, sid: int) -> bool:
        with self.transaction() as conn:
            return conn.execute("DELETE FROM silences WHERE id = ?", (sid,)).rowcount > 0

    def last_transition_id(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT max(id) FROM alert_transitions").fetchone()
        return int(row[0] or 0)

    def transitions_after(self, after_id: int, limit: int = 500) -> list[Transition]:
        from pilotwatch.alerting import read_transitions  # noqa: PLC0415  # keeps the import list of the contract short

        with self._lock:
            return read_transitions(self._conn, after_id, limit)
