"""The alert-transition contract between the alert engine (which decides) and the notifier (which delivers).

Contract:

- The alert engine keeps its state in one SQLite database (WAL). Whenever an alert changes in a way a person may
  need to hear about, the engine appends one :class:`Transition` to the ``alert_transitions`` table **in the same
  transaction** that records the change (the transactional outbox): a decision is never stored without its
  transition, nor a transition without its decision.
- ``alert_transitions.id`` only increases. The notifier reads transitions after the last id it has fanned out
  (:func:`read_transitions`), never changes or deletes them, and keeps its own delivery state beside them.
- A transition's ``body`` is a JSON object with what a message needs (value, limit and its citation, QC status,
  links); its keys are documented in docs/alerts.md. Stable strings throughout: they reach e-mails and webhooks.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pilotwatch.manifest import AlertKind


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class TransitionKind(enum.StrEnum):
    """What happened to an alert. The engine emits FIRED and RESOLVED; people cause the others."""

    FIRED = "fired"
    ACKNOWLEDGED = "acknowledged"
    ASSIGNED = "assigned"
    COMMENTED = "commented"
    RESOLVED = "resolved"
    CLOSED = "closed"


ALERT_STORE_FILE: Final = "alerts.sqlite"
"""The alert engine's SQLite database inside its state folder (``PILOTWATCH_ALERTS_STATE_DIR``); the API and
the notifier open the same file."""

TRANSITIONS_DDL: Final = """
CREATE TABLE IF NOT EXISTS alert_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    transition TEXT NOT NULL,
    kind TEXT NOT NULL,
    city TEXT NOT NULL,
    site TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT '',
    severity TEXT NOT NULL,
    t_ms INTEGER NOT NULL,
    silenced INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_transitions_alert ON alert_transitions (alert_id, id);
"""


@dataclass(frozen=True, slots=True)
class Transition:
    alert_id: str
    transition: TransitionKind
    kind: AlertKind
    city: str
    severity: Severity
    t_ms: int
    site: str = ""
    device: str = ""
    silenced: bool = False
    body: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None  # assigned by the outbox


def create_transitions_table(conn: sqlite3.Connection) -> None:
    conn.executescript(TRANSITIONS_DDL)


def append_transition(conn: sqlite3.Connection, t: Transition) -> int:
    """Append inside the caller's open transaction; return the transition's id."""
    cursor = conn.execute(
        "INSERT INTO alert_transitions (alert_id, transition, kind, city, site, device, severity, t_ms, silenced, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            t.alert_id,
            t.transition.value,
            t.kind.value,
            t.city,
            t.site,
            t.device,
            t.severity.value,
            t.t_ms,
            int(t.silenced),
            json.dumps(dict(t.body), sort_keys=True, separators=(",", ":")),
        ),
    )
    if cursor.lastrowid is None:
        raise RuntimeError("SQLite returned no id for an appended transition")
    return cursor.lastrowid


def read_transitions(conn: sqlite3.Connection, after_id: int, limit: int = 500) -> list[Transition]:
    """Transitions with ``id > after_id``, oldest first."""
    rows = conn.execute(
        "SELECT id, alert_id, transition, kind, city, site, device, severity, t_ms, silenced, body "
        "FROM alert_transitions WHERE id > ? ORDER BY id LIMIT ?",
        (after_id, limit),
    ).fetchall()
    return [
        Transition(
            id=int(r[0]),
            alert_id=str(r[1]),
            transition=TransitionKind(r[2]),
            kind=AlertKind(r[3]),
            city=str(r[4]),
            site=str(r[5]),
            device=str(r[6]),
            severity=Severity(r[7]),
            t_ms=int(r[8]),
            silenced=bool(r[9]),
            body=json.loads(r[10]),
        )
        for r in rows
    ]
